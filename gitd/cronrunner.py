"""The cron runner (issue #25): one thread that looks at every app's jobs
each `cron_tick` seconds and starts the due ones (gitd.verbs.cron runs them).

A job is due when its schedule fired since the moment its last due run was
counted (`since`, kept in the store); a job seen for the first time counts
from then, so a new job waits for its first slot. Slots missed while gitd
was down make one run when it is back (trigger `catch-up`), not one per
slot. A run still going when the job is due again makes a `skipped` run.
At most MAX_RUNNING runs go at once, at most MAX_RUNNING_PER_APP of one
app's (so one app's long jobs cannot stop every other app's); the others
wait their turn, counted as running (so they are not started twice).
"""

from __future__ import annotations

import threading

import structlog

from gitd.core.errors import GitdError
from gitd.verbs import cron as verbs

log = structlog.get_logger("gitd.cron")

MAX_RUNNING = 4
MAX_RUNNING_PER_APP = 2
INTERRUPTED = "cron: cut short: gitd stopped during the run\n"


class CronRunner:
    def __init__(self, gitd, clock: verbs.Clock | None = None, tick: float | None = None):
        self.gitd = gitd
        self.clock = clock or verbs.Clock(gitd.settings)
        self.tick = gitd.settings.cron_tick if tick is None else tick
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_RUNNING)
        self._app_slots: dict[str, threading.BoundedSemaphore] = {}
        self._app_slots_guard = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._jobs: dict[tuple[str, int], list] = {}  # (app, version) -> its jobs

    def start(self) -> None:
        self.clean_up()
        threading.Thread(target=self._loop, daemon=True, name="cron").start()

    def stop(self) -> None:
        """No new runs; runs going are left to end (or to the next start's clean_up)."""
        self._stop.set()

    def clean_up(self) -> None:
        """What a stop during a run left: its record ends failed, its task goes."""
        ended = self.gitd.store.end_unfinished_cron_runs(INTERRUPTED)
        try:
            scheduler = self.gitd.scheduler
            leftovers = scheduler.units(**{verbs.LABEL_ROLE: verbs.ROLE})
            scheduler.remove(leftovers)
        except Exception:  # noqa: BLE001 - an unreachable engine must not stop gitd
            log.exception("cron: removing the tasks of interrupted runs")
            leftovers = []
        if ended or leftovers:
            log.info("cron runs cut short by a stop", runs=ended, tasks=len(leftovers))

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.run_due(self.clock.now())
            except Exception:  # noqa: BLE001 - the runner must outlive one bad look
                log.exception("cron runner")

    def run_due(self, now: float) -> list[tuple[str, str, str]]:
        """Start the runs due at `now`; returns (app, job, trigger) of each."""
        started = []
        store = self.gitd.store
        for app, version, app_json in store.live_app_jsons():
            jobs = self._jobs_of(app, version, app_json)
            store.forget_cron_jobs(app, [job.id for job in jobs])
            for job in jobs:
                if self._stop.is_set():
                    return started
                trigger = self._due(app, job, now)
                if trigger:
                    started.append((app, job.id, trigger))
                    self._launch(app, version, job, trigger)
        return started

    def _jobs_of(self, app: str, version: int, app_json: str | None) -> list:
        """Parsed once per release (a release's app.json never changes)."""
        key = (app, version)
        if key not in self._jobs:
            if len(self._jobs) > 10_000:
                self._jobs.clear()
            self._jobs[key] = verbs.jobs_from(app, version, app_json)
        return self._jobs[key]

    def _due(self, app: str, job, now: float) -> str | None:
        """"schedule" or "catch-up" (slots were missed) when the job is due;
        the moment counted from moves to `now`."""
        store = self.gitd.store
        since = store.cron_since(app, job.id)
        if since is None:
            store.set_cron_since(app, job.id, now)
            return None
        slot = self.clock.next_after(job.schedule, since)
        if slot > now:
            return None
        store.set_cron_since(app, job.id, now)
        return "catch-up" if self.clock.next_after(job.schedule, slot) <= now else "schedule"

    def _launch(self, app: str, version: int, job, trigger: str) -> None:
        try:
            release = self.gitd.store.get_release(app, version)
        except GitdError:  # the app went meanwhile
            return
        run = verbs.begin(self.gitd, release, job, trigger)
        if run.status == "skipped":
            return

        def go():
            # the app's own share first: a run waiting for it holds no shared slot
            with self._app_slot(app), self._slots:
                verbs.carry_out(self.gitd, release, job, run)

        thread = threading.Thread(target=go, daemon=True, name=f"cron-{release.app}-{job.id}")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _app_slot(self, app: str) -> threading.BoundedSemaphore:
        with self._app_slots_guard:
            return self._app_slots.setdefault(app, threading.BoundedSemaphore(MAX_RUNNING_PER_APP))

    def wait(self, timeout: float) -> bool:
        """Tests: wait for the runs started so far; True when all ended."""
        for thread in list(self._threads):
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

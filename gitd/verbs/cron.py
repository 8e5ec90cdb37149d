"""cron (issue #25): the jobs app.json's `cron` declares, run on their
schedules by gitd.cronrunner and on demand by `cron:run`.

A job belongs to the release that declared it: the live release's app.json
says which jobs there are (a rollback brings back the old ones). Each run
is a one-off task of the live release, made as `run` makes one (its image,
config, services and mounts, the app's resource limits), run to its end by
the scheduler's run_task (a container here, a job on the swarm), killed at
its timeout. Runs are recorded with a bounded tail of their output; one
still running when the job is due again makes that run `skipped`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque

import structlog

from gitd.core import cron, notify, resources
from gitd.core.errors import GitdError, NotFound, UsageError
from gitd.core.store import CronRun, Release
from gitd.verbs import Session, iso_time
from hooks.specs import oneoff_spec
from hooks.specs import app_network, process_argv
from hooks.engine import LABEL_PROCESS, LABEL_ROLE

log = structlog.get_logger("gitd.cron")

OUTPUT_LINES = 200  # of a run's output kept
OUTPUT_LINE_CHARS = 1000
OUTPUT_BYTES = 16 * 1024
ROLE = "cron"  # a run's task's role label (hooks.engine.LABEL_ROLE)
LABEL_JOB = "gitd.cron-job"
LABEL_RUN = "gitd.cron-run"
TASK_POLL = 0.1  # seconds between looks for a run's task, made under the app's lock


def jobs_of(release: Release | None) -> list[cron.Job]:
    """The jobs of a release; none for a release whose app.json no longer
    parses (stored before gitd knew `cron`: its push was not checked)."""
    return [] if release is None else jobs_from(release.app, release.version, release.app_json)


def jobs_from(app: str, version: int, app_json: str | None) -> list[cron.Job]:
    try:
        return cron.jobs(app_json)
    except GitdError as exc:
        log.warning("cron jobs of a release ignored", app=app, release=version,
                    error=exc.message)
        return []


def find_job(release: Release | None, app: str, job_id: str) -> cron.Job:
    cron.check_job_id(job_id)
    for job in jobs_of(release):
        if job.id == job_id:
            return job
    raise NotFound(f"{app} has no cron job {job_id!r} (see: cron {app})")


# the verbs

def list_jobs(s: Session, app: str) -> list[dict]:
    """`cron APP`: each job of the live release with its last run and next one."""
    s.app(app)
    release = s.store.current_release(app)
    last = s.store.last_cron_runs(app)
    clock = Clock(s.settings)
    return [job_dict(s, app, job, last.get(job.id), clock) for job in jobs_of(release)]


def logs(s: Session, app: str, job_id: str) -> dict:
    """`cron:logs APP ID`: the job's last run (skipped ones aside), with its output."""
    s.app(app)
    job = find_job(s.store.current_release(app), app, job_id)
    last = s.store.last_cron_runs(app).get(job.id)
    if last is None:
        raise NotFound(f"cron job {job.id} of {app} has not run yet")
    return run_dict(last, with_output=True)


def run_now(s: Session, app: str, job_id: str, on_wait=None) -> dict:
    """`cron:run APP ID`: run the job now, its output to `s.progress` as it
    comes (that alone: a wait for a deploy in progress is told to `on_wait`);
    returns the recorded run. Refused while a run of it is going."""
    s.app(app)
    release = s.store.require_current_release(app)
    job = find_job(release, app, job_id)
    return run_dict(execute(s.gitd, release, job, "manual", s.progress, on_wait),
                    with_output=False)


def failing(store, app: str) -> list[str]:
    """The app's jobs whose last run failed (apps:info, gitd doctor)."""
    ids = {job.id for job in jobs_of(store.current_release(app))}
    return sorted(job for job, run in store.last_cron_runs(app).items()
                  if job in ids and run.status in ("failed", "timed out"))


# running one

def execute(gitd, release: Release, job: cron.Job, trigger: str, on_line=None,
            on_wait=None) -> CronRun:
    """Run `job` of `release` to its end and record it (or record it
    skipped, when a run of it is still going)."""
    run = begin(gitd, release, job, trigger)
    return run if run.status == "skipped" else carry_out(gitd, release, job, run, on_line,
                                                         on_wait)


def begin(gitd, release: Release, job: cron.Job, trigger: str) -> CronRun:
    """The run recorded as running (or skipped): a second one cannot start."""
    run = gitd.store.start_cron_run(release.app, job.id, trigger, release.version)
    if run.status == "skipped":
        log.info("cron run skipped", app=release.app, job=job.id, reason="still running")
    return run


def carry_out(gitd, release: Release, job: cron.Job, run: CronRun, on_line=None,
              on_wait=None) -> CronRun:
    """Run the begun `run` to its end, killed at the job's timeout, and record how it ended."""
    tail = Tail()

    def line(text: str) -> None:
        tail.add(text)
        if on_line is not None:
            on_line(text)

    timeout = job.timeout or gitd.settings.cron_timeout
    status, code = "failed", None
    try:
        code, timed_out = _run_task(gitd, release, job, run, line, timeout, on_wait)
        if timed_out:
            status = "timed out"
            line(f"cron: killed after {timeout:g}s (the job's \"timeout\", else cron_timeout)")
        else:
            status = "succeeded" if code == 0 else "failed"
    except Exception as exc:  # noqa: BLE001 - recorded as the run's failure, shown everywhere
        message = exc.message if isinstance(exc, GitdError) else f"{type(exc).__name__}: {exc}"
        line(f"cron: the run failed: {message}")
        if not isinstance(exc, GitdError):
            log.exception("cron run", app=release.app, job=job.id)
    finally:
        finished = gitd.store.finish_cron_run(run.id, status, code, tail.text())
    log.info("cron run", app=release.app, job=job.id, trigger=run.trigger, status=status,
             exit_code=code)
    if status != "succeeded":
        notify.emit(release.app, "cron.failed", job=job.id, status=status, exit_code=code,
                    trigger=run.trigger, log_tail=tail.text()[-2000:])
    return finished or run


def _run_task(gitd, release: Release, job: cron.Job, run: CronRun, line, timeout: float,
              on_wait) -> tuple[int | None, bool]:
    """The scheduler's run_task on a thread of its own. Its task is made
    under the app's lock, which is let go once the task exists: a deploy
    in progress goes first, and apps:destroy (which holds the lock) finds
    and removes every task made before it, and none is made after it."""
    app = release.app
    ended, result = threading.Event(), {}

    def task():
        try:
            result["value"] = gitd.scheduler.run_task(spec, line, timeout)
        except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
            result["error"] = exc
        finally:
            ended.set()

    with gitd.app_lock(app, notify=on_wait):
        gitd.store.get_app(app)  # not destroyed while the run waited
        spec = task_spec(gitd, release, job, run.id)
        gitd.scheduler.prepare(app_network(gitd.settings.instance, app), app)
        threading.Thread(target=task, daemon=True, name=f"cron-task-{app}-{job.id}").start()
        deadline = time.monotonic() + gitd.settings.deploy_timeout
        while not ended.wait(TASK_POLL) and time.monotonic() < deadline:
            if gitd.scheduler.units(app, **{LABEL_RUN: str(run.id)}):
                break
    ended.wait()
    if "error" in result:
        raise result["error"]
    return result["value"]


def task_spec(gitd, release: Release, job: cron.Job, run_id: int) -> dict:
    """`run`'s one-off spec for the job's command (with a shell, as a
    Procfile line), labelled as a cron run, without stdin."""
    if job.service and job.service not in release.components:
        raise UsageError(f"v{release.version} has no service {job.service!r}")
    buildpack = (release.components.get(job.service) or {}).get("buildpack") or release.buildpack
    argv = process_argv(job.command, buildpack)
    limits = resources.container_args(
        resources.effective(gitd.settings, gitd.store.get_app(release.app).settings))
    token = secrets.token_hex(3)
    spec = oneoff_spec(gitd.settings, release, argv, False, token, limits, job.service,
                       service_networks=gitd.pipeline.service_networks(release.app))
    spec.pop("stdin_open", None)
    spec["name"] = f"gitd-{gitd.settings.instance}.{release.app}.cron.{token}"
    spec["environment"]["DYNO"] = f"cron.{token}"
    spec["labels"].update({LABEL_PROCESS: "cron", LABEL_ROLE: ROLE, LABEL_JOB: job.id,
                           LABEL_RUN: str(run_id)})
    return spec


class Tail:
    """The last OUTPUT_LINES lines of a run, each cut to OUTPUT_LINE_CHARS,
    the whole to its last OUTPUT_BYTES."""

    def __init__(self):
        self.lines: deque[str] = deque(maxlen=OUTPUT_LINES)

    def add(self, text: str) -> None:
        self.lines.append(text[:OUTPUT_LINE_CHARS])

    def text(self) -> str:
        joined = "".join(f"{line}\n" for line in self.lines)
        return joined[-OUTPUT_BYTES:]


# time

class Clock:
    """Schedules run on cron time: the real time, unless the cron_minute
    setting makes a cron minute shorter (tests: 1 s); stored times are real."""

    def __init__(self, settings):
        self.scale = 60.0 / settings.cron_minute

    def now(self) -> float:
        return time.time()

    def next_after(self, schedule: cron.Schedule, real: float) -> float:
        return schedule.next_after(real * self.scale) / self.scale


# presenting

def job_dict(s: Session, app: str, job: cron.Job, last: CronRun | None, clock: Clock) -> dict:
    since = s.store.cron_since(app, job.id)
    next_at = clock.next_after(job.schedule, since if since is not None else clock.now())
    return {"id": job.id, "schedule": job.schedule.text, "command": job.command,
            "service": job.service or None,
            "timeout": job.timeout or s.settings.cron_timeout,
            "last_run": run_dict(last, with_output=False) if last else None,
            "next_run_at": iso_time(next_at)}


def run_dict(run: CronRun, with_output: bool) -> dict:
    duration = (round(run.finished_at - run.started_at, 3)
                if run.finished_at and run.status != "skipped" else None)
    data = {"id": run.id, "job": run.job, "trigger": run.trigger, "status": run.status,
            "exit_code": run.exit_code, "release": run.release,
            "started_at": iso_time(run.started_at), "finished_at": iso_time(run.finished_at),
            "duration": duration}
    if with_output:
        data["output"] = run.output
    return data

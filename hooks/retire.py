"""Old containers drain and stop in the background once a new release is live.

The push returns at `live`; the `drained -> retired` tail of the swap runs
here, one job per app. The app still owns it:

- the next deploy of the app takes it over (`take_over`): a job still
  draining is cancelled and its containers join the new deploy's job, which
  first waits for a job already stopping containers;
- `apps:destroy` and shutdown wait for it (`settle`, `wait`);
- a restart finds old containers by their labels and retires them again
  (gitd.service.Gitd.reconcile), so a SIGKILL leaves nothing running.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import structlog

log = structlog.get_logger("gitd.retire")


@dataclass
class Retirement:
    app: str
    containers: list
    drain: float
    stop: Callable[[list], None]  # stops and removes the containers
    after: "Retirement | None" = None  # a job taken over: wait for it to end first
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False

    def run(self) -> None:
        try:
            if self.after is not None:
                self.after.done.wait()
                self.after = None  # no chain of finished jobs kept alive
            deadline = time.monotonic() + max(0.0, self.drain)
            if self.cancelled.wait(max(0.0, deadline - time.monotonic())):
                return  # taken over: the next job retires these containers
            self.stopping = True
            self.stop(self.containers)
            log.info("retired", app=self.app, containers=len(self.containers))
        except Exception as exc:  # Docker went away: a restart retires them
            log.error("retirement failed", app=self.app, error=str(exc))
        finally:
            self.done.set()


class Retirements:
    """One background retirement per app."""

    def __init__(self):
        self._jobs: dict[str, Retirement] = {}
        self._guard = threading.Lock()

    def start(self, app: str, containers: list, drain: float,
              stop: Callable[[list], None]) -> Retirement:
        """Retire `containers` after `drain` seconds, taking over the app's
        previous job: `containers` must include the ones it had not stopped."""
        previous = self.take_over(app)
        job = Retirement(app, list(containers), drain, stop, after=previous)
        with self._guard:
            self._jobs[app] = job
        threading.Thread(target=job.run, name=f"retire-{app}", daemon=True).start()
        return job

    def take_over(self, app: str) -> Retirement | None:
        """Cancel the app's job if it is still draining; return it (or None)
        so whoever takes over can wait for a stop it already began."""
        with self._guard:
            job = self._jobs.get(app)
        if job is None or job.done.is_set():
            return None
        job.cancelled.set()
        return job

    def cancel(self, app: str) -> None:
        """Stop draining now and wait for a stop already begun (apps:destroy
        removes the containers itself)."""
        job = self.take_over(app)
        if job is not None:
            job.done.wait()

    def pending(self) -> set[str]:
        with self._guard:
            return {app for app, job in self._jobs.items() if not job.done.is_set()}

    def wait(self, timeout: float) -> bool:
        """Wait for every job (shutdown). True when all ended in time."""
        deadline = time.monotonic() + timeout
        with self._guard:
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

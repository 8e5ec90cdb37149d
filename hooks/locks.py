"""One deploy at a time per app; apps deploy side by side."""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import contextmanager

from gitd.core.errors import Conflict


class AppLocks:
    def __init__(self):
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._busy: set[str] = set()
        self.idle = threading.Condition(self._guard)

    def _lock_for(self, app: str) -> threading.Lock:
        with self._guard:
            return self._locks[app]

    @contextmanager
    def hold(self, app: str, wait: float, on_wait=None):
        lock = self._lock_for(app)
        if not lock.acquire(blocking=False):
            if on_wait:
                on_wait()
            if not lock.acquire(timeout=wait):
                raise Conflict(f"another deploy of {app} is still running; try again later")
        with self._guard:
            self._busy.add(app)
        try:
            yield
        finally:
            with self._guard:
                self._busy.discard(app)
                self.idle.notify_all()
            lock.release()

    def busy(self) -> set[str]:
        with self._guard:
            return set(self._busy)

    def wait_idle(self, timeout: float) -> bool:
        with self._guard:
            return self.idle.wait_for(lambda: not self._busy, timeout=timeout)

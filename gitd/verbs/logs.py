"""logs: what an app's live containers print, each line prefixed with the
container it came from (`web.1 | ...`; on the swarm, the task's slot). The
scheduler reads the logs (hooks.scheduler, hooks.swarm)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

from gitd.core import validate
from gitd.core.errors import GitdError, NotFound, UsageError
from gitd.verbs import Session
from gitd.verbs.ps import live_services
from hooks import components
from hooks.engine import LABEL_COMPONENT, LABEL_PROCESS, LABEL_ROLE

MAX_LINES = 10_000
POLL = 0.5  # seconds between idle ticks (the consumer checks its client is still there)
ACCESS_CHECK = 5.0  # seconds between checks that the caller may still read the app


def logs(s: Session, app: str, lines: int = 100, follow: bool = False,
         process: str | None = None, service: str | None = None) -> Iterator[str | None]:
    """The last `lines` lines of the app's live containers (of one process
    type, or one app.json service); with `follow`, then every new line until
    the consumer closes the iterator. A follow yields None every POLL seconds
    it has nothing to say, so the consumer can check its client is still
    there; close() it to stop (it ends the follower's streams and threads)."""
    if isinstance(lines, bool) or not isinstance(lines, int) or not 0 <= lines <= MAX_LINES:
        raise UsageError(f"-n must be from 0 to {MAX_LINES}")
    if process:
        validate.process_type(process)
    if service is not None and not components.COMPONENT_NAME.fullmatch(service):
        raise UsageError(f"invalid service name {service[:40]!r}")
    s.app(app)
    wanted = _wanted(process, service)
    units = [u for u in live_services(s, app) if wanted(u.labels)]
    if not units:
        what = " ".join(w for w in (service, process) if w)
        what = f"{what} containers" if what else "containers"
        raise NotFound(f"{app} has no {what} (deploy it, or check `ps:scale {app}`)")
    if follow:
        return _follow(s, app, units, lines, wanted)
    return (line for line in s.gitd.scheduler.log_lines(units, lines))


def recent(s: Session, app: str, lines: int = 100, process: str | None = None,
           service: str | None = None) -> dict:
    """The last `lines` lines of the app's live containers, as data."""
    return {"app": app, "lines": list(logs(s, app, lines, False, process, service))}


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=POLL)
            return
        except queue.Full:
            continue


def _follow(s: Session, app: str, units: list, tail: int, wanted) -> Iterator[str | None]:
    """Stream until closed (on the swarm: until the followed services' logs
    end), or the caller may no longer read the app (it was destroyed, or the
    grant revoked): then close the follower, which ends its streams and
    threads."""
    out: queue.Queue = queue.Queue(maxsize=1000)
    stop = threading.Event()
    follower = s.gitd.scheduler.follow_logs(app, units, tail, wanted,
                                            lambda line: _put(out, line, stop))
    checked = time.monotonic()
    try:
        while True:
            try:
                yield out.get(timeout=POLL)
            except queue.Empty:
                if follower.done:
                    return
                yield None
            if time.monotonic() - checked > ACCESS_CHECK:
                checked = time.monotonic()
                still_readable(s, app)
    finally:
        stop.set()
        follower.close()


def still_readable(s: Session, app: str) -> None:
    """As the store says now: the session's key may have been removed, or
    have stopped being an admin, since the stream began."""
    key = s.store.key_by_fingerprint(s.key.fingerprint)
    if key is None:
        raise GitdError(f"stopped following {app}: this key was removed")
    s.key = key
    try:
        s.app(app)
    except GitdError as exc:
        raise GitdError(f"stopped following {app}: {exc}") from None


def _wanted(process: str | None, service: str | None):
    """Which of the app's containers `--type`/`--service` pick, by their labels."""
    return lambda labels: (labels.get(LABEL_ROLE) == "service"
                           and process in (None, labels.get(LABEL_PROCESS))
                           and service in (None, labels.get(LABEL_COMPONENT)))

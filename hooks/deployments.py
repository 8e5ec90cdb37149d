"""Deployments (issue #23): every deploy, whatever started it, is a row with
a status, a trigger and its log.

The pipeline's entry points record one around their work (`record`): the
progress lines go on to the caller as before and into the deployment's
log. While a deployment runs its log lives in memory, where followers
read it live; the row gets it at every status change, at the end, and at
most FLUSH_SECONDS after a line (so a crash loses at most that much).
The log keeps its last `max_bytes` (max_log_bytes, as a release's log):
past that the oldest lines go and a first line says how many bytes went.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import structlog

from gitd.core import notify
from gitd.core.errors import Conflict, GitdError
from gitd.core.store import DEPLOYMENT_ENDS, Deployment, Store

STATUSES = ("pending", "building", "deploying", "succeeded", "failed", "cancelled")
TRIGGERS = ("push", "webhook", "api", "rollback", "config", "scale", "restart", "image")
FLUSH_SECONDS = 1.0
KEEP_ROWS = 200  # deployment rows kept per app
TRIMMED_LOG_CHARS = 4000  # the tail kept of older deployments' logs
NOTIFY_TAIL_LINES = 20  # of a failed deployment's log, in its deploy.failed event
NOTIFY_FACTS = ("by", "ref", "commit", "image", "release")  # carried in its events
FOLLOW_TICK = 1.0  # a follower is handed "" this often while nothing comes

# the release kinds of Pipeline.release and the redeploy reasons, as triggers
_KIND_TRIGGERS = {"rollback": "rollback", "config": "config", "storage": "config",
                  "image": "image"}
_REASON_TRIGGERS = (("Scaling", "scale"), ("Restarting", "restart"), ("Starting", "restart"))


def trigger_of_kind(kind: str) -> str:
    return _KIND_TRIGGERS.get(kind, "config")


def trigger_of_reason(reason: str) -> str:
    """A redeploy's trigger from its reason: scaling, a restart or start,
    else a change of settings (resources, routes, HTTPS)."""
    for prefix, trigger in _REASON_TRIGGERS:
        if reason.startswith(prefix):
            return trigger
    return "config"


class LogTail:
    """The last `max_bytes` of a log, and how many bytes were ever written
    (`total`: a follower's offset counts in those)."""

    def __init__(self, max_bytes: int, text: str = "", total: int = 0):
        self.max_bytes = max(1, max_bytes)
        self._lines: deque[str] = deque(text.splitlines(keepends=True))
        self._bytes = len(text)
        self.total = max(total, len(text))

    def append(self, line: str) -> None:
        line = line.rstrip("\n")[-self.max_bytes:] + "\n"
        self._lines.append(line)
        self._bytes += len(line)
        self.total += len(line)
        while self._bytes > self.max_bytes and len(self._lines) > 1:
            self._bytes -= len(self._lines.popleft())

    @property
    def start(self) -> int:
        """The offset of the first byte kept."""
        return self.total - self._bytes

    @property
    def dropped(self) -> int:
        return self.total - self._bytes

    @property
    def text(self) -> str:
        head = ""
        if self.dropped:
            head = (f"[{self.dropped} bytes of earlier output dropped: the log keeps its "
                    f"last {self.max_bytes} (max_log_bytes)]\n")
        return head + "".join(self._lines)

    def since(self, offset: int) -> tuple[str, int]:
        """What was written after `offset` (of `total`) and the new offset;
        what went past the cap meanwhile is said, not returned."""
        if offset >= self.total:
            return "", self.total
        kept, start = "".join(self._lines), self.start
        if offset < start:
            return f"[{start - offset} bytes dropped]\n" + kept, self.total
        return kept[offset - start:], self.total


class Recording:
    """A running deployment: its log in memory, its status moves recorded."""

    def __init__(self, store: Store, row: Deployment, max_bytes: int,
                 downstream: Callable[[str], None] | None = None):
        self.store = store
        self.id = row.id
        self.app = row.app
        self.status = row.status
        self.trigger = row.trigger
        self.facts = {k: getattr(row, k) for k in NOTIFY_FACTS if getattr(row, k) is not None}
        self.downstream = downstream
        self._tail = LogTail(max_bytes, row.log, row.log_bytes)
        self._changed = threading.Condition()
        self._flushed_at = time.monotonic()
        self.done = False

    def __call__(self, line: str) -> None:
        """The pipeline's sink: into the log, then on to the caller."""
        self.note(line)
        if self.downstream is not None:
            try:
                self.downstream(line)
            except Exception:  # the caller hung up; the deploy goes on
                self.downstream = None

    def note(self, line: str) -> None:
        """A line for the log only."""
        with self._changed:
            self._tail.append(line)
            self._changed.notify_all()
            due = time.monotonic() - self._flushed_at >= FLUSH_SECONDS
        if due and not self.done:
            self._write()

    def move(self, status: str, **fields) -> None:
        """A new status (and what became known: release, image, commit)."""
        if status not in STATUSES:
            raise ValueError(status)
        with self._changed:
            self.status = status
            self.done = status in DEPLOYMENT_ENDS
            self._changed.notify_all()
        self._write(status=status, **fields)

    def set(self, **fields) -> None:
        self._write(**fields)

    def _write(self, **fields) -> None:
        with self._changed:
            self.facts.update({k: fields[k] for k in NOTIFY_FACTS if fields.get(k) is not None})
            log, total = self._tail.text, self._tail.total
            self._flushed_at = time.monotonic()
        try:
            self.store.update_deployment(self.id, log=log, log_bytes=total, **fields)
        except Exception as exc:  # noqa: BLE001 - the record must not break the deploy
            structlog.get_logger("gitd.deployments").warning(
                "cannot record the deployment", app=self.app, deployment=self.id, error=str(exc))

    @property
    def text(self) -> str:
        with self._changed:
            return self._tail.text

    def tell(self, event: str, **data) -> None:
        """Notify the app's subscribers (gitd.core.notify) of this deployment."""
        notify.emit(self.app, event, deployment=self.id, trigger=self.trigger,
                    **self.facts, **data)

    def tail(self, lines: int) -> str:
        return "\n".join(self.text.splitlines()[-lines:])

    def start_offset(self) -> int:
        with self._changed:
            return self._tail.start

    def read(self, offset: int, timeout: float) -> tuple[str, int, bool]:
        """(new text, new offset, ended): waits up to `timeout` for news."""
        with self._changed:
            self._changed.wait_for(lambda: self.done or self._tail.total > offset, timeout)
            text, offset = self._tail.since(offset)
            return text, offset, self.done


class Deployments:
    """The deployments running in this gitd, and their rows."""

    def __init__(self, store: Store, max_bytes: int):
        self.store = store
        self.max_bytes = max_bytes
        self._running: dict[int, Recording] = {}
        self._guard = threading.Lock()

    def create(self, app: str, trigger: str, max_waiting: int | None = None,
               **fields) -> Deployment:
        """A pending row, followable at once (a background deploy takes it up).
        With `max_waiting`: refused (Conflict) when that many of the app's
        deployments are pending already; counted and made in one step, so
        requests at once cannot all pass the count."""
        if trigger not in TRIGGERS:
            raise ValueError(trigger)
        with self._guard:
            if max_waiting is not None and self._waiting(app) >= max_waiting:
                raise Conflict(f"{max_waiting} deployments of {app} are already waiting; "
                               "try again once they ran")
            row = self.store.new_deployment(app, trigger, **fields)
            self._running[row.id] = Recording(self.store, row, self.max_bytes)
        return row

    @contextlib.contextmanager
    def record(self, app: str, trigger: str, sink, status: str, deployment: int | None = None,
               **fields) -> Iterator[Recording]:
        """Around one deploy: a row (new, or the pending `deployment` made by
        `create`) moved to `status`; succeeded when the block ends, failed
        (with the error in its log) when it raises."""
        run = self._take(app, trigger, deployment, fields)
        run.downstream = sink
        try:
            run.move(status, **fields)
            run.tell("deploy.started")
            yield run
        except BaseException as exc:
            self._fail(run, exc)
            raise
        else:
            run.move("succeeded")
            run.tell("deploy.succeeded")
            if run.trigger == "rollback":
                run.tell("rollback")
        finally:
            self._end(run)

    def cancel(self, deployment: int, why: str) -> None:
        """A pending deployment that will not run."""
        run = self._take(None, None, deployment, {})
        run.note(f" !     {why}")
        run.move("cancelled", error=why)
        self._end(run)

    def fail(self, deployment: int, exc: BaseException) -> None:
        """A pending deployment that could not start (its app busy)."""
        run = self._take(None, None, deployment, {})
        self._fail(run, exc)
        self._end(run)

    def _take(self, app, trigger, deployment, fields) -> Recording:
        if deployment is None:
            row = self.create(app, trigger, **{k: v for k, v in fields.items()
                                               if k in ("by", "ref", "commit", "image")})
            deployment = row.id
        with self._guard:
            run = self._running.get(deployment)
        if run is None:
            raise GitdError(f"deployment {deployment} is not pending")
        return run

    def _fail(self, run: Recording, exc: BaseException) -> None:
        error = str(exc) if isinstance(exc, GitdError) else \
            f"internal error ({type(exc).__name__}); see gitd's log"
        if f" !     {error}" not in run.text:  # the pipeline may have said it already
            run.note(f" !     {error}")
        run.move("failed", error=error)
        run.tell("deploy.failed", error=error, log_tail=notify.clip(run.tail(NOTIFY_TAIL_LINES)))

    def _end(self, run: Recording) -> None:
        with self._guard:
            self._running.pop(run.id, None)
        try:
            self.store.trim_deployments(run.app, KEEP_ROWS, TRIMMED_LOG_CHARS)
        except GitdError:
            pass  # the app went meanwhile

    def waiting(self, app: str) -> int:
        """How many of the app's deployments are pending (queued)."""
        with self._guard:
            return self._waiting(app)

    def _waiting(self, app: str) -> int:
        return sum(1 for run in self._running.values() if run.app == app and run.status == "pending")

    def running(self, deployment: int) -> Recording | None:
        with self._guard:
            return self._running.get(deployment)

    def follow(self, deployment: int, offset: int | None = None,
               tick: float = FOLLOW_TICK) -> Iterator[str]:
        """The log so far, then its lines as they come until the deployment
        ends; "" every `tick` seconds while nothing comes (a front-end
        keeps its connection alive, or notices its client left)."""
        run = self.running(deployment)
        if run is None:
            row = self.store.get_deployment(deployment)
            yield row.log
            return
        offset = run.start_offset() if offset is None else offset
        while True:
            text, offset, done = run.read(offset, tick)
            yield text
            if done:  # every line comes before the end
                return

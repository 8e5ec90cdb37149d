"""logs: what an app's live containers print, each line prefixed with the
container it came from (`web.1 | ...`; on the swarm, the task's slot). The
scheduler reads the logs (hooks.scheduler, hooks.swarm)."""

from __future__ import annotations

import queue
import threading
import time

from gitd.core import validate
from gitd.commands import app_parser, command
from gitd.commands.ps import live_services
from gitd.core.errors import GitdError, UsageError
from hooks import components
from hooks.engine import LABEL_COMPONENT, LABEL_PROCESS, LABEL_ROLE

MAX_LINES = 10_000
POLL = 0.5  # seconds between checks that the client is still there
ACCESS_CHECK = 5.0  # seconds between checks that the caller may still read the app


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=POLL)
            return
        except queue.Full:
            continue


def follow(ctx, app: str, units: list, tail: int, wanted) -> None:
    """Stream until the client hangs up (on the swarm: until the followed
    services' logs end), or the caller may no longer read the app (it was
    destroyed, or the grant revoked): then close the follower, which ends
    its streams and threads."""
    out: queue.Queue = queue.Queue(maxsize=1000)
    stop = threading.Event()
    follower = ctx.gitd.scheduler.follow_logs(app, units, tail, wanted,
                                              lambda line: _put(out, line, stop))
    checked = time.monotonic()
    try:
        while not ctx.bridge.closed():
            try:
                ctx.out(out.get(timeout=POLL))
            except queue.Empty:
                if follower.done:
                    return
            if time.monotonic() - checked > ACCESS_CHECK:
                checked = time.monotonic()
                _still_readable(ctx, app)
    finally:
        stop.set()
        follower.close()


def _still_readable(ctx, app: str) -> None:
    """As the store says now: the session's key may have been removed, or
    have stopped being an admin, since the stream began."""
    key = ctx.store.key_by_fingerprint(ctx.key.fingerprint)
    if key is None:
        raise GitdError(f"stopped following {app}: this key was removed")
    ctx.key = key
    try:
        ctx.app(app)
    except GitdError as exc:
        raise GitdError(f"stopped following {app}: {exc}") from None


def _wanted(process: str | None, service: str | None):
    """Which of the app's containers `--type`/`--service` pick, by their labels."""
    return lambda labels: (labels.get(LABEL_ROLE) == "service"
                           and process in (None, labels.get(LABEL_PROCESS))
                           and service in (None, labels.get(LABEL_COMPONENT)))


@command("logs", "logs APP [-n LINES] [-f] [--type TYPE] [--service SERVICE]",
         "Show (or follow) the output of an app's containers", admin=False, help=f"""
Lines come from the containers of the live release, prefixed with the one
that printed them (`web.1 | ...`). -n: how many past lines (default 100, at
most {MAX_LINES}); -f: keep streaming new lines until you hang up (Ctrl-C),
across deploys, restarts and crashes, with a line when a process starts or
exits: `-----> web.1 (v3) started`, `-----> worker.1 (v3) started (restart 2)`,
`-----> web.1 (v2) exited with status 0 (replaced by v3)`;
--type: only one process type (web, worker, ...); --service: only one of the
services app.json declares (frontend, backend, ...).""")
def logs(ctx, argv):
    p = app_parser("logs")
    p.add_argument("-n", "--num", type=int, default=100, dest="lines")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--type", dest="process")
    p.add_argument("--service")
    args = p.parse_args(argv)
    if not 0 <= args.lines <= MAX_LINES:
        raise UsageError(f"-n must be from 0 to {MAX_LINES}")
    if args.process:
        validate.process_type(args.process)
    if args.service is not None and not components.COMPONENT_NAME.fullmatch(args.service):
        raise UsageError(f"invalid service name {args.service[:40]!r}")
    ctx.app(args.app)
    wanted = _wanted(args.process, args.service)
    units = [u for u in live_services(ctx, args.app) if wanted(u.labels)]
    if not units:
        what = " ".join(w for w in (args.service, args.process) if w)
        what = f"{what} containers" if what else "containers"
        raise GitdError(f"{args.app} has no {what} (deploy it, or check `ps:scale {args.app}`)")
    if args.follow:
        follow(ctx, args.app, units, args.lines, wanted)
        return
    for line in ctx.gitd.scheduler.log_lines(units, args.lines):
        ctx.out(line)

"""logs: what an app's live containers print, each line prefixed with the
container it came from (`web.1 | ...`; on the swarm, the task's slot). The
scheduler reads the logs (hooks.scheduler, hooks.swarm)."""

from __future__ import annotations

import queue
import threading

from gitd import validate
from gitd.commands import app_parser, command
from gitd.commands.ps import live_services
from gitd.errors import GitdError, UsageError
from hooks import components
from hooks.engine import LABEL_COMPONENT, LABEL_PROCESS

MAX_LINES = 10_000
POLL = 0.5  # seconds between checks that the client is still there


def _pump(stream, out: queue.Queue, stop: threading.Event) -> None:
    """One log stream (hooks.scheduler: prefixed lines), into `out`; None at its end."""
    try:
        for line in stream:
            _put(out, line, stop)
    finally:
        _put(out, None, stop)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=POLL)
            return
        except queue.Full:
            continue


def follow(ctx, units: list, tail: int) -> None:
    """Stream until every unit's log ends or the client hangs up; then close
    the streams, which ends their threads."""
    out: queue.Queue = queue.Queue(maxsize=1000)
    stop = threading.Event()
    streams = ctx.gitd.scheduler.log_streams(units, tail)
    for stream in streams:
        threading.Thread(target=_pump, args=(stream, out, stop),
                         daemon=True, name=f"logs-{stream.name}").start()
    live = len(streams)
    try:
        while live:
            try:
                item = out.get(timeout=POLL)
            except queue.Empty:
                if ctx.bridge.closed():
                    return
                continue
            if item is None:
                live -= 1
            else:
                ctx.out(item)
    finally:
        stop.set()
        for stream in streams:
            stream.close()


@command("logs", "logs APP [-n LINES] [-f] [--type TYPE] [--service SERVICE]",
         "Show (or follow) the output of an app's containers", admin=False, help=f"""
Lines come from the containers of the live release, prefixed with the one
that printed them (`web.1 | ...`). -n: how many past lines (default 100, at
most {MAX_LINES}); -f: keep streaming new lines until you hang up (Ctrl-C);
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
    units = [u for u in live_services(ctx, args.app)
             if args.process in (None, u.labels.get(LABEL_PROCESS))
             and args.service in (None, u.labels.get(LABEL_COMPONENT))]
    if not units:
        what = " ".join(w for w in (args.service, args.process) if w)
        what = f"{what} containers" if what else "containers"
        raise GitdError(f"{args.app} has no {what} (deploy it, or check `ps:scale {args.app}`)")
    if args.follow:
        follow(ctx, units, args.lines)
        return
    for line in ctx.gitd.scheduler.log_lines(units, args.lines):
        ctx.out(line)

"""logs: what an app's live containers print, each line prefixed with the
container it came from (`web.1 | ...`)."""

from __future__ import annotations

import queue
import threading

from gitd import validate
from gitd.commands import app_parser, command
from gitd.commands.ps import dyno, live_services
from gitd.errors import GitdError, UsageError
from hooks import components
from hooks.engine import LABEL_COMPONENT, LABEL_PROCESS

MAX_LINES = 10_000
POLL = 0.5  # seconds between checks that the client is still there


def fetch_lines(container, tail: int) -> list[tuple[str, str]]:
    """(sortable timestamp, text) for the last `tail` lines of a container."""
    raw = container.logs(stdout=True, stderr=True, tail=tail, timestamps=True)
    lines = []
    for line in raw.decode("utf-8", "replace").splitlines():
        stamp, _, text = line.partition(" ")
        lines.append((sortable(stamp), text))
    return lines


def sortable(stamp: str) -> str:
    """Docker's RFC 3339 stamps drop trailing zeros: pad the fraction."""
    head, dot, frac = stamp.rstrip("Z").partition(".")
    return f"{head}.{frac.ljust(9, '0')}" if dot else f"{head}.000000000"


def merged(containers: list, tail: int) -> list[str]:
    """The last `tail` lines of all containers, in time order, prefixed."""
    lines = []
    for container in containers:
        name = dyno(container)
        lines += [(stamp, f"{name} | {text}") for stamp, text in fetch_lines(container, tail)]
    lines.sort(key=lambda item: item[0])
    return [text for _, text in lines[-tail:]] if tail else []


def _pump(name: str, stream, out: queue.Queue, stop: threading.Event) -> None:
    """One container's log stream, line by line, into `out`; None at its end."""
    pending = b""
    try:
        for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _put(out, f"{name} | {line.decode('utf-8', 'replace').rstrip(chr(13))}", stop)
        if pending:
            _put(out, f"{name} | {pending.decode('utf-8', 'replace')}", stop)
    finally:
        _put(out, None, stop)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=POLL)
            return
        except queue.Full:
            continue


def follow(ctx, containers: list, tail: int) -> None:
    """Stream until every container's log ends or the client hangs up."""
    out: queue.Queue = queue.Queue(maxsize=1000)
    stop = threading.Event()
    streams = [c.logs(stream=True, follow=True, tail=tail, stdout=True, stderr=True,
                      timestamps=False) for c in containers]
    for container, stream in zip(containers, streams):
        threading.Thread(target=_pump, args=(dyno(container), stream, out, stop),
                         daemon=True, name=f"logs-{container.name}").start()
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
    containers = [c for c in live_services(ctx, args.app)
                  if args.process in (None, c.labels.get(LABEL_PROCESS))
                  and args.service in (None, c.labels.get(LABEL_COMPONENT))]
    containers.sort(key=dyno)
    if not containers:
        what = " ".join(w for w in (args.service, args.process) if w)
        what = f"{what} containers" if what else "containers"
        raise GitdError(f"{args.app} has no {what} (deploy it, or check `ps:scale {args.app}`)")
    if args.follow:
        follow(ctx, containers, args.lines)
        return
    for line in merged(containers, args.lines):
        ctx.out(line)

"""logs: the SSH face of gitd.verbs.logs."""

from __future__ import annotations

from contextlib import closing

from gitd.commands.base import app_parser, command
from gitd.verbs import logs as verbs
from gitd.verbs.logs import MAX_LINES


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
    stream = verbs.logs(ctx, args.app, args.lines, args.follow, args.process, args.service)
    with closing(stream):
        for line in stream:
            if ctx.bridge.closed():
                return
            if line is not None:
                ctx.out(line)

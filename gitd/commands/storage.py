"""storage:mount, storage:list, storage:unmount: data that outlives a deploy.

A mount is a named Docker volume of the app's own (`NAME:/path`, created
when missing) or, for admins only, a host directory (`/srv/x:/path`). It is
mounted into every process type, the release task and one-off `run`s.
Changing the mounts makes a new release that records them, so a rollback
runs with the mounts its release had.

On a swarm a named volume lives on one node: the app's tasks that mount one
run on that node (recorded on the app at its first volume). A host
directory must exist on every node that may run the app.
"""

from __future__ import annotations

from gitd.commands.base import app_parser, command, print_rows
from gitd.verbs import storage as verbs


@command("storage:mount", "storage:mount APP NAME:/path | /host/dir:/path",
         "Mount a volume (or, admins only, a host directory) into an app", admin=False,
         help="""
NAME is a volume of the app's own, created when missing; its data outlives
deploys, restarts and rollbacks. A host directory must exist and may not be
gitd's data dir, Docker's socket or a system directory. Makes a new release.
    ssh paas storage:mount APP data:/data""")
def mount(ctx, argv):
    p = app_parser("storage:mount")
    p.add_argument("mount", metavar="SOURCE:/path")
    args = p.parse_args(argv)
    verbs.mount(ctx, args.app, args.mount)
    ctx.out(f"-----> {args.app}: {args.mount} mounted")


@command("storage:unmount", "storage:unmount APP /path", "Unmount a path (the volume is kept)",
         admin=False)
def unmount(ctx, argv):
    p = app_parser("storage:unmount")
    p.add_argument("target", metavar="/path")
    args = p.parse_args(argv)
    done = verbs.unmount(ctx, args.app, args.target)
    ctx.out(f"-----> {args.app}: {done['target']} unmounted (its volume keeps the data)")


@command("storage:list", "storage:list APP [--json]", "List an app's mounts", admin=False)
def list_mounts(ctx, argv):
    args = app_parser("storage:list", json_flag=True).parse_args(argv)
    rows = verbs.list_mounts(ctx, args.app)
    node = rows[0].get("node") if rows else None
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out(f"{args.app} mounts nothing (storage:mount {args.app} NAME:/data)")
        return
    print_rows(ctx, [["SOURCE", "TYPE", "PATH"] + (["NODE"] if node else [])]
               + [[r["source"], r["type"], r["target"]] + ([r["node"]] if node else [])
                  for r in rows])

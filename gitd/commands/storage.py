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

from gitd.core import validate
from gitd.commands import app_parser, command, parse_app, print_rows
from gitd.core.errors import GitdError, NotFound, PermissionDenied
from hooks.engine import LABEL_APP


def volume_docker_name(instance: str, app: str, name: str) -> str:
    """Scoped to the app: another app (or its deployer) cannot name it."""
    return f"gitd-{instance}.{app}.{name}"


def display_source(instance: str, app: str, mount: dict) -> str:
    prefix = volume_docker_name(instance, app, "")
    if mount["type"] == "volume" and mount["source"].startswith(prefix):
        return mount["source"][len(prefix):]
    return mount["source"]


def resolve(ctx, app: str, text: str) -> dict:
    source, target = validate.mount_spec(text)
    if source.startswith("/"):
        if not ctx.key.is_admin:
            raise PermissionDenied("only admins may mount host directories; "
                                   "use a named volume (NAME:/path)")
        return {"type": "bind", "source": validate.host_path(source, ctx.settings.data_dir),
                "target": target}
    validate.volume_name(source)
    return {"type": "volume", "source": volume_docker_name(ctx.settings.instance, app, source),
            "target": target}


def make_volume(ctx, app: str, volume: str) -> None:
    """Create the volume on this node. On a swarm a volume lives on one node:
    the app's tasks are pinned to the node holding its volumes (recorded on
    the app the first time; there the swarm makes a volume new to it)."""
    if ctx.settings.scheduler != "swarm":
        ctx.gitd.engine.ensure_volume(volume, {LABEL_APP: app})
        return
    here = ctx.gitd.scheduler.node_name
    node = ctx.store.app_node(app)
    if node is None:
        ctx.store.set_app_node(app, here)
        ctx.out(f"-----> {app} runs on node {here} from now on: its volumes live there")
    if (node or here) == here:
        ctx.gitd.engine.ensure_volume(volume, {LABEL_APP: app})


def _apply(ctx, app: str, change, description: str) -> list[dict]:
    """Store the new mounts and release them; on failure put the old back."""
    with ctx.lock(app):
        old = ctx.store.get_mounts(app)
        new = change(list(old))
        ctx.store.set_mounts(app, new)
        current = ctx.store.current_release(app)
        if current is None:
            ctx.out(f"-----> {description} on {app}: stored; the first push uses it")
            return new
        try:
            ctx.gitd.pipeline.release(app, current, current.config, kind="storage",
                                      description=description, by=ctx.key.name,
                                      sink=ctx.progress_sink(), mounts=new)
        except GitdError as exc:
            ctx.store.set_mounts(app, old)
            raise GitdError(f"{exc}\nmounts of {app} left as they were; "
                            f"v{current.version} keeps serving") from exc
    return new


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
    args = parse_app(ctx, p, argv)
    wanted = resolve(ctx, args.app, args.mount)

    def change(mounts: list[dict]) -> list[dict]:
        if any(m["target"] == wanted["target"] for m in mounts):
            raise GitdError(f"{args.app} already mounts something at {wanted['target']}: "
                            f"storage:unmount {args.app} {wanted['target']} first")
        if wanted["type"] == "volume":
            make_volume(ctx, args.app, wanted["source"])
        return mounts + [wanted]

    _apply(ctx, args.app, change, f"Mount {args.mount}")
    ctx.out(f"-----> {args.app}: {args.mount} mounted")


@command("storage:unmount", "storage:unmount APP /path", "Unmount a path (the volume is kept)",
         admin=False)
def unmount(ctx, argv):
    p = app_parser("storage:unmount")
    p.add_argument("target", metavar="/path")
    args = parse_app(ctx, p, argv)
    target = validate.mount_target(args.target)

    def change(mounts: list[dict]) -> list[dict]:
        kept = [m for m in mounts if m["target"] != target]
        if len(kept) == len(mounts):
            raise NotFound(f"{args.app} mounts nothing at {target}")
        return kept

    _apply(ctx, args.app, change, f"Unmount {target}")
    ctx.out(f"-----> {args.app}: {target} unmounted (its volume keeps the data)")


@command("storage:list", "storage:list APP [--json]", "List an app's mounts", admin=False)
def list_mounts(ctx, argv):
    args = parse_app(ctx, app_parser("storage:list", json_flag=True), argv)
    rows = [{"source": display_source(ctx.settings.instance, args.app, m), "type": m["type"],
             "target": m["target"]} for m in ctx.store.get_mounts(args.app)]
    node = ctx.store.app_node(args.app) if ctx.settings.scheduler == "swarm" else None
    if node:  # a swarm: where the volumes are (host paths: on every node)
        rows = [dict(r, node=node if r["type"] == "volume" else "*") for r in rows]
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out(f"{args.app} mounts nothing (storage:mount {args.app} NAME:/data)")
        return
    print_rows(ctx, [["SOURCE", "TYPE", "PATH"] + (["NODE"] if node else [])]
               + [[r["source"], r["type"], r["target"]] + ([r["node"]] if node else [])
                  for r in rows])

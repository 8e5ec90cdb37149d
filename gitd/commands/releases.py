"""releases, releases:info, releases:rollback.

Every push, config change and rollback is a numbered release: an image, a
config snapshot, a Procfile, a status and the full log of its deploy. A
rollback is a new release made from an old one's image and config: no
rebuild.
"""

from __future__ import annotations

from gitd.core import validate
from gitd.commands import app_parser, command, iso_time, parse_app, print_rows
from gitd.commands.config import replace_config
from gitd.core.errors import GitdError, NotFound


def summary(release, current: int | None) -> dict:
    return {
        "version": release.version,
        "current": release.version == current,
        "status": release.status,
        "kind": release.kind,
        "commit": release.commit,
        "buildpack": release.buildpack,
        "pushed_by": release.pushed_by,
        "description": release.description,
        "created_at": iso_time(release.created_at),
        "finished_at": iso_time(release.finished_at),
        "image": release.image,
    }


def _row(data: dict) -> list[str]:
    return [f"v{data['version']}" + ("*" if data["current"] else ""), data["status"],
            (data["commit"] or "-")[:7], data["buildpack"] or "-", data["pushed_by"] or "-",
            data["created_at"], data["description"]]


@command("releases", "releases APP [-n COUNT] [--json]", "List an app's releases, newest first",
         admin=False, help="""
The current release is marked with *. -n shows only the newest COUNT (default 20).""")
def list_releases(ctx, argv):
    p = app_parser("releases", json_flag=True)
    p.add_argument("-n", type=int, default=20, dest="count")
    args = p.parse_args(argv)
    app = ctx.app(args.app)
    rows = [summary(r, app.current_release) for r in ctx.store.releases(args.app)[:max(args.count, 0)]]
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out(f"{args.app} has no releases yet: push to deploy it")
        return
    ctx.out(f"=== {args.app} releases")
    print_rows(ctx, [["VERSION", "STATUS", "COMMIT", "BUILDPACK", "BY", "CREATED", "DESCRIPTION"]]
               + [_row(r) for r in rows])


@command("releases:info", "releases:info APP VERSION [--json]",
         "Show one release: what it runs and the full log of its build and deploy", admin=False,
         help="""
VERSION is v3 or 3. Config values are not shown (they are secrets), only their names.""")
def info(ctx, argv):
    p = app_parser("releases:info", json_flag=True)
    p.add_argument("version")
    args = p.parse_args(argv)
    app = ctx.app(args.app)
    release = ctx.store.get_release(args.app, validate.release_version(args.version))
    data = {**summary(release, app.current_release), "procfile": release.procfile,
            "config_keys": sorted(release.config), "port": release.port, "log": release.log}
    if release.components:  # app.json services: each one's image
        data["services"] = {
            name: {"image": s.get("image"), "image_id": s.get("image_id"), "tree": s.get("tree"),
                   "port": s.get("port"), "reused": bool(s.get("reused")),
                   "processes": s.get("procfile", {})}
            for name, s in sorted(release.components.items())}
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {args.app} v{release.version}" + ("  (current)" if data["current"] else ""))
    for key in ("status", "kind", "description", "commit", "buildpack", "image", "pushed_by",
                "created_at", "finished_at", "port"):
        ctx.out(f"{key + ':':<13}{data[key] if data[key] is not None else '-'}")
    ctx.out(f"{'processes:':<13}" + (" ".join(f"{k}={v!r}" for k, v in release.procfile.items()) or "-"))
    ctx.out(f"{'config:':<13}{' '.join(data['config_keys']) or '-'}")
    for name, service in data.get("services", {}).items():
        reused = ", reused" if service["reused"] else ""
        ctx.out(f"{'service:':<13}{name}: {service['image']} ({(service['image_id'] or '-')[:19]}, "
                f"tree {(service['tree'] or '-')[:12]}{reused}) port {service['port']}")
    ctx.out("--- log")
    ctx.out(release.log.rstrip("\n"))


def rollback_target(store, app: str, version: int | None):
    """The release to roll back to: `version`, or the newest succeeded one
    before the current release."""
    current = store.get_app(app).current_release
    if current is None:
        raise GitdError(f"{app} has no release yet: nothing to roll back")
    if version is None:
        older = [r for r in store.releases(app) if r.version < current and r.status == "succeeded"]
        if not older:
            raise NotFound(f"{app} has no earlier release that succeeded to roll back to")
        return older[0]
    release = store.get_release(app, version)
    if version == current:
        raise GitdError(f"v{version} is the current release already")
    if release.status not in ("succeeded", "pruned"):
        raise GitdError(f"v{version} {release.status}: only a release that succeeded can come back")
    return release


@command("releases:rollback", "releases:rollback APP [VERSION]",
         "Run an earlier release again (its image and config) as a new release", help="""
No rebuild: a new release is made from VERSION's image and config snapshot,
and deployed with zero downtime. VERSION defaults to the newest successful
release before the current one. The app's config becomes VERSION's config.""")
def rollback(ctx, argv):
    p = app_parser("releases:rollback")
    p.add_argument("version", nargs="?")
    args = parse_app(ctx, p, argv)
    version = validate.release_version(args.version) if args.version else None
    with ctx.lock(args.app):
        base = rollback_target(ctx.store, args.app, version)
        ctx.gitd.pipeline.release(args.app, base, base.config, kind="rollback",
                                  description=f"Rollback to v{base.version}", by=ctx.key.name,
                                  sink=ctx.progress_sink())
        replace_config(ctx.store, args.app, ctx.store.get_config(args.app), base.config)
        ctx.store.set_mounts(args.app, base.mounts)

"""releases, releases:info, releases:rollback: the SSH face of
gitd.verbs.releases."""

from __future__ import annotations

from gitd.commands.base import app_parser, command, print_rows
from gitd.verbs import releases


def _row(data: dict) -> list[str]:
    return [f"v{data['version']}" + ("*" if data["current"] else ""), data["status"],
            (data["commit"] or "-")[:7], data["buildpack"] or "-", data["pushed_by"] or "-",
            data["created_at"], data["description"]]


@command("releases", "releases APP [-n COUNT] [--json]", "List an app's releases, newest first",
         admin=False, help="""
The current release is marked with *. -n shows only the newest COUNT (default 20).""")
def list_releases(ctx, argv):
    p = app_parser("releases", json_flag=True)
    p.add_argument("-n", type=int, default=releases.DEFAULT_COUNT, dest="count")
    args = p.parse_args(argv)
    rows = releases.list_releases(ctx, args.app, args.count)
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
    data = releases.info(ctx, args.app, args.version)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {args.app} v{data['version']}" + ("  (current)" if data["current"] else ""))
    for key in ("status", "kind", "description", "commit", "buildpack", "image", "pushed_by",
                "created_at", "finished_at", "port"):
        ctx.out(f"{key + ':':<13}{data[key] if data[key] is not None else '-'}")
    ctx.out(f"{'processes:':<13}" + (" ".join(f"{k}={v!r}" for k, v in data["procfile"].items()) or "-"))
    ctx.out(f"{'config:':<13}{' '.join(data['config_keys']) or '-'}")
    for name, service in data.get("services", {}).items():
        reused = ", reused" if service["reused"] else ""
        ctx.out(f"{'service:':<13}{name}: {service['image']} ({(service['image_id'] or '-')[:19]}, "
                f"tree {(service['tree'] or '-')[:12]}{reused}) port {service['port']}")
    ctx.out("--- log")
    ctx.out(data["log"].rstrip("\n"))


@command("releases:rollback", "releases:rollback APP [VERSION]",
         "Run an earlier release again (its image and config) as a new release", help="""
No rebuild: a new release is made from VERSION's image and config snapshot,
and deployed with zero downtime. VERSION defaults to the newest successful
release before the current one. The app's config becomes VERSION's config.""")
def rollback(ctx, argv):
    p = app_parser("releases:rollback")
    p.add_argument("version", nargs="?")
    args = p.parse_args(argv)
    releases.rollback(ctx, args.app, args.version)

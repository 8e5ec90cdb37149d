"""resources:show, resources:set, resources:unset: the SSH face of
gitd.verbs.resources (per-app container limits)."""

from __future__ import annotations

from gitd.commands.base import app_parser, command
from gitd.core import resources as limits
from gitd.verbs import resources


@command("resources:show", "resources:show APP [--json]", "Show an app's container limits",
         admin=False, help="""
What applies: values set with resources:set, else gitd's defaults
(settings default_memory, default_cpus, default_pids).""")
def show(ctx, argv):
    p = app_parser("resources:show", json_flag=True)
    args = p.parse_args(argv)
    data = resources.show(ctx, args.app)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {args.app} resources")
    for key in limits.KEYS:
        source = "set" if key in data["set"] else "default"
        ctx.out(f"{key + ':':<8}{data['applied'][key]} ({source})")


def say_changed(ctx, done: dict) -> None:
    """What a change did when no redeploy told it already."""
    if done["outcome"] == "unchanged":
        ctx.out(f"-----> {done['app']}: resources unchanged")
    elif done["outcome"] == "stored":
        ctx.out(f"-----> Resources of {done['app']}: {done['change']} (applied from the first deploy)")


@command("resources:set", "resources:set APP KEY=VALUE ...", "Limit an app's containers", help="""
Keys: memory=512m (b, k, m or g; no swap beyond it)  cpus=1.5  pids=512.
Applies to web and worker containers, the release command, `run` and (memory
only: Docker's classic builder takes no cpu or pids limit) builds. Redeploys
the current release (zero downtime).
    ssh paas resources:set hello memory=512m cpus=1 pids=512""")
def set_(ctx, argv):
    p = app_parser("resources:set")
    p.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    args = p.parse_args(argv)
    ctx.app(args.app)  # an unknown app before a bad pair, as every command
    say_changed(ctx, resources.set_limits(ctx, args.app, limits.parse_pairs(args.pairs)))


@command("resources:unset", "resources:unset APP KEY ...", "Back to the default limits", help="""
Keys: memory, cpus, pids. Redeploys the current release (zero downtime).""")
def unset(ctx, argv):
    p = app_parser("resources:unset")
    p.add_argument("keys", nargs="+", metavar="KEY")
    args = p.parse_args(argv)
    say_changed(ctx, resources.unset(ctx, args.app, args.keys))

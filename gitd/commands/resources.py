"""resources:show, resources:set, resources:unset: per-app container limits
(memory, cpus, pids), like Dokku's resource:limit.

They apply to the app's web and worker containers, its release command, its
one-off `run` containers and (memory only) its builds. A change redeploys
the current release so it applies at once; if that fails the change is undone.
"""

from __future__ import annotations

from gitd.commands import app_parser, command, parse_app
from gitd.core.errors import GitdError, UsageError
from gitd.core import resources


def _show_data(ctx, app: str) -> dict:
    settings = ctx.store.get_app(app).settings
    own = settings.get("resources") or {}
    applied = resources.effective(ctx.settings, settings)
    return {
        "app": app,
        "set": own,
        "defaults": resources.defaults(ctx.settings),
        "applied": {k: applied.get(k, "unlimited") for k in resources.KEYS},
    }


@command("resources:show", "resources:show APP [--json]", "Show an app's container limits",
         admin=False, help="""
What applies: values set with resources:set, else gitd's defaults
(settings default_memory, default_cpus, default_pids).""")
def show(ctx, argv):
    p = app_parser("resources:show", json_flag=True)
    args = parse_app(ctx, p, argv)
    data = _show_data(ctx, args.app)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {args.app} resources")
    for key in resources.KEYS:
        source = "set" if key in data["set"] else "default"
        ctx.out(f"{key + ':':<8}{data['applied'][key]} ({source})")


def _change(ctx, app: str, new: dict[str, str], what: str) -> None:
    with ctx.lock(app):
        before = ctx.store.get_app(app).settings.get("resources") or {}
        if new == before:
            ctx.out(f"-----> {app}: resources unchanged")
            return
        ctx.store.update_app_settings(app, resources=new or None)
        if ctx.store.current_release(app) is None:
            ctx.out(f"-----> Resources of {app}: {what} (applied from the first deploy)")
            return
        try:
            ctx.gitd.pipeline.redeploy(app, ctx.progress_sink(), f"Applying resources {what}:")
        except GitdError as exc:
            ctx.store.update_app_settings(app, resources=before or None)
            raise GitdError(f"{exc}\nresources of {app} left as they were") from exc


@command("resources:set", "resources:set APP KEY=VALUE ...", "Limit an app's containers", help="""
Keys: memory=512m (b, k, m or g; no swap beyond it)  cpus=1.5  pids=512.
Applies to web and worker containers, the release command, `run` and (memory
only: Docker's classic builder takes no cpu or pids limit) builds. Redeploys
the current release (zero downtime).
    ssh paas resources:set hello memory=512m cpus=1 pids=512""")
def set_(ctx, argv):
    p = app_parser("resources:set")
    p.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    args = parse_app(ctx, p, argv)
    values = resources.parse_pairs(args.pairs)
    current = ctx.store.get_app(args.app).settings.get("resources") or {}
    text = " ".join(f"{k}={v}" for k, v in sorted(values.items()))
    _change(ctx, args.app, {**current, **values}, text)


@command("resources:unset", "resources:unset APP KEY ...", "Back to the default limits", help="""
Keys: memory, cpus, pids. Redeploys the current release (zero downtime).""")
def unset(ctx, argv):
    p = app_parser("resources:unset")
    p.add_argument("keys", nargs="+", metavar="KEY")
    args = parse_app(ctx, p, argv)
    for key in args.keys:
        if key not in resources.KEYS:
            raise UsageError(f"unknown resource {key!r} (known: {', '.join(resources.KEYS)})")
    current = dict(ctx.store.get_app(args.app).settings.get("resources") or {})
    for key in args.keys:
        current.pop(key, None)
    _change(ctx, args.app, current, "unset " + " ".join(args.keys))

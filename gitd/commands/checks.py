"""checks:show, checks:set, checks:disable, checks:enable: how a deploy
decides a new container is ready, and how long the old ones drain."""

from __future__ import annotations

from gitd.core import validate
from gitd.commands import app_parser, command, parse_app
from gitd.core.errors import UsageError
from hooks import checks

DEPLOY_KEYS = {"drain": float, "stop_timeout": int}
MAX_DRAIN = 3600
MAX_STOP_TIMEOUT = 3600


def _current(ctx, name: str) -> dict:
    app = ctx.store.get_app(name)
    release = ctx.store.current_release(name)
    check = checks.resolve(app.settings, release.app_json if release else None,
                           ctx.settings.deploy_timeout)
    return {
        "app": name,
        "check": checks.as_dict(check),
        "from_app_json": checks.from_app_json(release.app_json) if release else {},
        "set": app.settings.get("checks", {}),
        "drain": app.settings.get("drain", ctx.settings.drain_seconds),
        "stop_timeout": app.settings.get("stop_timeout", ctx.settings.stop_timeout),
    }


@command("checks:show", "checks:show APP [--json]", "Show the health check and drain settings",
         admin=False, help="""
Defaults: GET / must answer below 500 within the deploy timeout.
app.json `healthchecks` in the repo overrides the defaults; checks:set overrides both.""")
def show(ctx, argv):
    p = app_parser("checks:show", json_flag=True)
    args = parse_app(ctx, p, argv)
    data = _current(ctx, args.app)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {args.app} health check")
    ctx.out(checks.HealthCheck(**data["check"]).describe())
    for source, values in (("app.json", data["from_app_json"]), ("checks:set", data["set"])):
        if values:
            ctx.out(f"from {source}: " + " ".join(f"{k}={v}" for k, v in sorted(values.items())))
    ctx.out(f"drain={data['drain']:g}s stop_timeout={data['stop_timeout']}s")


@command("checks:set", "checks:set APP KEY=VALUE ...", "Set health check or drain settings",
         help="""
Keys: path=/health  timeout=SECONDS (one probe)  attempts=N (failures in a row
that fail the deploy)  wait=SECONDS (how long a new container may take to
become healthy)  drain=SECONDS (before SIGTERM to the old containers)
stop_timeout=SECONDS (before SIGKILL). Applies from the next deploy.""")
def set_(ctx, argv):
    p = app_parser("checks:set")
    p.add_argument("pairs", nargs="+")
    args = parse_app(ctx, p, argv)
    check_values, deploy_values = {}, {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"expected KEY=VALUE, got {pair!r}")
        if key in DEPLOY_KEYS:
            deploy_values[key] = _deploy_value(key, value)
        else:
            check_values[key] = value
    parsed = checks.parse_values(check_values)
    current = ctx.store.get_app(args.app).settings.get("checks", {})
    ctx.store.update_app_settings(args.app, checks={**current, **parsed}, **deploy_values)
    ctx.out(f"-----> Health check of {args.app}: " + " ".join(f"{k}={v}" for k, v in
                                                              sorted({**parsed, **deploy_values}.items())))


def _deploy_value(key: str, raw: str):
    if key == "drain":
        return validate.seconds(raw, "drain", 0, MAX_DRAIN)
    return validate.whole_number(raw, "stop_timeout", 0, MAX_STOP_TIMEOUT)


@command("checks:disable", "checks:disable APP", "Deploy without health checks (may drop requests)")
def disable(ctx, argv):
    p = app_parser("checks:disable")
    args = parse_app(ctx, p, argv)
    ctx.store.update_app_settings(args.app, checks_disabled=True)
    ctx.err(" !     Health checks disabled for " + args.app + ": new containers get traffic as "
            "soon as they start, so deploys may drop requests. checks:enable undoes this.")


@command("checks:enable", "checks:enable APP", "Turn health checks back on")
def enable(ctx, argv):
    p = app_parser("checks:enable")
    args = parse_app(ctx, p, argv)
    ctx.store.update_app_settings(args.app, checks_disabled=None)
    ctx.out(f"-----> Health checks enabled for {args.app}")

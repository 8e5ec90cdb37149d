"""checks:show, checks:set, checks:disable, checks:enable: the SSH face of
gitd.verbs.checks (how a deploy decides a new container is ready, and how
long the old ones drain)."""

from __future__ import annotations

from gitd.commands.base import app_parser, command
from gitd.core.errors import UsageError
from gitd.verbs import checks
from hooks.checks import HealthCheck


@command("checks:show", "checks:show APP [--json]", "Show the health check and drain settings",
         admin=False, help="""
Defaults: GET / must answer below 500 within the deploy timeout.
app.json `healthchecks` in the repo overrides the defaults; checks:set overrides both.""")
def show(ctx, argv):
    p = app_parser("checks:show", json_flag=True)
    args = p.parse_args(argv)
    data = checks.show(ctx, args.app)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {args.app} health check")
    ctx.out(HealthCheck(**data["check"]).describe())
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
    args = p.parse_args(argv)
    ctx.app(args.app)  # an unknown app before a bad pair, as every command
    values = {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"expected KEY=VALUE, got {pair!r}")
        values[key] = value
    done = checks.set_values(ctx, args.app, values)
    ctx.out(f"-----> Health check of {args.app}: " + " ".join(f"{k}={v}" for k, v in
                                                              sorted(done["set"].items())))


@command("checks:disable", "checks:disable APP", "Deploy without health checks (may drop requests)")
def disable(ctx, argv):
    p = app_parser("checks:disable")
    args = p.parse_args(argv)
    checks.disable(ctx, args.app)
    ctx.err(" !     Health checks disabled for " + args.app + ": new containers get traffic as "
            "soon as they start, so deploys may drop requests. checks:enable undoes this.")


@command("checks:enable", "checks:enable APP", "Turn health checks back on")
def enable(ctx, argv):
    p = app_parser("checks:enable")
    args = p.parse_args(argv)
    checks.enable(ctx, args.app)
    ctx.out(f"-----> Health checks enabled for {args.app}")

"""domains, domains:add, domains:remove: the SSH face of gitd.verbs.domains
(the hosts and path prefixes Traefik routes to an app)."""

from __future__ import annotations

from gitd.commands.base import app_parser, command
from gitd.verbs import domains


@command("domains", "domains APP [--json]", "List an app's domains", admin=False, help="""
Every app gets APP.<gitd domain> when it is created; domains:remove drops it.""")
def list_domains(ctx, argv):
    p = app_parser("domains", json_flag=True)
    args = p.parse_args(argv)
    routes = domains.list_domains(ctx, args.app)
    if args.json:
        ctx.json(routes)
        return
    ctx.out(f"=== {args.app} domains")
    for route in routes:
        ctx.out(route["url"] + ("  (prefix stripped)" if route["strip_prefix"] else ""))
    if not routes:
        ctx.out("none: not routed (domains:add APP HOST)")

@command("domains:add", "domains:add APP HOST[/PATH] [HOST[/PATH] ...] [--strip-prefix]",
         "Route more hosts (or path prefixes of a host) to an app", help="""
Point the hosts' DNS at this server first. HOST/PATH routes only requests
whose path is PATH or lies under it (example.com/api: /api, /api/users, not
/apiary); several apps may share a host with distinct prefixes, the longest
prefix winning, and a bare HOST is the prefix "/". With --strip-prefix the
app sees the path without the prefix (/api/users arrives as /users).
Adding a route that exists updates its --strip-prefix.
The current release is redeployed (zero downtime) so the routes apply at once.""")
def add(ctx, argv):
    p = app_parser("domains:add")
    p.add_argument("hosts", nargs="+", metavar="HOST[/PATH]")
    p.add_argument("--strip-prefix", action="store_true",
                   help="remove the path prefix before the request reaches the app")
    args = p.parse_args(argv)
    say_changed(ctx, domains.add(ctx, args.app, args.hosts, strip_prefix=args.strip_prefix))

@command("domains:remove", "domains:remove APP HOST[/PATH] [HOST[/PATH] ...]",
         "Stop routing hosts (or path prefixes) to an app", help="""
HOST removes the route at "/" only; HOST/PATH the route at that prefix.
The current release is redeployed (zero downtime) without those routes.""")
def remove(ctx, argv):
    p = app_parser("domains:remove")
    p.add_argument("hosts", nargs="+", metavar="HOST[/PATH]")
    args = p.parse_args(argv)
    say_changed(ctx, domains.remove(ctx, args.app, args.hosts))


def say_changed(ctx, done: dict) -> None:
    """What a change did when no redeploy told it already."""
    app = done["app"]
    if not done["changed"]:
        ctx.out(f"-----> {app}: domains unchanged")
    elif not done["deployed"]:
        shown = " ".join(d["host"] + ("" if d["path"] == "/" else d["path"])
                         for d in done["domains"]) or "none"
        ctx.out(f"-----> Domains of {app}: {shown} (routed from the first deploy)")

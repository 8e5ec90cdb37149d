"""domains, domains:add, domains:remove: the hosts (and path prefixes)
Traefik routes to an app.

A route is a host with an optional path prefix (`example.com/api`); two apps
may share a host with distinct prefixes, the longest prefix winning. Routes
are container labels, which Docker cannot change on a running container: a
change redeploys the current release (zero downtime) so the new routes apply
at once. If that fails the change is undone.
"""

from __future__ import annotations

from hooks import tls

from gitd.core import validate
from gitd.commands import app_parser, command, parse_app
from gitd.core.errors import GitdError, UsageError
from gitd.core.store import HostRoute


def refuse_wildcard(text: str) -> None:
    """A host with `*` labels gets why wildcards are refused; anything else
    odd (rule characters beside a `*`) is only an invalid domain."""
    host = text.partition("/")[0]
    if "*" not in host or not _is_wildcard_pattern(host):
        return
    raise UsageError(
        f"invalid domain {text[:80]!r}: wildcard domains are not routed: add each host by name "
        "(domains:add APP a.example.com b.example.com). One certificate for all of them "
        "is a wildcard certificate, which ACME issues only over the DNS-01 challenge "
        "(acme_challenge = \"dns\": the hosts under gitd's domain share one), or your "
        "own: certs:add")


def _is_wildcard_pattern(host: str) -> bool:
    """`host` with each `*` label made a plain one is a valid hostname."""
    if set(host) <= {"*", "."}:  # "*": every host
        return True
    labels = ["x" if label == "*" else label for label in host.split(".")]
    if any("*" in label for label in labels):
        return False
    try:
        validate.hostname(".".join(labels))
    except GitdError:
        return False
    return True


def parse_hosts(hosts: list[str]) -> list[str]:
    """Validated, lowercased, without repeats, in the order given."""
    seen: list[str] = []
    for host in hosts:
        refuse_wildcard(host)
        host = validate.hostname(host)
        if host not in seen:
            seen.append(host)
    if not seen:
        raise UsageError("name at least one domain")
    return seen


def parse_routes(texts: list[str], strip_prefix: bool = False) -> list[HostRoute]:
    """`HOST` or `HOST/PATH`, validated, without repeats, in the order given."""
    seen: dict[tuple[str, str], HostRoute] = {}
    for text in texts:
        refuse_wildcard(text)
        host, path = validate.host_and_path(text)
        seen.setdefault((host, path), HostRoute(host, path, strip_prefix and path != "/"))
    if not seen:
        raise UsageError("name at least one domain")
    return list(seen.values())


def route_url(settings, route: HostRoute) -> str:
    url = settings.host_url(route.host)
    return url if route.path == "/" else url.rstrip("/") + route.path


def change_routes(ctx, app: str, add: list[HostRoute] = (), remove: list[HostRoute] = ()) -> None:
    """Store the change and redeploy so routing follows; undo it on failure."""
    store = ctx.store
    with ctx.lock(app):
        before = store.routes(app)
        if add:
            store.add_routes(app, list(add))  # refuses a (host, path) of another app
        if remove:
            store.remove_routes(app, list(remove))  # refuses a route not on this app
        if store.routes(app) == before:
            ctx.out(f"-----> {app}: domains unchanged")
            return
        if store.current_release(app) is None:
            shown = " ".join(str(r) for r in store.routes(app)) or "none"
            ctx.out(f"-----> Domains of {app}: {shown} (routed from the first deploy)")
            return
        try:
            ctx.gitd.pipeline.redeploy(app, ctx.progress_sink(), "Updating routes: redeploying")
        except Exception as exc:  # any failure puts the old state back
            store.remove_routes(app, store.routes(app))
            store.add_routes(app, before)
            if not isinstance(exc, GitdError):
                raise
            raise GitdError(f"{exc}\ndomains of {app} left as they were") from exc
        finally:
            tls.sync_dynamic(ctx.settings, store)


@command("domains", "domains APP [--json]", "List an app's domains", admin=False, help="""
Every app gets APP.<gitd domain> when it is created; domains:remove drops it.""")
def list_domains(ctx, argv):
    p = app_parser("domains", json_flag=True)
    args = parse_app(ctx, p, argv)
    routes = ctx.store.routes(args.app)
    if args.json:
        ctx.json([{"host": r.host, "path": r.path, "strip_prefix": r.strip_prefix,
                   "url": route_url(ctx.settings, r)} for r in routes])
        return
    ctx.out(f"=== {args.app} domains")
    for route in routes:
        ctx.out(route_url(ctx.settings, route) + ("  (prefix stripped)" if route.strip_prefix else ""))
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
    args = parse_app(ctx, p, argv)
    routes = parse_routes(args.hosts, args.strip_prefix)
    for route in routes:
        validate.own_host(route.host, args.app, ctx.settings.domain, ctx.settings.api_hostname)
    change_routes(ctx, args.app, add=routes)


@command("domains:remove", "domains:remove APP HOST[/PATH] [HOST[/PATH] ...]",
         "Stop routing hosts (or path prefixes) to an app", help="""
HOST removes the route at "/" only; HOST/PATH the route at that prefix.
The current release is redeployed (zero downtime) without those routes.""")
def remove(ctx, argv):
    p = app_parser("domains:remove")
    p.add_argument("hosts", nargs="+", metavar="HOST[/PATH]")
    args = parse_app(ctx, p, argv)
    change_routes(ctx, args.app, remove=parse_routes(args.hosts))

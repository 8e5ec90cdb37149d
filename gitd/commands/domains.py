"""domains, domains:add, domains:remove: the hosts Traefik routes to an app.

Routes are container labels, which Docker cannot change on a running
container: a change redeploys the current release (zero downtime) so the
new routes apply at once. If that fails the change is undone.
"""

from __future__ import annotations

from gitd import tlsconfig, validate
from gitd.commands import app_parser, command, parse_app
from gitd.errors import GitdError, UsageError


def parse_hosts(hosts: list[str]) -> list[str]:
    """Validated, lowercased, without repeats, in the order given."""
    seen: list[str] = []
    for host in hosts:
        host = validate.hostname(host)
        if host not in seen:
            seen.append(host)
    if not seen:
        raise UsageError("name at least one domain")
    return seen


def change_domains(ctx, app: str, add: list[str] = (), remove: list[str] = ()) -> None:
    """Store the change and redeploy so routing follows; undo it on failure."""
    store = ctx.store
    with ctx.lock(app):
        before = store.domains(app)
        added = [h for h in add if h not in before]
        removed = [h for h in remove if h in before]
        if add:
            store.add_domains(app, list(add))  # refuses a host of another app
        if remove:
            store.remove_domains(app, list(remove))  # refuses a host not on this app
        if not added and not removed:
            ctx.out(f"-----> {app}: domains unchanged")
            return
        if store.current_release(app) is None:
            ctx.out(f"-----> Domains of {app}: {' '.join(store.domains(app)) or 'none'} "
                    "(routed from the first deploy)")
            return
        try:
            ctx.gitd.pipeline.redeploy(app, ctx.progress_sink(), "Updating routes: redeploying")
        except Exception as exc:  # any failure puts the old state back
            if added:
                store.remove_domains(app, added)
            if removed:
                store.add_domains(app, removed)
            if not isinstance(exc, GitdError):
                raise
            raise GitdError(f"{exc}\ndomains of {app} left as they were") from exc
        finally:
            tlsconfig.sync_dynamic(ctx.settings, store)


@command("domains", "domains APP [--json]", "List an app's domains", admin=False, help="""
Every app gets APP.<gitd domain> when it is created; domains:remove drops it.""")
def list_domains(ctx, argv):
    p = app_parser("domains", json_flag=True)
    args = parse_app(ctx, p, argv)
    hosts = ctx.store.domains(args.app)
    urls = [ctx.settings.host_url(h) for h in hosts]
    if args.json:
        ctx.json([{"host": h, "url": u} for h, u in zip(hosts, urls)])
        return
    ctx.out(f"=== {args.app} domains")
    for url in urls:
        ctx.out(url)
    if not hosts:
        ctx.out("none: not routed (domains:add APP HOST)")


@command("domains:add", "domains:add APP HOST [HOST ...]", "Route more hosts to an app", help="""
Point the hosts' DNS at this server first. A host can belong to one app only.
The current release is redeployed (zero downtime) so the routes apply at once.""")
def add(ctx, argv):
    p = app_parser("domains:add")
    p.add_argument("hosts", nargs="+", metavar="HOST")
    args = parse_app(ctx, p, argv)
    hosts = [validate.own_host(h, args.app, ctx.settings.domain) for h in parse_hosts(args.hosts)]
    change_domains(ctx, args.app, add=hosts)


@command("domains:remove", "domains:remove APP HOST [HOST ...]", "Stop routing hosts to an app",
         help="""
The current release is redeployed (zero downtime) without those routes.""")
def remove(ctx, argv):
    p = app_parser("domains:remove")
    p.add_argument("hosts", nargs="+", metavar="HOST")
    args = parse_app(ctx, p, argv)
    change_domains(ctx, args.app, remove=parse_hosts(args.hosts))

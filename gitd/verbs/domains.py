"""Domains: the hosts (and path prefixes) Traefik routes to an app.

A route is a host with an optional path prefix (`example.com/api`); two apps
may share a host with distinct prefixes, the longest prefix winning. Routes
are container labels, which Docker cannot change on a running container: a
change redeploys the current release (zero downtime) so the new routes apply
at once. If that fails the change is undone.
"""

from __future__ import annotations

from gitd.core import validate
from gitd.core.errors import GitdError, UsageError
from gitd.core.store import HostRoute
from gitd.verbs import Session
from hooks import tls


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
        if not isinstance(text, str):
            raise UsageError("a domain is HOST or HOST/PATH text")
        refuse_wildcard(text)
        host, path = validate.host_and_path(text)
        seen.setdefault((host, path), HostRoute(host, path, strip_prefix and path != "/"))
    if not seen:
        raise UsageError("name at least one domain")
    return list(seen.values())


def route_url(settings, route: HostRoute) -> str:
    url = settings.host_url(route.host)
    return url if route.path == "/" else url.rstrip("/") + route.path


def route_data(settings, route: HostRoute) -> dict:
    return {"host": route.host, "path": route.path, "strip_prefix": route.strip_prefix,
            "url": route_url(settings, route)}


def list_domains(s: Session, app: str) -> list[dict]:
    s.app(app)
    return [route_data(s.settings, r) for r in s.store.routes(app)]


def add(s: Session, app: str, routes: list[str], *, strip_prefix: bool = False) -> dict:
    """Route `routes` (HOST or HOST/PATH) to the app too; with strip_prefix
    the app sees paths without the prefix."""
    s.require_admin()
    s.app(app)
    parsed = parse_routes(routes, strip_prefix)
    for route in parsed:
        validate.own_host(route.host, app, s.settings.domain, s.settings.api_hostname)
    return change_routes(s, app, add=parsed)


def remove(s: Session, app: str, routes: list[str]) -> dict:
    s.require_admin()
    s.app(app)
    return change_routes(s, app, remove=parse_routes(routes))


def change_routes(s: Session, app: str, add: list[HostRoute] = (),
                  remove: list[HostRoute] = ()) -> dict:
    """Store the change and redeploy so routing follows; undo it on failure.
    Returns the routes after it, whether they changed and were deployed."""
    store = s.store
    with s.lock(app):
        before = store.routes(app)
        if add:
            store.add_routes(app, list(add))  # refuses a (host, path) of another app
        if remove:
            store.remove_routes(app, list(remove))  # refuses a route not on this app
        after = store.routes(app)
        done = {"app": app, "changed": after != before, "deployed": False,
                "domains": [route_data(s.settings, r) for r in after]}
        if after == before or store.current_release(app) is None:
            return done
        try:
            s.gitd.pipeline.redeploy(app, s.progress, "Updating routes: redeploying")
        except Exception as exc:  # any failure puts the old state back
            store.remove_routes(app, store.routes(app))
            store.add_routes(app, before)
            if not isinstance(exc, GitdError):
                raise
            raise GitdError(f"{exc}\ndomains of {app} left as they were") from exc
        finally:
            tls.sync_dynamic(s.settings, store)
        return {**done, "deployed": True}

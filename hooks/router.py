"""Traefik routing: labels for a deploy, and confirmation from Traefik's API.

Routes are data (`routes`) turned into labels (`route_labels`); with HTTPS a
deploy has a second router on the websecure entrypoint for the same service,
and HTTP->HTTPS redirects are file-provider routers (`redirect_config`).

Each deploy of an app gets its own router and service, `<app>-s<seq>`, with
the same Host rule and a priority that rises with seq. Traefik never sees
two definitions of one name (labels are immutable and a clash drops the
router for everyone), and while old and new both exist the new one wins.

Routes may carry a path prefix (issue #13): the routes of one path (and
strip setting) share a router, `<app>-s<seq>` for the first, then
`<app>-s<seq>-p<N>`; a longer prefix gets a higher priority band, so the
longest prefix wins across apps on one host while, within a band, each
app's newer deploy still outranks its older one.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gitd.core import validate
from gitd.core.certs import write_private
from gitd.core.errors import DeployError, GitdError
from gitd.core.store import HostRoute

# Every label Traefik's docker provider reads starts with this (it matches
# keys case-insensitively, so the check does too).

RESOLVER = "gitd"  # the certificatesResolvers name in traefik.yml.j2
HTTPS_ENTRYPOINT = "websecure"
# above every deploy's router (1000 + seq); below Traefik's own ACME
# HTTP-01 router, so challenges still reach Traefik
REDIRECT_PRIORITY = 1_000_000_000
# deploy priority: 1000 + seq, plus a band per character of path prefix
# beyond "/" (prefixes are at most 100 characters: the top band stays below
# REDIRECT_PRIORITY; a seq past the band's width is held just below its top,
# which is maintenance mode's: hooks.maintenance)
PRIORITY_BASE = 1000
PRIORITY_BAND = 1_000_000


def route_name(app: str, seq: int) -> str:
    return f"{app}-s{seq}"


class RouteProvider(Protocol):
    """How Traefik learns where a deploy's routes go; each scheduler hands
    out its own (`scheduler.routes`): hooks.docker_routes.FileRoutes
    (file-provider files that follow the containers; LabelRoutes, the
    containers' labels, for an external Traefik), hooks.swarm.routes.TaskFiles
    (files that follow the swarm's tasks). They render with this module's `labels` and
    `file_routes`, and a deploy confirms them with `confirm_routed`."""

    @property
    def providers(self) -> tuple[str, ...]:
        """Traefik's providers a deploy's routes are confirmed in."""

    def publish(self, route_key: str, seq: int, routes: list, servers: set[str], tls) -> None:
        """Route the deploy's hosts and paths to `servers`."""

    def unpublish(self, route_key: str, seq: int) -> None:
        """The deploy's routes go."""


def host_rule(hosts: list[str]) -> str:
    return " || ".join(f"Host(`{h}`)" for h in hosts)


def path_rule(hosts: list[str], path: str) -> str:
    """Traefik's PathPrefix is a plain string prefix (`/api` would take
    `/apiary`): a prefix matches itself and what lies under it."""
    if path == "/":
        return host_rule(hosts)
    hosts_part = host_rule(hosts)
    if len(hosts) > 1:
        hosts_part = f"({hosts_part})"
    return f"{hosts_part} && (Path(`{path}`) || PathPrefix(`{path}/`))"


def priority(seq: int, path: str) -> int:
    return PRIORITY_BASE + min(seq, PRIORITY_BAND - PRIORITY_BASE - 2) + (len(path) - 1) * PRIORITY_BAND


def as_routes(routes) -> list[HostRoute]:
    """Host names (a prefix of "/") or HostRoutes, as HostRoutes."""
    return [r if isinstance(r, HostRoute) else HostRoute(r) for r in routes]


@dataclass(frozen=True)
class TLSPlan:
    """How a deploy's hosts are served over HTTPS: hosts with a custom
    certificate use it; the others get one from ACME (`resolver`) or, with
    no ACME account, whatever certificate Traefik holds for them."""
    resolver: str = ""
    custom_hosts: frozenset[str] = field(default_factory=frozenset)
    entrypoint: str = HTTPS_ENTRYPOINT
    # DNS-01 can prove a wildcard: hosts one label under this domain share
    # one certificate for *.<domain>
    wildcard_domain: str = ""

    def cert_domain(self, host: str) -> str:
        head, _, rest = host.partition(".")
        if self.wildcard_domain and head and rest == self.wildcard_domain:
            return f"*.{rest}"
        return host


@dataclass(frozen=True)
class Route:
    router: str
    entrypoint: str
    hosts: tuple[str, ...]
    tls: bool = False
    resolver: str = ""
    cert_domains: tuple[str, ...] = ()  # with a resolver: one certificate each
    path: str = "/"
    strip_prefix: bool = False


def path_groups(routes: list[HostRoute]) -> list[tuple[str, bool, tuple[str, ...]]]:
    """(path, strip, hosts) for each distinct path and strip setting, "/" first."""
    groups: dict[tuple[str, bool], list[str]] = {}
    for route in sorted(routes, key=lambda r: (r.path != "/", r.path, r.strip_prefix)):
        # stripping "/" means nothing
        key = (route.path, route.strip_prefix and route.path != "/")
        if route.host not in groups.setdefault(key, []):
            groups[key].append(route.host)
    return [(path, strip, tuple(hosts)) for (path, strip), hosts in groups.items()]


def routes(app: str, seq: int, hosts, entrypoint: str = "web",
           tls: TLSPlan | None = None) -> list[Route]:
    """The routers of one deploy, as data: per path, HTTP, then HTTPS if
    planned. `hosts`: host names (prefix "/") or HostRoutes."""
    result = []
    for index, (path, strip, group_hosts) in enumerate(path_groups(as_routes(hosts))):
        name = route_name(app, seq) + (f"-p{index}" if index else "")
        result += _group_routes(name, group_hosts, path, strip, entrypoint, tls)
    return result


def _group_routes(name: str, hosts: tuple[str, ...], path: str, strip: bool, entrypoint: str,
                  tls: TLSPlan | None) -> list[Route]:
    result = [Route(name, entrypoint, hosts, path=path, strip_prefix=strip)]
    if tls is None:
        return result
    custom = tuple(h for h in hosts if h in tls.custom_hosts)
    others = tuple(h for h in hosts if h not in tls.custom_hosts)
    if others:
        domains = tuple(dict.fromkeys(tls.cert_domain(h) for h in others)) if tls.resolver else ()
        result.append(Route(f"{name}-tls", tls.entrypoint, others, True, tls.resolver, domains,
                            path, strip))
    if custom:
        result.append(Route(f"{name}-tlsc", tls.entrypoint, custom, True, path=path,
                            strip_prefix=strip))
    return result


def strip_middleware(route: Route) -> str:
    return f"{route.router}-strip"


def route_labels(route: Route, seq: int, service: str) -> dict[str, str]:
    prefix = f"traefik.http.routers.{route.router}"
    result = {
        f"{prefix}.rule": path_rule(list(route.hosts), route.path),
        f"{prefix}.entrypoints": route.entrypoint,
        f"{prefix}.priority": str(priority(seq, route.path)),
        f"{prefix}.service": service,
    }
    if route.strip_prefix:
        middleware = strip_middleware(route)
        result[f"traefik.http.middlewares.{middleware}.stripprefix.prefixes"] = route.path
        result[f"{prefix}.middlewares"] = middleware
    if route.tls:
        result[f"{prefix}.tls"] = "true"
    if route.resolver:
        result[f"{prefix}.tls.certresolver"] = route.resolver
        # a certificate per host: one failing domain must not hold up the others
        for index, domain in enumerate(route.cert_domains):
            result[f"{prefix}.tls.domains[{index}].main"] = domain
    return result


def labels(app: str, seq: int, hosts, port: int, entrypoint: str = "web",
           tls: TLSPlan | None = None) -> dict[str, str]:
    name = route_name(app, seq)
    planned = routes(app, seq, hosts, entrypoint, tls)
    if not planned:
        # nothing to route: keep the container out of Traefik entirely
        return {"traefik.enable": "false"}
    result = {"traefik.enable": "true"}
    for route in planned:
        result.update(route_labels(route, seq, name))
    result[port_label(app, seq)] = str(port)
    return result


def port_label(route_key: str, seq: int) -> str:
    return f"traefik.http.services.{route_name(route_key, seq)}.loadbalancer.server.port"


def labelled_port(labels: dict, route_key: str, seq: int) -> int | None:
    """The port `labels` (made by `labels`) route to; None when not routed."""
    port = labels.get(port_label(route_key, seq), "")
    return int(port) if port.isascii() and port.isdigit() and 0 < int(port) < 65536 else None


def route_config(route: Route, seq: int, service: str) -> tuple[dict, dict]:
    """One router as Traefik's file provider reads it (what `route_labels`
    says with labels), and the middlewares it needs."""
    config: dict = {"rule": path_rule(list(route.hosts), route.path),
                    "entryPoints": [route.entrypoint], "priority": priority(seq, route.path),
                    "service": service}
    middlewares = {}
    if route.strip_prefix:
        middleware = strip_middleware(route)
        middlewares[middleware] = {"stripPrefix": {"prefixes": [route.path]}}
        config["middlewares"] = [middleware]
    if route.tls:
        config["tls"] = {}
    if route.resolver:
        config["tls"] = {"certResolver": route.resolver,
                         "domains": [{"main": d} for d in route.cert_domains]}
    return config, middlewares


def file_routes(app: str, seq: int, hosts, servers: list[str], entrypoint: str = "web",
                tls: TLSPlan | None = None, retry_attempts: int = 0,
                dial_timeout: str = "") -> dict:
    """A deploy's routers and service for the file provider, its servers
    given (the swarm scheduler: tasks on any node, by node address). With
    `retry_attempts`, a request whose server cannot be reached (a task
    that just went away) is sent to another server instead of failing: on a
    refused connection, and, for idempotent methods, on Traefik's own 502
    (the port's proxy took the connection, its task was gone). With
    `dial_timeout` (a Traefik duration), a server that does not take the
    connection in that time counts as unreachable (a node that is gone
    answers nothing: Traefik's default waits 30 s)."""
    name = route_name(app, seq)
    routers, middlewares = {}, {}
    for route in routes(app, seq, hosts, entrypoint, tls):
        routers[route.router], needed = route_config(route, seq, name)
        middlewares.update(needed)
    if not routers:
        return {}
    if retry_attempts:
        retry = f"{name}-retry"  # one per deploy: the provider's files share one namespace
        middlewares[retry] = {"retry": {"attempts": retry_attempts, "initialInterval": "50ms",
                                        "status": ["502"]}}
        for config in routers.values():
            config["middlewares"] = [retry] + config.get("middlewares", [])
    balancer: dict = {"servers": [{"url": url} for url in servers]}
    http: dict = {"routers": routers, "services": {name: {"loadBalancer": balancer}}}
    if dial_timeout:
        transport = f"{name}-transport"
        http["serversTransports"] = {transport: {"forwardingTimeouts": {
            "dialTimeout": dial_timeout}}}
        balancer["serversTransport"] = transport
    if middlewares:
        http["middlewares"] = middlewares
    return {"http": http}


def route_file_text(config: dict) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def write_route_file(path, text: str) -> None:
    """Whole or not at all, private: Traefik's file provider watches the dir.
    The file is written beside that dir and moved in: a temporary file in it
    (even one Traefik does not read) is an event its provider reports, and
    the change that follows waits out Traefik's throttle, which was a
    third of a deploy's wait for its route."""
    path = Path(path)
    write_private(path, text.encode(), staging=path.parent.parent)


def sweep_staged(dynamic_dir) -> int:
    """Route files a killed gitd was staging (write_route_file) are left
    beside the watched dir: removed before gitd writes any. Returns how many."""
    swept = 0
    for stale in Path(dynamic_dir).parent.glob(".*.yml.*.tmp"):
        if stale.is_symlink() or stale.is_file():
            stale.unlink(missing_ok=True)
            swept += 1
    return swept


def redirect_config(app: str, hosts: list[str], https_port: int,
                    entrypoint: str = "web") -> dict:
    """File-provider routers sending plain HTTP for `hosts` to HTTPS. They
    live beside the deploys' labels, so they change without a redeploy."""
    if not hosts:
        return {}
    middleware = f"gitd-https-{https_port}"
    return {
        "routers": {f"gitd-redirect-{app}": {
            "rule": host_rule(sorted(hosts)), "entryPoints": [entrypoint],
            "priority": REDIRECT_PRIORITY, "middlewares": [middleware],
            "service": "noop@internal"}},
        # not permanent: browsers would remember it after https:redirect off
        "middlewares": {middleware: {"redirectScheme": {
            "scheme": "https", "port": str(https_port), "permanent": False}}},
    }


def refuse_routing_labels(image_labels: dict[str, str] | None, what: str) -> None:
    """Routing belongs to gitd alone. A container inherits every label of its
    image and gitd's own labels can only override keys, not remove them, so
    an image carrying `traefik.*` labels could route any host (or take port
    80 with a TCP router). Such an image is refused before anything runs."""
    found = validate.routing_labels(image_labels)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise GitdError(
            f"{what} carries Traefik labels ({shown}): routing is gitd's alone, "
            "remove those LABEL lines (domains:add routes hosts)")


def _get_json(url: str, timeout: float = 2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    except (OSError, ValueError):
        return None


def router_status(api_url: str, name: str, provider: str = "docker") -> str | None:
    """The status Traefik reports for a router ("enabled", ...); None when
    it has no such router (or cannot be asked)."""
    found = _get_json(f"{api_url}/api/http/routers/{name}@{provider}")
    return (found or {}).get("status")


def routed_servers(api_url: str, app: str, seq: int, routers: list[str] | None = None,
                   provider: str = "docker") -> dict[str, str]:
    """{server url: status} Traefik holds for this deploy's service ({} if
    none, or if any of `routers` (default: the HTTP one) is not enabled)."""
    name = route_name(app, seq)
    for router_name in routers or [name]:
        router = _get_json(f"{api_url}/api/http/routers/{router_name}@{provider}")
        if not router or router.get("status") != "enabled":
            return {}
    service = _get_json(f"{api_url}/api/http/services/{name}@{provider}")
    if not service:
        return {}
    return service.get("serverStatus") or {}


def still_routed(api_url: str, app: str, seq: int, providers) -> bool:
    """Whether Traefik still holds this deploy's service in any of `providers`."""
    name = route_name(app, seq)
    return any(_get_json(f"{api_url}/api/http/services/{name}@{provider}") for provider in providers)


def confirm_unrouted(api_url: str, app: str, seq: int, providers, timeout: float) -> bool:
    """Wait until Traefik holds this deploy's service in none of `providers`;
    False if it still does at `timeout`."""
    deadline = time.monotonic() + timeout
    while still_routed(api_url, app, seq, providers):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def confirm_routed(api_url: str, app: str, seq: int, server_urls: set[str], timeout: float = 30.0,
                   routers: list[str] | None = None, provider: str | tuple = "docker") -> float:
    """Wait until Traefik enables every router of this deploy (default: the
    HTTP one) and routes it to every server in `server_urls`, reported UP,
    through `provider` (or any one of several). Returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    status: dict = {}
    providers = (provider,) if isinstance(provider, str) else provider
    while time.monotonic() < deadline:
        for name in providers:
            status = routed_servers(api_url, app, seq, routers, name)
            if server_urls and all(status.get(url) == "UP" for url in server_urls):
                return time.monotonic() - start
        # Traefik takes a file route in 20-300 ms: each look then is what the push waits
        time.sleep(0.02 if time.monotonic() - start < 2 else 0.1)
    raise DeployError(
        f"Traefik did not route {route_name(app, seq)} to {sorted(server_urls)} within "
        f"{timeout:g}s (it reports {status or 'nothing'})")


FALLBACK_SERVICE = "gitd-fallback"


def fallback_config(app_routes: dict[str, list], entrypoint: str = "web",
                    tls_entrypoint: str = "") -> dict:
    """File-provider routers answering 503 for every route of every app,
    below each of its deploys' routers: an app with no healthy web
    container (unhealthy, stopped, scaled to 0) says so, where Traefik's
    docker provider, having dropped its router, would answer 404 (or a
    stopped one 502). A service with no servers is Traefik's 503."""
    routers = {}
    for app, app_route_list in sorted(app_routes.items()):
        for index, (path, _, hosts) in enumerate(path_groups(as_routes(app_route_list))):
            name = f"{FALLBACK_SERVICE}-{app}" + (f"-p{index}" if index else "")
            config = {"rule": path_rule(list(hosts), path), "entryPoints": [entrypoint],
                      "priority": priority(0, path) - 1, "service": FALLBACK_SERVICE}
            routers[name] = config
            if tls_entrypoint:
                routers[f"{name}-tls"] = {**config, "entryPoints": [tls_entrypoint], "tls": {}}
    if not routers:
        return {}
    return {"http": {"routers": routers,
                     "services": {FALLBACK_SERVICE: {"loadBalancer": {"servers": []}}}}}

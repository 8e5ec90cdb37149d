"""The API at `api_host` through a managed Traefik: a route file for its
file provider, written when the API starts and removed when it stops."""

from __future__ import annotations

from hooks import router

ROUTE_FILE = "gitd-api.yml"
ROUTER = "gitd-api"
REDIRECT = "gitd-api-https"
PROXIED = "gitd-api-proxied"
# Traefik sets it on every request it passes to the API, with a secret made
# at each start: only then is X-Forwarded-For Traefik's (any local process
# could send one straight to the API's port)
PROXY_HEADER = "X-Gitd-Proxy"


def route_config(settings, port: int, proxy_secret: str) -> dict:
    """Host(`api_host`) to 127.0.0.1:`port`; with HTTPS on, over HTTPS with
    its own certificate (ACME when on), plain HTTP redirected to it."""
    rule = f"Host(`{settings.api_hostname}`)"
    plain = {"rule": rule, "entryPoints": [settings.traefik_entrypoint], "service": ROUTER,
             "middlewares": [PROXIED]}
    routers = {ROUTER: plain}
    middlewares = {PROXIED: {"headers": {"customRequestHeaders": {PROXY_HEADER: proxy_secret}}}}
    if settings.https:
        tls = {"certResolver": router.RESOLVER, "domains": [{"main": settings.api_hostname}]} \
            if settings.acme else {}
        routers[f"{ROUTER}-tls"] = {"rule": rule, "entryPoints": [router.HTTPS_ENTRYPOINT],
                                    "service": ROUTER, "tls": tls, "middlewares": [PROXIED]}
        # a token never crosses the network in clear: plain HTTP only redirects
        plain["middlewares"] = [REDIRECT]
        middlewares[REDIRECT] = {"redirectScheme": {
            "scheme": "https", "permanent": True, "port": str(settings.https_port)}}
    # Traefik drops its idle connections to the API before the API closes
    # them (api_header_timeout): a request sent on one the API is closing fails
    idle = f"{max(settings.api_header_timeout / 2, 0.5):g}s"
    http = {"routers": routers, "middlewares": middlewares,
            "serversTransports": {ROUTER: {"forwardingTimeouts": {"idleConnTimeout": idle}}},
            "services": {ROUTER: {"loadBalancer": {
                "servers": [{"url": f"http://127.0.0.1:{port}"}], "serversTransport": ROUTER}}}}
    return {"http": http}


def publish(settings, port: int, proxy_secret: str) -> bool:
    """Write the route when gitd's Traefik reads its files (managed mode)."""
    if settings.traefik != "managed":
        return False
    path = settings.dynamic_dir / ROUTE_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    router.write_route_file(path, router.route_file_text(route_config(settings, port,
                                                                      proxy_secret)))
    return True


def withdraw(settings) -> None:
    (settings.dynamic_dir / ROUTE_FILE).unlink(missing_ok=True)

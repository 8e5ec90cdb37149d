"""Traefik routing: labels for a deploy, and confirmation from Traefik's API.

Each deploy of an app gets its own router and service, `<app>-s<seq>`, with
the same Host rule and a priority that rises with seq. Traefik never sees
two definitions of one name (labels are immutable and a clash drops the
router for everyone), and while old and new both exist the new one wins.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from gitd.errors import DeployError, GitdError

# Every label Traefik's docker provider reads starts with this (it matches
# keys case-insensitively, so the check does too).
TRAEFIK_PREFIX = "traefik."


def route_name(app: str, seq: int) -> str:
    return f"{app}-s{seq}"


def host_rule(hosts: list[str]) -> str:
    return " || ".join(f"Host(`{h}`)" for h in hosts)


def labels(app: str, seq: int, hosts: list[str], port: int, entrypoint: str = "web") -> dict[str, str]:
    name = route_name(app, seq)
    if not hosts:
        # nothing to route: keep the container out of Traefik entirely
        return {"traefik.enable": "false"}
    return {
        "traefik.enable": "true",
        f"traefik.http.routers.{name}.rule": host_rule(hosts),
        f"traefik.http.routers.{name}.entrypoints": entrypoint,
        f"traefik.http.routers.{name}.priority": str(1000 + seq),
        f"traefik.http.routers.{name}.service": name,
        f"traefik.http.services.{name}.loadbalancer.server.port": str(port),
    }


def routing_labels(labels: dict[str, str] | None) -> list[str]:
    """The labels among `labels` that Traefik would read."""
    return sorted(k for k in (labels or {}) if k.strip().lower().startswith(TRAEFIK_PREFIX))


def refuse_routing_labels(image_labels: dict[str, str] | None, what: str) -> None:
    """Routing belongs to gitd alone. A container inherits every label of its
    image and gitd's own labels can only override keys, not remove them, so
    an image carrying `traefik.*` labels could route any host (or take port
    80 with a TCP router). Such an image is refused before anything runs."""
    found = routing_labels(image_labels)
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


def routed_servers(api_url: str, app: str, seq: int) -> dict[str, str]:
    """{server url: status} Traefik holds for this deploy's service ({} if none)."""
    name = route_name(app, seq)
    router = _get_json(f"{api_url}/api/http/routers/{name}@docker")
    if not router or router.get("status") != "enabled":
        return {}
    service = _get_json(f"{api_url}/api/http/services/{name}@docker")
    if not service:
        return {}
    return service.get("serverStatus") or {}


def confirm_routed(api_url: str, app: str, seq: int, server_urls: set[str], timeout: float = 30.0) -> float:
    """Wait until Traefik routes this deploy to every server in `server_urls`
    and reports them UP. Returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = routed_servers(api_url, app, seq)
        if server_urls and all(status.get(url) == "UP" for url in server_urls):
            return time.monotonic() - start
        time.sleep(0.1)
    raise DeployError(
        f"Traefik did not route {route_name(app, seq)} to {sorted(server_urls)} within "
        f"{timeout:g}s (it reports {status or 'nothing'})")

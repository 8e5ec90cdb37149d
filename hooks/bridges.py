"""The docker scheduler's route provider (hooks.router.RouteProvider).

A web container carries its routes as labels (hooks.specs), and Traefik's
docker provider reads them, but routes a container only once Docker calls
it healthy: one probe interval after its start at best. So, with a managed
Traefik and its API, a deploy runs the probe itself, and a file route (a
*bridge*) sends the deploy's hosts to the new containers until the docker
provider has taken them over; then the bridge goes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import structlog

from gitd.core.config import Settings
from hooks import checks, router
from hooks.engine import LABEL_PROCESS, LABEL_SEQ, Engine
from hooks.specs import route_key_of

log = structlog.get_logger("gitd.scheduler")

BRIDGE_PREFIX = "bridge-"
BRIDGE_NAME = re.compile(rf"^{BRIDGE_PREFIX}(?P<key>.+)-s(?P<seq>[0-9]+)\.yml$")
BRIDGE_WAIT = 120.0  # seconds for Traefik's docker provider to take a deploy over, past
# Docker's first check of it (which may come health_interval after the start)
STAGED_POLL = 1.0  # seconds between looks at a bridge staged at start (one per app)


def bridge_file_name(route_key: str, seq: int) -> str:
    return f"{BRIDGE_PREFIX}{router.route_name(route_key, seq)}.yml"


def parse_bridge_name(name: str) -> tuple[str, int] | None:
    match = BRIDGE_NAME.match(name)
    return (match["key"], int(match["seq"])) if match else None


class LabelRoutes:
    """Routes as the containers' labels, bridged by a file route while
    Traefik's docker provider has not taken a deploy over."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self._bridged: tuple[float, bool] | None = None  # (when asked, answer)

    @property
    def bridged(self) -> bool:
        """Whether deploys bridge: it takes a managed Traefik (whose file
        provider reads the dynamic dir: gitd wrote its config), running
        that config, and its API (to tell when the docker provider has taken
        over). Otherwise a deploy waits for Docker's own health check, and
        the docker provider routes it."""
        if self.settings.traefik != "managed" or not self.settings.api_url:
            return False
        now = time.monotonic()
        if self._bridged is None or now - self._bridged[0] > 60 or not self._bridged[1]:
            self._bridged = (now, router.has_file_provider(self.settings.api_url))
        return self._bridged[1]

    @property
    def providers(self) -> tuple[str, ...]:
        """Where a deploy's routes are confirmed: its bridge or, should the
        docker provider have taken over already (and the bridge gone), its
        labels."""
        return ("file", "docker") if self.bridged else ("docker",)

    @property
    def bridges_dir(self) -> Path:
        return self.settings.dynamic_dir

    @property
    def takeover_wait(self) -> float:
        """How long a bridge may wait for the docker provider: until two of
        Docker's checks of a deploy could have passed, and BRIDGE_WAIT more."""
        return BRIDGE_WAIT + 2 * checks.live_interval(self.settings.health_interval)

    def publish(self, route_key: str, seq: int, routes: list, servers: set[str], tls) -> None:
        """The containers' labels carry the routes; the bridge carries them
        until Traefik's docker provider does."""
        if not self.bridged:
            return
        self.hand_over_later(self._write_bridge(route_key, seq, routes, servers, tls))

    def stage(self, route_key: str, seq: int, routes: list, servers: set[str],
              tls) -> Path | None:
        """At start, before the managed Traefik (whose API cannot be asked
        yet) starts: a live deploy's bridge. Returns its file for
        `hand_over_staged`, or None when one is there already (a resumed
        hand-over has it)."""
        if (self.bridges_dir / bridge_file_name(route_key, seq)).exists():
            return None
        return self._write_bridge(route_key, seq, routes, servers, tls)

    def hand_over_staged(self, paths: list[Path]) -> None:
        """The bridges staged at start, taken over by the docker provider as
        slowly as it needs: one thread for all, a look at each every
        STAGED_POLL seconds (not a thread per app asking four times a second)."""
        if paths:
            threading.Thread(target=self._hand_over_all, args=(list(paths),), daemon=True,
                             name="handover-staged").start()

    def _hand_over_all(self, paths: list[Path]) -> None:
        waiting = {path: self._bridge_of(path) for path in paths}
        deadline = time.monotonic() + self.takeover_wait
        while waiting and time.monotonic() < deadline:
            time.sleep(STAGED_POLL)
            try:  # one look at Traefik and one listing for every bridge
                routing = router.Routing.read(self.settings.api_url)
                running = self._running_web_deploys()
            except Exception as exc:  # noqa: BLE001 - Traefik or Docker busy: look again
                log.warning("cannot tell whether the bridges were taken over", error=str(exc))
                continue
            routing = routing or router.Routing({}, {})  # no answer: nothing routed by labels
            for path, bridge in list(waiting.items()):
                if bridge is None or not path.exists() or self._taken_over_in(
                        routing, running, *bridge):
                    path.unlink(missing_ok=True)
                    del waiting[path]
        for path, bridge in waiting.items():
            log.warning("Traefik's docker provider did not take the deploy over; "
                        "its bridge route goes", route=router.route_name(*bridge[:2]))
            path.unlink(missing_ok=True)

    def _write_bridge(self, route_key: str, seq: int, routes: list, servers: set[str],
                      tls) -> Path:
        config = router.file_routes(route_key, seq, routes, sorted(servers),
                                    self.settings.traefik_entrypoint, tls)
        self.bridges_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.bridges_dir / bridge_file_name(route_key, seq)
        router.write_route_file(path, router.route_file_text(config))
        return path

    def resume_handovers(self) -> None:
        """Bridges a stopped gitd left: each goes once the docker provider
        routes its containers (or they are gone)."""
        for path in sorted(self.bridges_dir.glob(f"{BRIDGE_PREFIX}*.yml")):
            self.hand_over_later(path)

    def carries(self, container) -> bool:
        """Whether its deploy's bridge routes to the container's published
        port already."""
        seq = container.labels.get(LABEL_SEQ, "")
        port = checks.env_port(container)
        host_port = self.engine.host_port(container, port) if port else None
        if not seq.isdigit() or not host_port:
            return False
        bridge = self._bridge_of(self.bridges_dir / bridge_file_name(route_key_of(container.labels),
                                                                     int(seq)))
        return bridge is not None and f"http://127.0.0.1:{host_port}" in bridge[3]

    def unpublish(self, route_key: str, seq: int) -> None:
        """The labels go with the containers; the bridge, if any, now."""
        (self.bridges_dir / bridge_file_name(route_key, seq)).unlink(missing_ok=True)

    def hand_over_later(self, path: Path) -> None:
        threading.Thread(target=self._hand_over, args=(path,), daemon=True,
                         name=f"handover-{path.stem}").start()

    def _hand_over(self, path: Path) -> None:
        bridge = self._bridge_of(path)
        if bridge is None:
            path.unlink(missing_ok=True)
            return
        began = time.monotonic()
        deadline = began + self.takeover_wait
        while path.exists() and time.monotonic() < deadline:
            if self._taken_over(*bridge):
                break
            # soon after Docker's check at a short interval; else within a second
            time.sleep(0.25 if time.monotonic() - began < 3 else 1.0)
        else:
            if path.exists():
                log.warning("Traefik's docker provider did not take the deploy over; "
                            "its bridge route goes", route=router.route_name(*bridge[:2]))
        path.unlink(missing_ok=True)

    def _bridge_of(self, path: Path) -> tuple[str, int, list[str], set[str]] | None:
        """(route key, seq, routers, servers) of a bridge file; None: not one."""
        parsed = parse_bridge_name(path.name)
        try:
            config = json.loads(path.read_text())["http"]
        except (OSError, ValueError, KeyError):
            return None
        if parsed is None:
            return None
        servers = {s["url"] for v in (config.get("services") or {}).values()
                   for s in v["loadBalancer"]["servers"]}
        return (*parsed, sorted(config.get("routers") or {}), servers)

    def _taken_over(self, route_key: str, seq: int, routers: list[str], servers: set[str]) -> bool:
        """The docker provider routes the deploy to every server (or nothing
        of it runs any more): its bridge can go."""
        status = router.routed_servers(self.settings.api_url, route_key, seq, routers,
                                       provider="docker")
        if servers and all(status.get(url) == "UP" for url in servers):
            return True
        return not self.web_running(route_key, seq)

    @staticmethod
    def _taken_over_in(routing, running: set, route_key: str, seq: int, routers: list[str],
                       servers: set[str]) -> bool:
        """_taken_over, from one look at Traefik (`routing`) and the (route
        key, seq) of the web deploys running (`running`)."""
        status = routing.servers(route_key, seq, routers)
        if servers and all(status.get(url) == "UP" for url in servers):
            return True
        return (route_key, seq) not in running

    def _running_web_deploys(self) -> set[tuple[str, int]]:
        return {(route_key_of(c.labels), int(c.labels.get(LABEL_SEQ, "0") or 0))
                for c in self.engine.listed(None, **{LABEL_PROCESS: "web"})
                if c.status == "running" and c.labels.get(LABEL_SEQ, "").isdigit()}

    def web_running(self, route_key: str, seq: int) -> bool:
        app = route_key.split("_", 1)[0]
        # listed, not inspected: a hand-over asks this four times a second
        return any(route_key_of(c.labels) == route_key and c.status == "running"
                   for c in self.engine.listed(app, **{LABEL_SEQ: str(seq),
                                                       LABEL_PROCESS: "web"}))

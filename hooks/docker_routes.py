"""The docker scheduler's route providers (hooks.router.RouteProvider).

With a managed Traefik (gitd writes its static config), routes are files
only: FileRoutes. Traefik runs no docker provider, which lists and inspects
every container on the engine at each container's start or death: beside
300 containers (each on a network of its own, with a 30 s check) one start
until it answered took 1.14 s with it running throughout, 0.58 s without
(0.43 and 0.51 s beside none; 2 cores), and bench/engine_cost.py has it
add half of dockerd's CPU per start. A deploy probes its containers itself
and writes its route file; a follower keeps the file's servers on the
deploy's web containers as Docker sees them: one that dies, is stopped or
is unhealthy leaves at once; one comes (back) once Docker calls it healthy
(or, with no health check, once it runs), or once a deploy or the restart
watch (hooks.restarts) has probed it and written it in.

With an external Traefik, its docker provider reads the containers' labels
(hooks.specs), and routes a container once Docker calls it healthy:
LabelRoutes.
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
from hooks.engine import LABEL_PROCESS, LABEL_ROLE, LABEL_SEQ, Engine
from hooks.specs import route_key_of

log = structlog.get_logger("gitd.scheduler")

# a deploy's route file; the name is from when such a file only bridged a
# deploy until Traefik's docker provider took it over: kept, so the files an
# older gitd left are its deploys' routes after an upgrade
ROUTE_FILE_PREFIX = "bridge-"
ROUTE_FILE_NAME = re.compile(rf"^{ROUTE_FILE_PREFIX}(?P<key>.+)-s(?P<seq>[0-9]+)\.yml$")
# seconds between two looks at the containers when no event wakes one sooner
# (one listing of this instance's web containers, none inspected)
FOLLOW_INTERVAL = 2.0
WEB = {LABEL_ROLE: "service", LABEL_PROCESS: "web"}
# a container leaves its routes when Docker says it stops (a signal sent to
# end it) or ended; these and its start or health changing wake a look
LEAVING = ("kill", "stop", "die")
EVENTS = LEAVING + ("start", "health_status")
# signals a `docker kill -s` sends to a process that goes on running
NOT_ENDING = {"1", "10", "12", "28", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH",
              "HUP", "USR1", "USR2", "WINCH"}


def route_file_name(route_key: str, seq: int) -> str:
    return f"{ROUTE_FILE_PREFIX}{router.route_name(route_key, seq)}.yml"


def parse_route_file_name(name: str) -> tuple[str, int] | None:
    match = ROUTE_FILE_NAME.match(name)
    return (match["key"], int(match["seq"])) if match else None


def listed_url(container, route_key: str, seq: int) -> str | None:
    """`http://127.0.0.1:<published port>` of a listed web container."""
    port = router.labelled_port(container.labels, route_key, seq)
    for binding in container.ports:
        if binding.get("PrivatePort") == port and binding.get("IP") == "127.0.0.1" \
                and binding.get("PublicPort"):
            return f"http://127.0.0.1:{binding['PublicPort']}"
    return None


def following(servers: set[str], containers: list, route_key: str, seq: int,
              left: set[str] = frozenset(), restarted: set[str] = frozenset()) -> set[str]:
    """A deploy's servers as its containers (listed) are now. In: a running
    container Docker calls healthy or that has no health check (as the docker
    provider routes it), and one still booting by Docker (its first check is
    far off) that the deploy routes already, unless it started again since
    (`restarted`: its deploy or the restart watch has not probed it yet).
    Out: whatever is not running, is unhealthy, or is stopping or gone since
    its last start (`left`: container ids)."""
    now = set()
    for container in containers:
        url = listed_url(container, route_key, seq)
        if url is None or container.status != "running" or container.health == "unhealthy" \
                or container.id in left:
            continue
        if container.health in ("healthy", None) or (
                url in servers and container.id not in restarted):
            now.add(url)
    return now


class LabelRoutes:
    """An external Traefik: the containers' labels are the routes."""

    providers = ("docker",)
    routes_by_file = False  # a deploy waits for Docker's check: then the docker provider routes it

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings

    def publish(self, route_key: str, seq: int, routes: list, servers: set[str], tls) -> None:
        """The labels carry them."""

    def unpublish(self, route_key: str, seq: int) -> None:
        """The labels go with the containers."""

    def carries(self, container) -> bool:
        return False

    def follow(self) -> None:
        """Nothing to follow: the docker provider reads the labels."""


class FileRoutes(LabelRoutes):
    """A managed Traefik: each deploy's routes are a file, its servers
    followed. The containers carry their labels still (an admin's own
    Traefik could read them)."""

    providers = ("file",)
    routes_by_file = True  # a deploy probes its containers itself, and its file routes them

    def __init__(self, engine: Engine, settings: Settings):
        super().__init__(engine, settings)
        self._guard = threading.Lock()  # a file is read and written whole by one at a time
        self._wake = threading.Event()
        self._following = False
        self._urls: dict[str, str] = {}  # container id -> its url, at the last look
        self._left: set[str] = set()  # ids stopping or ended since their last start
        self._restarted: set[str] = set()  # ids started again since, not probed by gitd yet
        self._published: dict[str, float] = {}  # file name -> when a deploy last wrote it

    @property
    def dir(self) -> Path:
        return self.settings.dynamic_dir

    def publish(self, route_key: str, seq: int, routes: list, servers: set[str], tls) -> None:
        with self._guard:
            probed = {cid for cid, url in self._urls.items() if url in servers}
            self._left -= probed
            self._restarted -= probed
            self._published[route_file_name(route_key, seq)] = time.monotonic()
            self._write(route_key, seq, routes, servers, tls)

    def stage(self, route_key: str, seq: int, routes: list, servers: set[str], tls) -> None:
        """At start, before the managed Traefik starts: a live deploy's file
        when it has none (an upgrade from a gitd whose docker provider had
        taken it over)."""
        with self._guard:
            if not (self.dir / route_file_name(route_key, seq)).exists():
                self._write(route_key, seq, routes, servers, tls)

    def unpublish(self, route_key: str, seq: int) -> None:
        with self._guard:
            (self.dir / route_file_name(route_key, seq)).unlink(missing_ok=True)

    def _write(self, route_key: str, seq: int, routes: list, servers: set[str], tls) -> Path:
        config = router.file_routes(route_key, seq, routes, sorted(servers),
                                    self.settings.traefik_entrypoint, tls)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.dir / route_file_name(route_key, seq)
        router.write_route_file(path, router.route_file_text(config))
        return path

    def read(self, path: Path) -> tuple[dict, set[str]] | None:
        """A route file's config and the servers it names; None: not one."""
        if parse_route_file_name(path.name) is None or path.is_symlink():
            return None
        try:
            config = json.loads(path.read_text())
            return config, {s["url"] for v in (config["http"].get("services") or {}).values()
                            for s in v["loadBalancer"]["servers"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def carries(self, container) -> bool:
        """Whether its deploy's file routes to the container's published
        port already."""
        seq = container.labels.get(LABEL_SEQ, "")
        port = checks.env_port(container)
        host_port = self.engine.host_port(container, port) if port else None
        if not seq.isdigit() or not host_port:
            return False
        with self._guard:
            if container.id in self._left or container.id in self._restarted:
                return False  # out at the next look, if not already
            found = self.read(self.dir / route_file_name(route_key_of(container.labels), int(seq)))
        return found is not None and f"http://127.0.0.1:{host_port}" in found[1]

    def web_running(self, route_key: str, seq: int) -> bool:
        app = route_key.split("_", 1)[0]
        return any(route_key_of(c.labels) == route_key and c.status == "running"
                   for c in self.engine.listed(app, **{LABEL_SEQ: str(seq),
                                                       LABEL_PROCESS: "web"}))

    def follow(self) -> None:
        """Start following (once): a thread listening for the web
        containers' events, and one looking at them."""
        with self._guard:
            if self._following:
                return
            self._following = True
        threading.Thread(target=self._listen, daemon=True, name="routes-events").start()
        threading.Thread(target=self._follow, daemon=True, name="routes-follow").start()

    def _listen(self) -> None:
        while True:
            try:
                for event in self.engine.events(None, EVENTS, **WEB):
                    self.seen(event)
                    self._wake.set()
            except Exception:  # noqa: BLE001 - the engine restarted: listen again
                log.warning("container events interrupted; listening again")
                with self._guard:  # what it missed meanwhile (restarts) is not known
                    self._restarted |= self._left | set(self._urls)
                    self._left.clear()
                time.sleep(1.0)

    def seen(self, event: dict) -> None:
        """A container event: one stopping or ended leaves its routes at the
        next look; one started again after that waits for a probe."""
        action = event.get("Action") or event.get("status") or ""
        container_id = event.get("id", "")
        signal = ((event.get("Actor") or {}).get("Attributes") or {}).get("signal", "")
        with self._guard:
            if action in LEAVING and not (action == "kill" and signal in NOT_ENDING):
                self._left.add(container_id)
            elif action == "start" and container_id in self._left:
                self._left.discard(container_id)
                self._restarted.add(container_id)

    def _follow(self) -> None:
        while True:
            self._wake.wait(FOLLOW_INTERVAL)
            self._wake.clear()
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - keep following; the next look retries
                log.warning("route files update failed", error=str(exc))

    def sync(self) -> int:
        """Point each route file at its deploy's containers as they are now;
        a file whose deploy has no container left (a gitd stopped before
        its retirement finished) goes. Returns files rewritten or removed."""
        # files first: a deploy makes its containers before its file, so every
        # file seen here has its containers in the listing below; one a
        # deploy writes after the listing began is left to the next look
        began = time.monotonic()
        paths = sorted(self.dir.glob(f"{ROUTE_FILE_PREFIX}*.yml"))
        containers = self.engine.listed(None, **WEB)
        by_deploy: dict[tuple[str, int], list] = {}
        for container in containers:
            seq = container.labels.get(LABEL_SEQ, "")
            if seq.isdigit():
                by_deploy.setdefault((route_key_of(container.labels), int(seq)), []).append(
                    container)
        written = 0
        with self._guard:
            self._urls = {c.id: url for (key, seq), group in by_deploy.items() for c in group
                          if (url := listed_url(c, key, seq))}
            known = {c.id for c in containers}
            self._left &= known
            self._restarted &= known - {c.id for c in containers if c.health == "healthy"}
            for path in paths:
                if self._published.get(path.name, 0.0) < began:
                    written += self._rewrite(path, by_deploy)
            self._published = {name: when for name, when in self._published.items()
                               if when >= began}
        return written

    def _rewrite(self, path: Path, by_deploy: dict) -> int:
        deploy, found = parse_route_file_name(path.name), self.read(path)
        if deploy is None or found is None:
            return 0
        config, servers = found
        if deploy not in by_deploy:
            path.unlink(missing_ok=True)
            log.info("route file of a deploy that is gone removed",
                     route=router.route_name(*deploy))
            return 1
        now = following(servers, by_deploy.get(deploy, []), *deploy, self._left, self._restarted)
        if now == servers:
            return 0
        for service in config["http"].get("services", {}).values():
            service["loadBalancer"]["servers"] = [{"url": url} for url in sorted(now)]
        router.write_route_file(path, router.route_file_text(config))
        log.info("routes follow the containers", route=router.route_name(*deploy),
                 servers=sorted(now))
        return 1

"""Routes to tasks: Traefik runs beside gitd on the manager, so it reaches a
task by its node's address and the task's host-mode published port. gitd
writes those servers into Traefik's file provider (one file per deploy),
rewrites them when the swarm moves a task (the follower), and takes a node
out of them before it is drained (RouteFollower)."""

from __future__ import annotations

import json
import threading
import time

import docker
import docker.errors
import structlog

from gitd.core.errors import DeployError
from hooks import router
from hooks.engine import LABEL_INSTANCE, LABEL_PROCESS, LABEL_ROLE
from hooks.swarm.specs import TASK_ROLE, SwarmUnit

log = structlog.get_logger("gitd.swarm")


ROUTE_FILE_PREFIX = "route-"


# a task can vanish before the route files follow (a node lost, a replica
# killed): Traefik tries the request on another task rather than failing it
RETRY_ATTEMPTS = 5
# a task on a node that died (killed, cut off) answers nothing until the
# swarm declares the node down, tens of seconds later: a connection not taken
# in this time goes to the retry (tasks are on the cluster's own network)
DIAL_TIMEOUT = "1s"


# how often the route files are checked against the tasks when no container
# event wakes the check sooner (tasks on other nodes send none here)
FOLLOW_INTERVAL = 1.0


def route_file_name(route_key: str, seq: int) -> str:
    return f"{ROUTE_FILE_PREFIX}{router.route_name(route_key, seq)}.yml"


def serving(found: list[tuple[str, str]], leaving: set[str]) -> set[str]:
    """The (node id, url) of running tasks -> the urls to route: not those on
    leaving nodes, unless nothing else runs."""
    staying = {url for node, url in found if node not in leaving}
    return staying or {url for _, url in found}


class TaskFiles:
    """The swarm's route provider (hooks.router.RouteProvider): one
    file-provider file per deploy naming its tasks' addresses, rewritten as
    the tasks move (RouteFollower)."""

    providers = ("file",)

    def __init__(self, settings):
        self.settings = settings
        self.dir = settings.dynamic_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self._guard = threading.Lock()

    def publish(self, route_key: str, seq: int, routes: list, servers: set[str], tls) -> None:
        config = router.file_routes(route_key, seq, routes, sorted(servers),
                                    self.settings.traefik_entrypoint, tls,
                                    retry_attempts=RETRY_ATTEMPTS, dial_timeout=DIAL_TIMEOUT)
        self.write(route_key, seq, config)

    def write(self, route_key: str, seq: int, config: dict, only_if_present: bool = False) -> bool:
        """Write a deploy's file (only if it is there: `only_if_present`);
        False when it already says that."""
        path = self.dir / route_file_name(route_key, seq)
        text = router.route_file_text(config)
        with self._guard:
            try:
                if path.read_text() == text:
                    return False
            except OSError:
                if only_if_present:  # removed meanwhile (its service retired): stays so
                    return False
            router.write_route_file(path, text)
        return True

    def unpublish(self, route_key: str, seq: int) -> None:
        with self._guard:
            (self.dir / route_file_name(route_key, seq)).unlink(missing_ok=True)

    def files(self) -> set[str]:
        return {p.name for p in self.dir.glob(f"{ROUTE_FILE_PREFIX}*.yml")}

    def read(self, route_key: str, seq: int) -> dict:
        return json.loads((self.dir / route_file_name(route_key, seq)).read_text())

    def remove_file(self, name: str) -> None:
        with self._guard:
            (self.dir / name).unlink(missing_ok=True)


class RouteFollower:
    """Part of SwarmScheduler (hooks.swarm.scheduler)."""

    def endpoints(self, unit: SwarmUnit, port: int, leaving: set[str] = frozenset(),
                  tasks: list[dict] | None = None) -> set[str]:
        """The addresses of `unit`'s running tasks (`tasks`: already listed);
        those on `leaving` nodes only when no other task runs (better a node
        on its way out than none)."""
        found = []
        for task in self.tasks(unit) if tasks is None else tasks:
            if task["Status"]["State"] != "running" or task.get("DesiredState") != "running":
                continue
            if (task["Status"].get("ContainerStatus") or {}).get("ContainerID") in self._stopping:
                continue  # SIGTERM sent: about to stop answering
            address = self.task_address(task, port)
            if address:
                found.append((task.get("NodeID", ""), f"http://{address}"))
        urls = serving(found, leaving)
        if not urls:
            raise DeployError(f"{unit.name} has no task publishing port {port}")
        return urls

    def task_address(self, task: dict, port: int) -> str | None:
        """`node address:published port` of a running task. Docker 20.10
        publishes a host-mode port twice, IPv4 and IPv6, on *different*
        ports, and another task's IPv4 port may be this one's IPv6 port: on
        this node the container's bindings say which is IPv4; on another
        node the first (the IPv4 binding, listed first) is taken. Known per
        task: a task's ports never change."""
        if task["ID"] in self._task_addresses:
            return self._task_addresses[task["ID"]]
        published = [p["PublishedPort"] for p in
                     ((task["Status"].get("PortStatus") or {}).get("Ports") or [])
                     if p.get("TargetPort") == port and p.get("PublishedPort")]
        if task.get("NodeID") == self.node_id:
            published = self._local_ipv4_ports(task, port) or published
        if not published:
            return None
        address = f"{self.node_addr(task.get('NodeID', ''))}:{published[0]}"
        self._task_addresses[task["ID"]] = address
        return address

    def _local_ipv4_ports(self, task: dict, port: int) -> list[int]:
        container_id = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
        try:
            container = self.client.containers.get(container_id) if container_id else None
        except docker.errors.NotFound:
            return []
        bindings = ((container.attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(
            f"{port}/tcp") if container else None
        return [int(b["HostPort"]) for b in bindings or [] if ":" not in (b.get("HostIp") or "")]

    def leaving_nodes(self) -> set[str]:
        """Nodes whose tasks get no new requests: drained ones (the swarm is
        stopping their tasks) and those a `nodes:drain` is about to drain."""
        try:
            drained = {n.id for n in self.client.nodes.list()
                       if (n.attrs.get("Spec") or {}).get("Availability") == "drain"}
        except docker.errors.DockerException:
            drained = set()
        return drained | self._draining

    def take_out_of_routes(self, node_id: str, wait: float) -> int:
        """Before a node is drained: route every web unit to its tasks on
        other nodes (where it has some), and give Traefik `wait` seconds to
        let the requests in flight there finish. The swarm then stops the
        node's tasks with nothing routed to them. Returns files rewritten."""
        self._draining.add(node_id)
        written = self.sync_routes()
        if written:
            time.sleep(wait)
        return written

    def back_in_routes(self, node_id: str) -> None:
        self._draining.discard(node_id)

    def follow_tasks(self) -> None:
        """In the background: keep the route files on the running tasks.
        A task container on this node being stopped or dying (a drain, a
        crash, `docker stop`) wakes the check at once, before the swarm
        has even marked its task: Traefik stops sending it requests while
        it still finishes the ones it has."""
        threading.Thread(target=self._watch_containers, daemon=True,
                         name="swarm-events").start()
        threading.Thread(target=self._follow, daemon=True, name="swarm-routes").start()

    def _follow(self) -> None:
        while True:
            self._wake.wait(FOLLOW_INTERVAL)
            self._wake.clear()
            try:
                self.sync_routes()
            except Exception:  # noqa: BLE001 - keep following; the next round retries
                log.exception("swarm routes update failed")

    def _watch_containers(self) -> None:
        filters = {"type": "container", "event": ["kill", "stop", "die"],
                   "label": [f"{LABEL_INSTANCE}={self.settings.instance}",
                             f"{LABEL_ROLE}={TASK_ROLE}"]}
        while True:
            try:
                for event in self.client.events(decode=True, filters=filters):
                    self._stopping.add(event.get("id", ""))
                    self._wake.set()
            except Exception:  # noqa: BLE001 - the engine restarted: listen again
                log.warning("swarm container events interrupted; listening again")
                time.sleep(1.0)

    def sync_routes(self) -> int:
        """Point each web unit's route file at its tasks as they are now (a
        node drained or lost, a task replaced): the routers stay as the
        deploy wrote them, only the servers change. A route file whose
        service is gone (removed behind gitd's back) goes too. Returns files
        rewritten or removed."""
        # files first: a deploy makes its service before its route file, so
        # every file listed here has its service in the listing below
        files = self.routes.files()
        units = self.units(**{LABEL_ROLE: "service", LABEL_PROCESS: "web"})
        tasks = {unit.id: self.tasks(unit) for unit in units}
        everything = [t for group in tasks.values() for t in group]
        for task_id in set(self._task_addresses) - {t["ID"] for t in everything}:
            del self._task_addresses[task_id]
        self._stopping &= {(t["Status"].get("ContainerStatus") or {}).get("ContainerID")
                           for t in everything}  # gone ones forgotten
        changed = self.refresh_routes(units, tasks)
        for orphan in files - {route_file_name(u.route_key, u.seq) for u in units}:
            self.routes.remove_file(orphan)
            log.info("route file of a service that is gone removed", file=orphan)
            changed += 1
        return changed

    def refresh_routes(self, units: list[SwarmUnit], tasks: dict | None = None) -> int:
        """Rewrite the servers of the web `units`' route files: their running
        tasks (`tasks`: unit id -> its tasks, already listed), or none for a
        service scaled to 0 (ps:stop). A file that is not there (not routed,
        or retired meanwhile) is not made. Returns files rewritten."""
        written = 0
        leaving = self.leaving_nodes()
        for unit in units:
            if unit.labels.get(LABEL_PROCESS) != "web":
                continue
            port = router.labelled_port(unit.labels, unit.route_key, unit.seq)
            try:
                config = self.routes.read(unit.route_key, unit.seq)
                if port is None:
                    raise ValueError("not routed")
                servers = (self.endpoints(unit, port, leaving, (tasks or {}).get(unit.id))
                           if unit.replicas else set())
            except (OSError, ValueError, DeployError):
                continue  # not routed, or no task up right now: keep what is there
            for service in config.get("http", {}).get("services", {}).values():
                service["loadBalancer"]["servers"] = [{"url": u} for u in sorted(servers)]
            if self.routes.write(unit.route_key, unit.seq, config, only_if_present=True):
                log.info("routes follow the swarm", service=unit.name, servers=sorted(servers))
                written += 1
        return written

"""Docker Swarm as gitd's scheduler (issue #16).

Each process type of a deploy is one swarm service, `replicas` = its
count, spread over the nodes by the swarm. A deploy never updates a running
service in place: the new release's services start beside the old ones
(blue/green, like the docker scheduler), are health-gated by the swarm
(a task stays "starting" until its HEALTHCHECK passes), routed, and only
then are the old services removed. Swarm's own rolling update (even
start-first) stops an old task as soon as its replacement runs, before
Traefik routes to it; a service per deploy keeps the old tasks until the
new ones are healthy *and* routed.

Images reach every node through a registry: each release's image is pushed
there and services pin it by digest.

Routing: Traefik runs beside gitd on the manager (not on an overlay
network), so it reaches a task by its node's address and the task's
host-mode published port. gitd writes those servers into Traefik's file
provider (one file per deploy) from the tasks it sees, and rewrites them
when the swarm moves a task (`sync_routes`). Traefik's swarm provider would
route to overlay addresses a host-run Traefik cannot reach.

Networks are overlay networks with DNS round robin (`dnsrr`) endpoints: a
service name resolves to its tasks' addresses, with no IPVS virtual IP
(which this machine's kernel lacks, and gitd does not need).
"""

from __future__ import annotations

import secrets
import threading
import time

import docker
import docker.errors
import structlog

from gitd.core.config import Settings
from gitd.core.errors import DeployError, GitdError
from hooks import checks, registry
from hooks.engine import (LABEL_APP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_PROCESS, LABEL_RELEASE,
                          LABEL_ROLE, Engine, _explain)
from hooks.scheduler import unit_label
from hooks.specs import web_deploys
from hooks.swarm.oneoff import OneOffs
from hooks.swarm.routes import RouteFollower, TaskFiles
from hooks.swarm.services import DataServices
from hooks.swarm.specs import (TASK_ROLE, SwarmUnit, group_by_process, has_volume, job_spec,
                               pinned_to, service_spec)
from hooks.swarm.tasks import ENDED_STATES, FAILED_STATES, TaskViews, _FollowedLog

log = structlog.get_logger("gitd.swarm")


LABEL_STOPPED = "gitd.stopped-replicas"  # on a service ps:stop scaled to 0: its replicas before


def is_swarm_network(attrs: dict) -> bool:
    """Swarm-scoped, judged by scope: an overlay network the swarm's allocator
    has not allocated yet shows no driver at all."""
    return attrs.get("Scope") == "swarm" or attrs.get("Driver") == "overlay"


class SwarmScheduler(TaskViews, DataServices, RouteFollower, OneOffs):
    """The swarm behind the scheduler seam (hooks.scheduler): the deploy's
    calls here, the rest from its parts (tasks, services, routes, oneoff)."""

    kind = "swarm"
    has_nodes = True
    needs_registry = True
    heals_itself = True  # the swarm replaces a task failing its HEALTHCHECK
    routes_follow_tasks = True
    probes_deploys = False  # a task is running once Docker's check passed
    release_wait = 60.0  # a swarm lets go of removed tasks' endpoints and mounts a moment later

    def __init__(self, engine: Engine, settings: Settings, app_node=None):
        self.engine = engine
        self.client = engine.client
        self.api = engine.client.api
        self.settings = settings
        # app -> the node holding its named volumes (None: this manager's, where
        # storage:mount made them)
        self.app_node = app_node or (lambda app: None)
        self._pushed: dict[str, str] = {}  # local image id -> pinned registry reference
        self._node_addrs: dict[str, str] = {}
        self._node_names: dict[str, str] = {}
        self._task_addresses: dict[str, str] = {}  # task id -> host:port it answers on
        self._node_id: str | None = None
        self._draining: set[str] = set()  # node ids a nodes:drain is taking out
        self._stopping: set[str] = set()  # task containers told to stop (events), not yet gone
        self._wake = threading.Event()
        self.boot = secrets.token_hex(6)  # this run of gitd, on its one-off tasks
        self._routes = TaskFiles(settings)

    @property
    def routes(self) -> TaskFiles:
        return self._routes

    def image_for(self, spec: dict) -> str:
        labels = spec["labels"]
        tag = f"v{labels.get(LABEL_RELEASE, '0')}"
        if labels.get(LABEL_COMPONENT):
            tag += f"-{labels[LABEL_COMPONENT]}"
        return self.pushed(spec["image"], labels.get(LABEL_APP, "app"), tag)

    def pushed(self, image: str, repository: str, tag: str) -> str:
        """`image` (local) pushed to the registry as gitd/REPOSITORY:TAG, by digest."""
        if image not in self._pushed:
            self._pushed[image] = registry.push_image(
                self.engine, registry.registry_host(self.settings), image, repository, tag)
        return self._pushed[image]

    def pinned(self, specs: list[dict]) -> list[dict]:
        """An app's tasks mounting a named volume run on the node holding it."""
        if not has_volume(specs[0]):
            return specs
        node = self.app_node(specs[0]["labels"].get(LABEL_APP, "")) or self.node_name
        return [pinned_to(spec, node) for spec in specs]

    def prepare(self, network: str, app: str) -> None:
        self.ensure_network(network, {LABEL_APP: app})

    def ensure_network(self, name: str, labels: dict | None = None):
        """An attachable overlay network: tasks on any node join it, and so can
        a one-off container. A local network of that name (left by scheduler =
        "docker") is refused, not joined."""
        network = self.engine.ensure_network(name, labels=labels, driver="overlay",
                                             attachable=True)
        if not is_swarm_network(network.attrs or {}):
            raise GitdError(f"network {name} is a local {network.attrs.get('Driver')} network "
                            '(left by scheduler = "docker"?): the swarm needs an overlay one; '
                            "docs/scale-out.md says how to move to the swarm")
        return network

    def start(self, specs: list[dict], progress) -> list[SwarmUnit]:
        units: list[SwarmUnit] = []
        try:
            for group in group_by_process(specs):
                group = self.pinned(group)
                image = self.image_for(group[0])
                arguments = service_spec(group, image)
                progress.line(f"starting {arguments['name']} ({len(group)} "
                              f"{'replica' if len(group) == 1 else 'replicas'})")
                units.append(self._create(arguments))
        except BaseException:
            self.remove(units)
            raise
        return units

    def _create(self, arguments: dict) -> SwarmUnit:
        try:
            created = self.api.create_service(**arguments)
            return SwarmUnit.of(self.client.services.get(created["ID"]))
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot create swarm service {arguments['name']}: {_explain(exc)}")

    def wait_ready(self, unit: SwarmUnit, check: checks.HealthCheck, progress) -> None:
        """Every replica running: with a health check the swarm holds a task
        in "starting" until it passes, and replaces one that fails it."""
        label = unit_label(unit)
        gated = unit.labels.get(LABEL_PROCESS) == "web" and not check.disabled
        if gated:
            progress.line(f"waiting for {label} ({unit.replicas} on the swarm) to pass "
                          f"{check.describe()}")
        # the first start on a node pulls the image from the registry
        allowed = max(check.wait, 5.0) + self.settings.deploy_timeout
        deadline = time.monotonic() + allowed
        settled_since = None
        seen = set()
        while True:
            tasks = self.tasks(unit)
            for task in tasks:
                self._report_task(task, label, seen, progress)
            failed = [t for t in tasks if t["Status"]["State"] in FAILED_STATES
                      or (t["Status"]["State"] in ("complete", "shutdown")
                          and t.get("DesiredState") == "running")]
            if failed:
                status = failed[0]["Status"]
                raise DeployError(f"{label} failed on the swarm: "
                                  f"{status.get('Err') or status.get('Message') or status['State']}")
            running = [t for t in tasks if t["Status"]["State"] == "running"
                       and t.get("DesiredState") == "running"]
            if len(running) >= unit.replicas:
                settled_since = settled_since or time.monotonic()
                # without a check, a task must at least stay up a moment
                if gated or time.monotonic() - settled_since >= min(2.0, check.wait):
                    progress.line(f"{label} is {'healthy' if gated else 'running'} "
                                  f"({len(running)} of {unit.replicas})")
                    return
            else:
                settled_since = None
            if time.monotonic() > deadline:
                states = ", ".join(sorted(t["Status"]["State"] for t in tasks)) or "no tasks"
                raise DeployError(f"{label} not ready on the swarm after "
                                  f"{allowed:g}s ({states})")
            time.sleep(0.25)

    def _report_task(self, task: dict, label: str, seen: set, progress) -> None:
        status = task["Status"]
        key = (task["ID"], status["State"])
        if key in seen or status["State"] in ("new", "allocated", "pending", "assigned",
                                               "accepted", "ready"):
            return
        seen.add(key)
        node = self.node_addr(task.get("NodeID", ""))
        detail = status.get("Err") or ""
        progress.line(f"       {label}.{task.get('Slot', '?')} on {node}: {status['State']}"
                      + (f" ({detail})" if detail else ""))

    def node_addr(self, node_id: str) -> str:
        if node_id and node_id not in self._node_addrs:
            try:
                node = self.client.nodes.get(node_id)
                self._node_addrs[node_id] = (node.attrs.get("Status") or {}).get("Addr") or ""
            except docker.errors.DockerException:
                return ""
        return self._node_addrs.get(node_id, "")

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            self._node_id = (self.client.info().get("Swarm") or {}).get("NodeID") or ""
        return self._node_id

    @property
    def node_name(self) -> str:
        """This manager's hostname, as the swarm knows it."""
        return self.node_hostname(self.node_id)

    def node_hostname(self, node_id: str) -> str:
        if node_id and node_id not in self._node_names:
            try:
                attrs = self.client.nodes.get(node_id).attrs
            except docker.errors.DockerException as exc:
                raise GitdError(f"cannot inspect swarm node {node_id}: {_explain(exc)}")
            self._node_names[node_id] = (attrs.get("Description") or {}).get("Hostname") or node_id
        return self._node_names.get(node_id, "")

    def units(self, app: str | None = None, **labels) -> list[SwarmUnit]:
        wanted = {LABEL_INSTANCE: self.settings.instance, LABEL_APP: app, **labels}
        filters = {"label": [f"{k}={v}" for k, v in wanted.items() if v is not None]}
        try:
            return [SwarmUnit.of(s) for s in self.client.services.list(filters=filters)]
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot list swarm services: {_explain(exc)}")

    def remove(self, units: list, timeout: int = 0) -> None:
        """Take the routes away, remove the services, and wait (bounded) for
        their containers on this node to be gone. The swarm stops a task with
        SIGTERM, then SIGKILL after the grace period set at create. Only
        web units take routes with them: a release task (a postdeploy
        script's) carries the live deploy's seq too."""
        for route_key, seq in web_deploys(units):
            self.routes.unpublish(route_key, seq)
        for unit in units:
            self._remove_service(unit)
        for unit in units:
            self._wait_gone(unit, timeout + 15)

    def remove_app(self, app: str, out) -> None:
        units = self.units(app)
        self.remove(units)
        out(f"removed {len(units)} swarm service(s)")

    def reconcile(self, live: dict[str, int | None], data_leftovers) -> list[str]:
        """The swarm keeps the services running while gitd is down. What a
        stop cut short: the live deploy's services stay (`live`: app -> its
        live seq); those of any other deploy go (an old one not yet retired,
        or a new one never made live), their route files with them; so do
        `data_leftovers()`, services' units that are no service's live one."""
        notes = []
        leftovers = [u for u in self.units(**{LABEL_ROLE: "service"})
                     if live.get(u.labels.get(LABEL_APP)) != u.seq]
        self.remove(leftovers, timeout=self.settings.stop_timeout)
        for unit in leftovers:
            notes.append(f"removed swarm service {unit.name} (not the live deploy)")
        stale = data_leftovers()
        self.remove(stale, timeout=30)
        for unit in stale:
            notes.append(f"removed swarm service {unit.name} (no service's live one)")
        for name in self.remove_orphan_tasks():
            notes.append(f"removed container {name} (its swarm task's service is gone)")
        self.sync_routes()
        return notes

    def _remove_service(self, unit: SwarmUnit) -> None:
        try:
            self.api.remove_service(unit.id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise GitdError(f"cannot remove swarm service {unit.name}: {_explain(exc)}")

    def remove_jobs(self, units: list[SwarmUnit]) -> None:
        """Remove one-off tasks (jobs) with their containers on this node:
        Docker 20.10's swarm leaves a removed job's containers be, running
        or exited (a running one keeps its networks in use)."""
        for unit in units:
            self._remove_service(unit)
            filters = {"label": [f"com.docker.swarm.service.id={unit.id}"]}
            for container in self.client.containers.list(all=True, filters=filters,
                                                         ignore_removed=True):
                self.engine.remove(container)
        self.remove(units)

    def remove_orphan_tasks(self) -> list[str]:
        """Task containers on this node whose swarm service is gone (a job's,
        which Docker 20.10 leaves behind, when gitd stopped mid-run): removed.
        Returns their names."""
        live = {u.id for u in self.units()}
        filters = {"label": [f"{LABEL_INSTANCE}={self.settings.instance}",
                             f"{LABEL_ROLE}={TASK_ROLE}"]}
        removed = []
        for container in self.client.containers.list(all=True, filters=filters,
                                                     ignore_removed=True):
            if container.labels.get("com.docker.swarm.service.id") not in live:
                self.engine.remove(container)
                removed.append(container.name)
        return removed

    def _wait_gone(self, unit: SwarmUnit, timeout: float) -> None:
        filters = {"label": [f"com.docker.swarm.service.id={unit.id}"]}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.client.containers.list(all=True, filters=filters, ignore_removed=True):
                return
            time.sleep(0.2)

    def run_task(self, spec: dict, on_line, timeout: float) -> tuple[int | None, bool]:
        """A one-off task (a replicated job) run to its end, its output
        streamed from the swarm's service log."""
        [spec] = self.pinned([spec])
        unit = self._create(job_spec(spec, self.image_for(spec)))
        log = _FollowedLog(self.api, unit.id, on_line)
        threading.Thread(target=log.follow, daemon=True, name=f"task-{unit.name}").start()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ended = [t for t in self.tasks(unit)
                         if t["Status"]["State"] in ("complete",) + FAILED_STATES]
                if ended:
                    status = ended[0]["Status"]
                    log.finish()
                    code = (status.get("ContainerStatus") or {}).get("ExitCode")
                    if status["State"] in FAILED_STATES and code in (None, 0):
                        on_line(f"task {status['State']}: {status.get('Err') or ''}".rstrip())
                        code = 1
                    return code, False
                time.sleep(0.25)
            return None, True
        finally:
            self.remove_jobs([unit])

    def stop_units(self, units: list[SwarmUnit], timeout: int) -> int:
        """Scale each service to 0, its replicas kept in a label for
        start_units, and wait (bounded) until its tasks are down. The swarm
        stops a task with SIGTERM, then SIGKILL after the grace period set at
        create. The route file stays, with no server: Traefik answers 503
        (a stopped app), and never a port another task may get next.
        Returns how many replicas were stopped."""
        stopped = 0
        for unit in units:
            if unit.replicas:
                stopped += unit.replicas
                self._scale(unit, 0, {LABEL_STOPPED: str(unit.replicas)})
        self.refresh_routes(units)
        self._wait_tasks(units, lambda unit, tasks: all(
            t["Status"]["State"] in ENDED_STATES for t in tasks), timeout + 15)
        return stopped

    def start_units(self, units: list[SwarmUnit]) -> int:
        """Scale the services ps:stop stopped back to their replicas, wait
        (bounded) for their tasks, and route to them. Returns how many."""
        started = []
        for unit in units:
            recorded = unit.labels.get(LABEL_STOPPED, "")
            if unit.replicas == 0 and recorded.isdigit() and int(recorded) > 0:
                self._scale(unit, int(recorded), {LABEL_STOPPED: None})
                started.append(unit)
        if started:
            self._wait_tasks(started, lambda unit, tasks: sum(
                t["Status"]["State"] == "running" and t.get("DesiredState") == "running"
                for t in tasks) >= unit.replicas, self.settings.deploy_timeout)
            self.refresh_routes(started)
        return sum(unit.replicas for unit in started)

    def _scale(self, unit: SwarmUnit, replicas: int, labels: dict) -> None:
        """Set a service's replicas (and labels: None removes one); the rest
        of its spec as it is. Retried when another update came in between."""
        for attempt in range(3):
            try:
                current = self.api.inspect_service(unit.id)
                spec_labels = {**(current["Spec"].get("Labels") or {}), **labels}
                self.api.update_service(
                    unit.id, current["Version"]["Index"], fetch_current_spec=True,
                    mode={"Replicated": {"Replicas": replicas}},
                    labels={k: v for k, v in spec_labels.items() if v is not None})
                unit.labels = {k: v for k, v in spec_labels.items() if v is not None}
                unit.replicas = replicas
                return
            except docker.errors.APIError as exc:
                if "out of sequence" in _explain(exc) and attempt < 2:
                    continue
                raise GitdError(f"cannot scale swarm service {unit.name}: {_explain(exc)}")

    def _wait_tasks(self, units: list[SwarmUnit], done, timeout: float) -> bool:
        """Wait (bounded) until done(unit, its tasks) for every unit."""
        deadline = time.monotonic() + timeout
        while True:
            if all(done(unit, self.tasks(unit)) for unit in units):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)

"""Where a service runs: the seam between the lifecycle (gitd/services/lifecycle.py)
and Docker.

`ContainerRuntime` (scheduler = "docker") runs a service as one container on
this host; `SwarmRuntime` (scheduler = "swarm") as a swarm service of one
replica pinned to the node holding its volume. The lifecycle holds a
*handle* (a container, or a hooks.swarm.SwarmUnit) and never asks which:

    make(svc, emit, staging) -> handle     handle(svc, required) -> handle | None
    exec_container(handle, svc)            restart(handle, container)
    wait_ready(handle)   discard(handle)   promote(old, new, staged, emit)
    unmake(svc, emit)    expose(svc, emit) status(svc)   logs(svc, lines, follow)

Backups, restores and upgrades run commands in the service's container
(`exec_container`): on a swarm that works only when its task runs on this
node; elsewhere it fails and says so.
"""

from __future__ import annotations

import re
import time

from gitd.core.errors import GitdError
from gitd.services import kind as kind_of
from gitd.services.base import (container_name, network_name, relay_name,
                                swarm_service_name)
from hooks.specs import relay_spec, service_spec
from hooks import checks
from hooks.engine import LABEL_SERVICE
from hooks.swarm import data_service_spec

HEALTH_WAIT = 120.0
LET_GO_WAIT = 60.0  # seconds for a removed service's task to let go of its network and volume


def wait_healthy(engine, container, timeout: float = HEALTH_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not engine.reload(container):
            raise GitdError(f"{container.name} disappeared while starting")
        state = container.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        if state.get("Status") == "running" and health == "healthy":
            return
        if time.monotonic() > deadline:
            tail = " | ".join(engine.tail_logs(container, 5))
            raise GitdError(f"{container.name} is not healthy after {timeout:g}s "
                            f"(state {state.get('Status')}, health {health}): {tail}")
        time.sleep(0.3)


def stale_units(units: list, services: list, instance: str) -> list:
    """Of this gitd's swarm services, those of a service it does not run
    there: the service is gone, or the unit is not on its live volume."""
    live = {swarm_service_name(instance, s.name, s.volume) for s in services}
    return [u for u in units if u.labels.get(LABEL_SERVICE) and u.name not in live]


def container_health(container) -> str | None:
    return ((container.attrs.get("State") or {}).get("Health") or {}).get("Status")


class ContainerRuntime:
    """A service as one container on this host (scheduler = "docker")."""

    def __init__(self, engine, settings):
        self.engine = engine
        self.settings = settings

    def make(self, svc, emit, staging: bool = False):
        kind = kind_of(svc.kind)
        labels = {LABEL_SERVICE: svc.name}
        self.engine.ensure_network(network_name(self.settings.instance, svc.name), labels)
        self.engine.ensure_volume(svc.volume, labels)
        name = container_name(self.settings.instance, svc.name) + ("-upgrade" if staging else "")
        container = self.engine.run(service_spec(self.settings, kind, svc, name=name))
        emit(f"started {container.name} ({svc.image}); waiting until it is healthy")
        try:
            wait_healthy(self.engine, container)
        except BaseException:
            if staging:
                self.engine.remove(container)
            raise
        return container

    def handle(self, svc, required: bool = True):
        container = self.engine.container(container_name(self.settings.instance, svc.name))
        if container is None and required:
            raise GitdError(f"the container of {svc.name} is missing (services:info {svc.name})")
        return container

    def exists(self, svc) -> bool:
        return self.handle(svc, required=False) is not None

    def exec_container(self, container, svc):
        """The service's container, started and healthy."""
        if container.status != "running":
            self.engine.start(container)
        wait_healthy(self.engine, container)
        return container

    def restart(self, container, stopped) -> None:
        self.engine.start(stopped)

    def wait_ready(self, container) -> None:
        wait_healthy(self.engine, container)

    def discard(self, container) -> None:
        self.engine.remove(container)

    def promote(self, old_svc, new_svc, staged, emit) -> None:
        old = self.handle(old_svc)
        self.engine.stop(old, timeout=30)
        self.engine.remove(old)
        staged.rename(container_name(self.settings.instance, new_svc.name))

    def unmake(self, svc, emit) -> None:
        container = self.handle(svc, required=False)
        if container is not None:
            self.engine.remove(container, timeout=30)
        self.engine.remove_network(network_name(self.settings.instance, svc.name))
        self.engine.remove_volume(svc.volume)

    def expose(self, svc, emit) -> None:
        """A new container with the stored settings on the same volume (ports
        cannot change on a running container)."""
        old = self.handle(svc)
        self.engine.stop(old, timeout=30)
        self.engine.remove(old)
        self.make(svc, emit)

    def status(self, svc) -> dict:
        container = self.handle(svc, required=False)
        if container is None:
            return {"state": "missing", "health": None, "node": None, "exposed": None,
                    "container": None}
        return {"state": container.status, "health": container_health(container), "node": None,
                "exposed": self.engine.host_port(container, kind_of(svc.kind).port),
                "container": container}

    def logs(self, svc, lines: int, follow: bool):
        container = self.handle(svc)
        if follow:
            return container.logs(stdout=True, stderr=True, tail=lines, stream=True, follow=True)
        raw = container.logs(stdout=True, stderr=True, tail=lines) if lines else b""
        return [raw] if raw else []


class SwarmRuntime:
    """A service as a swarm service (scheduler = "swarm"): one replica pinned
    to `svc.node`, on an attachable overlay network where linked apps' tasks
    (on any node) and one-off containers reach it by its host name."""

    def __init__(self, engine, settings, scheduler):
        self.engine = engine
        self.settings = settings
        self.scheduler = scheduler  # hooks.swarm.SwarmScheduler: its Docker calls

    def node_of(self, svc) -> str:
        return svc.node or self.scheduler.node_name

    def image(self, svc) -> str:
        """The service's (local) image through the registry, by digest: every
        node can pull it."""
        image_id = self.engine.ensure_image(svc.image)["Id"]
        tag = f"{re.sub(r'[^A-Za-z0-9.]', '_', svc.version)}-{image_id.split(':')[-1][:12]}"
        return self.scheduler.pushed(image_id, f"service-{svc.kind}", tag)

    def make(self, svc, emit, staging: bool = False):
        kind = kind_of(svc.kind)
        labels = {LABEL_SERVICE: svc.name}
        network = network_name(self.settings.instance, svc.name)
        self.scheduler.ensure_network(network, labels)
        node = self.node_of(svc)
        if node == self.scheduler.node_name:  # elsewhere the swarm makes it, labelled
            self.engine.ensure_volume(svc.volume, labels)
        name = swarm_service_name(self.settings.instance, svc.name, svc.volume, staging)
        alias = None if staging else container_name(self.settings.instance, svc.name)
        unit = self.scheduler.create_unit(data_service_spec(
            service_spec(self.settings, kind, svc), self.image(svc), name, node, alias))
        emit(f"started swarm service {unit.name} on node {node} ({svc.image}); "
             "waiting until it is healthy")
        try:
            self.wait_ready(unit)
        except BaseException:
            self.scheduler.remove([unit], timeout=30)
            raise
        return unit

    def handle(self, svc, required: bool = True):
        unit = self.scheduler.find(swarm_service_name(self.settings.instance, svc.name,
                                                      svc.volume))
        if unit is None and required:
            raise GitdError(f"the swarm service of {svc.name} is missing "
                            f"(services:info {svc.name})")
        return unit

    def exists(self, svc) -> bool:
        unit = self.handle(svc, required=False)
        task = self.scheduler.current_task(unit) if unit else None
        return task is not None and task["Status"]["State"] == "running"

    def wait_ready(self, unit, timeout: float = HEALTH_WAIT, not_container: str = "") -> dict:
        """Its task running: the swarm holds a task in "starting" until its
        health check passes. `not_container`: wait for a replacement."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.scheduler.current_task(unit)
            status = (task or {}).get("Status") or {}
            container_id = (status.get("ContainerStatus") or {}).get("ContainerID", "")
            if status.get("State") == "running" and container_id != not_container:
                return task
            if time.monotonic() > deadline:
                tail = " | ".join(self.scheduler.tail_logs(unit, 5))
                state, why = status.get("State", "none"), status.get("Err") or ""
                raise GitdError(f"{unit.name} is not running after {timeout:g}s "
                                f"(task {state}: {why}): {tail}")
            time.sleep(0.3)

    def exec_container(self, unit, svc):
        """The task's container, healthy, when it runs on this node. gitd talks
        to this node's engine only: a task on another node is out of reach."""
        task = self.wait_ready(unit)
        container = self.scheduler.task_container(task)
        if container is None:
            node = self.scheduler.node_hostname(task.get("NodeID", ""))
            raise GitdError(
                f"{svc.name} runs on node {node}, not on this manager "
                f"({self.scheduler.node_name}): gitd runs backups, restores and upgrades "
                "only in a service on its own node (docs/scale-out.md, services)")
        wait_healthy(self.engine, container)
        return container

    def restart(self, unit, stopped) -> None:
        """The server stopped itself (a Redis restore): the swarm starts a new
        task on the same volume; wait for it."""
        self.wait_ready(unit, not_container=stopped.id)

    def discard(self, unit) -> None:
        self.scheduler.remove([unit], timeout=30)

    def promote(self, old_svc, new_svc, staged, emit) -> None:
        """A swarm service cannot be renamed: the old one and the staged one
        go, and the service starts again on the new volume under its host
        name. If it cannot, the old one comes back on its untouched volume."""
        old = self.handle(old_svc)
        self.scheduler.remove([old, staged], timeout=30)
        try:
            self.make(new_svc, emit)
        except BaseException:
            emit(f"{new_svc.name} {new_svc.version} did not start: starting "
                 f"{old_svc.version} again on its volume")
            self.make(old_svc, emit)
            self.engine.remove_volume(new_svc.volume)
            raise

    def leftovers(self, services: list) -> list:
        """Swarm services of no service, or not its live one (the staged one
        of an upgrade a stop cut short): reconcile removes them, as it does
        such containers on one host. Their volumes stay."""
        return stale_units(self.scheduler.units(), services, self.settings.instance)

    def unmake(self, svc, emit) -> None:
        self.scheduler.remove(self.scheduler.data_units(svc.name), timeout=30)
        relay = self.engine.container(relay_name(self.settings.instance, svc.name))
        if relay is not None:
            self.engine.remove(relay)
        self.engine.remove_network(network_name(self.settings.instance, svc.name),
                                   wait=LET_GO_WAIT)
        node = self.node_of(svc)
        if node == self.scheduler.node_name:
            self.engine.remove_volume(svc.volume, wait=LET_GO_WAIT)
        else:
            emit(f"its volume {svc.volume} stays on node {node} "
                 f"(there: docker volume rm {svc.volume})")

    def expose(self, svc, emit) -> None:
        """A swarm publishes a port on every address of its node (there is no
        host IP for a swarm port): a database would face the world. Instead a
        relay container on this manager joins the service's network and
        publishes the port on 127.0.0.1 only. The service itself is untouched."""
        relay = self.engine.container(relay_name(self.settings.instance, svc.name))
        if relay is not None:
            self.engine.remove(relay)
        if svc.exposed_port is None:
            return
        probe = checks.find_probe(self.settings.probe_binary)
        if not probe:
            raise GitdError("services:expose on a swarm relays through a static busybox: none "
                            "found (apt-get install busybox-static, or set probe_binary)")
        self.engine.run(relay_spec(self.settings, kind_of(svc.kind), svc, probe))
        emit(f"relaying {svc.name} to 127.0.0.1 from this manager")

    def status(self, svc) -> dict:
        kind = kind_of(svc.kind)
        relay = self.engine.container(relay_name(self.settings.instance, svc.name))
        exposed = self.engine.host_port(relay, kind.port) if relay is not None else None
        unit = self.handle(svc, required=False)
        task = self.scheduler.current_task(unit) if unit else None
        if task is None:
            return {"state": "missing" if unit is None else "no task", "health": None,
                    "node": svc.node, "exposed": exposed, "container": None}
        state = task["Status"]["State"]
        container = self.scheduler.task_container(task) if state == "running" else None
        # the swarm calls a task running once its health check passed
        health = container_health(container) if container else (
            "healthy" if state == "running" else None)
        return {"state": state, "health": health, "exposed": exposed, "container": container,
                "node": self.scheduler.node_hostname(task.get("NodeID", "")) or svc.node}

    def logs(self, svc, lines: int, follow: bool):
        if not lines and not follow:
            return []
        return self.scheduler.service_log(self.handle(svc), lines, follow)

"""Services with data (gitd.services: Postgres, Redis) as swarm services:
their spec (one replica pinned to the node holding its volume) and the
calls gitd.services.runtime.SwarmRuntime makes (DataServices)."""

from __future__ import annotations

import docker
import docker.errors

from gitd.core.errors import GitdError
from hooks.engine import LABEL_INSTANCE, LABEL_SERVICE, _explain
from hooks.swarm.specs import SwarmUnit, escape_template, pinned_to, task_template
from hooks.swarm.tasks import current_task

DATA_SPEC_KEYS = {"image", "name", "hostname", "environment", "command", "labels",
                  "restart_policy", "mounts", "networks", "healthcheck", "log_config",
                  "stop_signal", "ports"}


DATA_STOP_GRACE = 30  # seconds for a database to shut down cleanly (docker mode's stop timeout)


def data_service_spec(spec: dict, image: str, name: str, node: str, alias: str | None) -> dict:
    """A service's container spec (gitd.services.specs.service_spec) as a
    swarm service (create_service arguments): one replica pinned to `node`,
    where its volume is, restarted whatever ends it, reached by `alias` on
    its network (no alias while an upgrade loads it), and never two tasks on
    one volume (stop-first). A swarm publishes ports on every address of a
    node, so `ports` are left out: services:expose relays them on 127.0.0.1."""
    unknown = set(spec) - DATA_SPEC_KEYS
    if unknown:
        raise GitdError(f"the swarm scheduler cannot run {', '.join(sorted(unknown))} yet")
    shaped = {k: v for k, v in spec.items() if k != "ports"}
    shaped.update(network_aliases=[alias] if alias else [], stop_timeout=DATA_STOP_GRACE)
    template = task_template(pinned_to(shaped, node), image, "", "any")
    container = template["ContainerSpec"]
    # no DYNO: a database is not a process of an app
    container["Env"] = [f"{k}={escape_template(v)}" for k, v in
                        (spec.get("environment") or {}).items()]
    container["Hostname"] = spec["hostname"]
    owned = {k: v for k, v in spec["labels"].items() if k.startswith("gitd.")}
    for mount in container["Mounts"]:
        if mount["Type"] == "volume":  # made by the swarm on its node: labelled like ours
            mount["VolumeOptions"] = {"Labels": owned}
    return {
        "name": name,
        "labels": dict(spec["labels"]),
        "task_template": template,
        "mode": {"Replicated": {"Replicas": 1}},
        "endpoint_spec": {"Mode": "dnsrr"},
        "update_config": {"Parallelism": 1, "Order": "stop-first"},
    }


class DataServices:
    """Part of SwarmScheduler (hooks.swarm.scheduler)."""

    def create_unit(self, arguments: dict) -> SwarmUnit:
        return self._create(arguments)

    def find(self, name: str) -> SwarmUnit | None:
        """This gitd's service named exactly `name` (the API also takes an id
        or a prefix of one: the name and the instance label are checked)."""
        try:
            found = self.client.services.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot inspect swarm service {name}: {_explain(exc)}")
        unit = SwarmUnit.of(found)
        if unit.name != name or unit.labels.get(LABEL_INSTANCE) != self.settings.instance:
            return None
        return unit

    def data_units(self, service: str) -> list[SwarmUnit]:
        """Every swarm service of a gitd service (its live one, an upgrade's)."""
        return self.units(**{LABEL_SERVICE: service})

    def current_task(self, unit: SwarmUnit) -> dict | None:
        return current_task(self.tasks(unit))

    def task_container(self, task: dict):
        """A task's container when it is on this node, else None."""
        container_id = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
        if not container_id or task.get("NodeID") != self.node_id:
            return None
        return self.engine.container(container_id)

    def service_log(self, unit: SwarmUnit, lines: int, follow: bool):
        """The service's log (its tasks' on every node) as chunks of bytes."""
        try:
            raw = self.api.service_logs(unit.id, stdout=True, stderr=True, tail=lines,
                                        follow=follow)
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot read the log of {unit.name}: {_explain(exc)}")
        return [raw] if isinstance(raw, bytes) else raw

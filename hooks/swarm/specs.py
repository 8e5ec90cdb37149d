"""Swarm services as plain data: gitd's container specs translated into
create_service arguments (app processes, one-off jobs), and SwarmUnit, a
service gitd made."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from gitd.core.errors import GitdError
from hooks import checks
from hooks.engine import LABEL_PROCESS, LABEL_ROLE, LABEL_SEQ
from hooks.specs import route_key_of

SERVICE_NAME_MAX = 63  # a DNS label: names resolve on the overlay networks


TASK_ROLE = "swarm-task"  # what a task's container is labelled (the service has the role)


LABEL_BOOT = "gitd.boot"  # on a one-off task: which run of gitd made it


SPEC_KEYS = {"image", "name", "command", "environment", "labels", "restart_policy", "init",
             "log_config", "stop_signal", "networks", "network_aliases", "ports", "healthcheck",
             "mounts", "mem_limit", "memswap_limit", "nano_cpus", "pids_limit", "constraints",
             "stop_timeout"}


@dataclass
class SwarmUnit:
    """A swarm service gitd made: what a deploy waits on, routes and retires."""
    id: str
    name: str
    labels: dict[str, str]
    replicas: int = 1
    attrs: dict = field(default_factory=dict)

    @property
    def route_key(self) -> str:
        return route_key_of(self.labels)

    @property
    def seq(self) -> int:
        value = self.labels.get(LABEL_SEQ, "")
        return int(value) if value.isdigit() else -1

    @classmethod
    def of(cls, service) -> SwarmUnit:
        spec = service.attrs.get("Spec") or {}
        replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
        return cls(service.id, spec.get("Name", service.name), dict(spec.get("Labels") or {}),
                   replicas, service.attrs)


def service_name(container_name: str) -> str:
    """`gitd-<instance>.<app>.<process>.<index>.s<seq>` -> the service's name,
    `gitd-<instance>_<app>_<process>_s<seq>`: without the index (one service
    holds every replica), and a DNS name component as the swarm wants. Names
    past a DNS label's length keep their start and a hash of the whole."""
    parts = container_name.split(".")
    name = "_".join(parts[:-2] + parts[-1:]) if len(parts) >= 5 else container_name.replace(".", "_")
    if len(name) <= SERVICE_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:SERVICE_NAME_MAX - 11]}-{digest}"


def escape_template(value: str) -> str:
    """Swarm expands Go templates in a service's environment: a config value
    holding `{{` is kept as written."""
    return value.replace("{{", '{{"{{"}}')


def task_environment(env: dict[str, str], process: str, dyno: str | None = None) -> list[str]:
    """KEY=VALUE for a task; DYNO is `<process>.<slot>`, or `dyno` as given
    (a one-off task has no slot)."""
    values = [f"{k}={escape_template(v)}" for k, v in env.items() if k != "DYNO"]
    if dyno:
        return values + [f"DYNO={escape_template(dyno)}"]
    return values + [f"DYNO={process}.{{{{.Task.Slot}}}}"]


def resources(spec: dict) -> dict:
    limits = {}
    if spec.get("mem_limit"):
        limits["MemoryBytes"] = int(spec["mem_limit"])
    if spec.get("nano_cpus"):
        limits["NanoCPUs"] = int(spec["nano_cpus"])
    if spec.get("pids_limit"):
        limits["Pids"] = int(spec["pids_limit"])
    return {"Limits": limits} if limits else {}


def healthcheck(spec: dict) -> dict | None:
    check = spec.get("healthcheck")
    if not check:
        return None
    if check["test"] == ["NONE"]:  # the image's own check switched off
        return {"Test": ["NONE"]}
    return {"Test": check["test"], "Interval": check["interval"], "Timeout": check["timeout"],
            "Retries": check["retries"], "StartPeriod": check["start_period"]}


def mounts(spec: dict) -> list[dict]:
    return [_mount(m) for m in spec.get("mounts", [])]


def _mount(m: dict) -> dict:
    mount = {"Type": m["type"], "Source": m["source"], "Target": m["target"],
             "ReadOnly": bool(m.get("read_only"))}
    if m.get("no_copy"):  # (hooks.deploy: the volume task gave it its owner)
        mount["VolumeOptions"] = {"NoCopy": True}
    return mount


def task_template(spec: dict, image: str, process: str, restart: str,
                  dyno: str | None = None) -> dict:
    labels = spec["labels"]
    container_labels = {k: v for k, v in labels.items() if k.startswith("gitd.")}
    container_labels[LABEL_ROLE] = TASK_ROLE
    container = {
        "Image": image,
        "Env": task_environment(spec.get("environment") or {}, process, dyno),
        "Labels": container_labels,
        "Init": bool(spec.get("init")),
        "StopSignal": spec.get("stop_signal", "SIGTERM"),
        "Mounts": mounts(spec),
    }
    if spec.get("command"):
        container["Args"] = list(spec["command"])  # docker run's CMD; Command is the entrypoint
    if spec.get("entrypoint"):
        container["Command"] = list(spec["entrypoint"])
    if spec.get("user"):
        container["User"] = spec["user"]
    if spec.get("stop_timeout") is not None:
        container["StopGracePeriod"] = int(spec["stop_timeout"]) * 1_000_000_000
    check = healthcheck(spec)
    if check:
        container["Healthcheck"] = check
    aliases = spec.get("network_aliases") or []
    networks = [{"Target": name, "Aliases": aliases if i == 0 else []}
                for i, name in enumerate(spec.get("networks") or [])]
    template = {
        "ContainerSpec": container,
        "Resources": resources(spec),
        "RestartPolicy": {"Condition": restart, "Delay": 1_000_000_000},
        "Networks": networks,
    }
    log_config = spec.get("log_config")
    if log_config:
        template["LogDriver"] = {"Name": log_config["Type"], "Options": log_config.get("Config", {})}
    if spec.get("constraints"):
        template["Placement"] = {"Constraints": list(spec["constraints"])}
    return template


def service_spec(specs: list[dict], image: str) -> dict:
    """The swarm service (create_service arguments) for the container specs
    of one process type: one service, `len(specs)` replicas."""
    spec = specs[0]
    unknown = set(spec) - SPEC_KEYS
    if unknown:  # a new container setting must be mapped here, not dropped
        raise GitdError(f"the swarm scheduler cannot run {', '.join(sorted(unknown))} yet")
    # the service keeps the traefik labels: no provider reads service labels
    # (routes go through route files), and they say what the routes were
    labels = dict(spec["labels"])
    process = labels.get(LABEL_PROCESS, "web")
    ports = [{"Protocol": "tcp", "TargetPort": int(p.split("/")[0]), "PublishMode": "host"}
             for p in (spec.get("ports") or {})]
    return {
        "name": service_name(spec["name"]),
        "labels": labels,
        "task_template": task_template(spec, image, process, "any"),
        "mode": {"Replicated": {"Replicas": len(specs)}},
        "endpoint_spec": {"Mode": "dnsrr", "Ports": ports},
        # in-place updates (never made by a deploy) start the new task first
        # and roll back on failure
        "update_config": {"Parallelism": 1, "Order": "start-first", "FailureAction": "rollback"},
    }


def job_spec(spec: dict, image: str) -> dict:
    """A one-off task (the release command, `run`): runs once, never
    restarted. Its DYNO is the spec's (`release.1`, `run.<id>`)."""
    labels = dict(spec["labels"])
    process = labels.get(LABEL_PROCESS, "release")
    dyno = (spec.get("environment") or {}).get("DYNO")
    return {
        "name": service_name(spec["name"]),
        "labels": labels,
        "task_template": task_template(spec, image, process, "none", dyno),
        "mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
        "endpoint_spec": {"Mode": "dnsrr"},
    }


def node_constraint(node: str) -> str:
    """Pinned by hostname: a node that leaves and joins again gets a new id,
    while its volumes are still on that machine."""
    return f"node.hostname=={node}"


def pinned_to(spec: dict, node: str) -> dict:
    return {**spec, "constraints": list(spec.get("constraints") or []) + [node_constraint(node)]}


def has_volume(spec: dict) -> bool:
    """A named volume lives on one node: a task mounting one must run there."""
    return any(m.get("type") == "volume" for m in spec.get("mounts") or [])


def oneoff_job_spec(spec: dict, image: str, node_id: str, probe: str, boot: str) -> dict:
    """`run` on the swarm: a one-off task (a replicated job) pinned to this
    node, whose container only waits (a static busybox's sleep: the image
    may have none) while gitd runs the command in it with exec. An exec's
    stdin ends when the client's does; a swarm container's own stdin never
    ends (swarm has no StdinOnce), and an exec started by gitd loses no
    output. `boot` tells this gitd's one-off tasks from a previous run's."""
    base = {k: v for k, v in spec.items() if k not in ("tty", "stdin_open", "command")}
    base["labels"] = {**spec["labels"], LABEL_BOOT: boot}
    base["mounts"] = list(spec.get("mounts") or []) + [checks.probe_mount(probe)]
    base["constraints"] = [f"node.id=={node_id}"]
    job = job_spec(base, image)
    job["task_template"]["ContainerSpec"]["Command"] = [checks.PROBE_PATH, "sleep", "2147483647"]
    return job


def oneoff_argv(spec: dict, image_config: dict) -> list[str]:
    """What `docker run IMAGE COMMAND...` runs: the image's entrypoint, then the command."""
    entrypoint = image_config.get("Entrypoint") or []
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    return [*entrypoint, *spec["command"]]


def group_by_process(specs: list[dict]) -> list[list[dict]]:
    groups: dict[str, list[dict]] = {}
    for spec in specs:
        groups.setdefault(spec["labels"].get(LABEL_PROCESS, ""), []).append(spec)
    return list(groups.values())

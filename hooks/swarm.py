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

import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import docker
import docker.errors
import structlog
from docker.types.daemon import CancellableStream

from hooks import registry
from gitd.core.config import Settings
from gitd.core.errors import DeployError, GitdError
from hooks import checks, dynos, router
from hooks.engine import (LABEL_APP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_PROCESS,
                          LABEL_RELEASE, LABEL_ROLE, LABEL_SEQ, LABEL_SERVICE, Attached,
                          Engine, _explain)
from hooks.scheduler import OneOffInput, PumpedStreams, route_key_of, unit_label

log = structlog.get_logger("gitd.swarm")

SERVICE_NAME_MAX = 63  # a DNS label: names resolve on the overlay networks
ROUTE_FILE_PREFIX = "route-"
# a task can vanish before the route files follow (a node lost, a replica
# killed): Traefik tries the request on another task rather than failing it
RETRY_ATTEMPTS = 5
# how often the route files are checked against the tasks when no container
# event wakes the check sooner (tasks on other nodes send none here)
FOLLOW_INTERVAL = 1.0
TASK_ROLE = "swarm-task"  # what a task's container is labelled (the service has the role)
FAILED_STATES = ("failed", "rejected", "orphaned")
ENDED_STATES = ("complete", "shutdown", "remove") + FAILED_STATES  # its container is gone or stopped
LABEL_STOPPED = "gitd.stopped-replicas"  # on a service ps:stop scaled to 0: its replicas before
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
    def of(cls, service) -> "SwarmUnit":
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


# services with data (gitd.services: Postgres, Redis) as swarm services

DATA_SPEC_KEYS = {"image", "name", "hostname", "environment", "command", "labels",
                  "restart_policy", "mounts", "networks", "healthcheck", "log_config",
                  "stop_signal", "ports"}
DATA_STOP_GRACE = 30  # seconds for a database to shut down cleanly (docker mode's stop timeout)


def node_constraint(node: str) -> str:
    """Pinned by hostname: a node that leaves and joins again gets a new id,
    while its volumes are still on that machine."""
    return f"node.hostname=={node}"


def pinned_to(spec: dict, node: str) -> dict:
    return {**spec, "constraints": list(spec.get("constraints") or []) + [node_constraint(node)]}


def has_volume(spec: dict) -> bool:
    """A named volume lives on one node: a task mounting one must run there."""
    return any(m.get("type") == "volume" for m in spec.get("mounts") or [])


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


def current_task(tasks: list[dict]) -> dict | None:
    """The task the swarm wants running (the newest when it is replacing one)."""
    wanted = [t for t in tasks if t.get("DesiredState") == "running"]
    return max(wanted, key=lambda t: (t.get("Version") or {}).get("Index", 0), default=None)

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


# what ps and logs show of the tasks (plain data: hooks.dynos rows)

def _wanted(task: dict) -> bool:
    return task.get("DesiredState") not in ("shutdown", "remove", "orphaned")


def current_tasks(tasks: list[dict]) -> list[dict]:
    """One task per replica slot (a job has one, without a slot): the one
    the swarm wants up, else (a stopped service, a task replaced) the newest."""
    chosen: dict[int, dict] = {}
    for task in sorted(tasks, key=lambda t: t.get("CreatedAt") or ""):
        slot = task.get("Slot") or 0
        held = chosen.get(slot)
        if held is None or _wanted(task) or not _wanted(held):
            chosen[slot] = task
    return [chosen[slot] for slot in sorted(chosen)]


def task_dyno(unit: SwarmUnit, task: dict) -> str:
    """`web.2` (the task's slot), `backend.web.1`, or a one-off's `run.<id>`."""
    if unit.labels.get(LABEL_ROLE) == "oneoff":
        container = ((unit.attrs.get("Spec") or {}).get("TaskTemplate") or {}).get(
            "ContainerSpec") or {}
        for item in container.get("Env") or []:
            if item.startswith("DYNO="):
                return item[len("DYNO="):]
    return f"{dynos.dyno_type(unit.labels)}.{task.get('Slot') or 1}"


def task_container_name(unit: SwarmUnit, task: dict) -> str:
    """The swarm's name for a task's container: service.slot.task (the
    node's id for a task without a slot)."""
    return f"{unit.name}.{task.get('Slot') or task.get('NodeID', '')}.{task.get('ID', '')}"


def task_rows(unit: SwarmUnit, tasks: list[dict], nodes: dict[str, str],
              now: float | None = None) -> list[dict]:
    """The `ps` rows of a service's tasks, each with the node it runs on."""
    rows = []
    for task in current_tasks(tasks):
        status = task.get("Status") or {}
        state = status.get("State") or "unknown"
        running = state == "running"
        started = dynos.parse_time(status.get("Timestamp")) if running else None
        row = dynos.row(unit.labels, task_dyno(unit, task), state, started, running,
                        task_container_name(unit, task), now=now)
        node = task.get("NodeID") or ""
        row["node"] = nodes.get(node, node)
        rows.append(row)
    return rows


def parse_log_line(line: str) -> tuple[str, str, str]:
    """A service log line with timestamps and details,
    `<stamp> com.docker.swarm.node.id=..,..task.id=<id> <text>`, ->
    (sortable stamp, task id, text). Details are `k=v` pairs, URL-escaped."""
    stamp, _, rest = line.partition(" ")
    details, _, text = rest.partition(" ")
    attrs = dict(pair.split("=", 1) for pair in details.split(",") if "=" in pair)
    task = attrs.get("com.docker.swarm.task.id")
    if task is None:  # no details: the text follows the stamp
        return dynos.sortable(stamp), "", rest
    return dynos.sortable(stamp), urllib.parse.unquote_plus(task), text


def route_file_name(route_key: str, seq: int) -> str:
    return f"{ROUTE_FILE_PREFIX}{router.route_name(route_key, seq)}.yml"


def serving(found: list[tuple[str, str]], leaving: set[str]) -> set[str]:
    """The (node id, url) of running tasks -> the urls to route: not those on
    leaving nodes, unless nothing else runs."""
    staying = {url for node, url in found if node not in leaving}
    return staying or {url for _, url in found}


def group_by_process(specs: list[dict]) -> list[list[dict]]:
    groups: dict[str, list[dict]] = {}
    for spec in specs:
        groups.setdefault(spec["labels"].get(LABEL_PROCESS, ""), []).append(spec)
    return list(groups.values())


class _FollowedLog:
    """A one-off task's service log, line by line as it comes. A swarm's log
    travels apart from its task's state: once the task has ended, the lines
    the stream has not brought yet are read from the whole log."""

    def __init__(self, api, service_id: str, on_line):
        self.api, self.service_id, self.on_line = api, service_id, on_line
        self.shown = 0
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._finished = False

    def _lines(self, follow: bool):
        for chunk in self.api.service_logs(self.service_id, stdout=True, stderr=True,
                                           follow=follow):
            yield from chunk.decode("utf-8", "replace").splitlines()

    def follow(self) -> None:
        try:
            for line in self._lines(follow=True):
                with self._lock:
                    if self._finished:
                        return
                    self.shown += 1
                    self.on_line(line)
        except docker.errors.DockerException:
            pass
        finally:
            self.done.set()

    def finish(self) -> None:
        """The task has ended: the rest of its lines, each once."""
        self.done.wait(1.0)
        with self._lock:
            self._finished = True
            try:
                for n, line in enumerate(self._lines(follow=False)):
                    if n >= self.shown:
                        self.on_line(line)
            except docker.errors.DockerException:
                pass


def is_swarm_network(attrs: dict) -> bool:
    """Swarm-scoped, judged by scope: an overlay network the swarm's allocator
    has not allocated yet shows no driver at all."""
    return attrs.get("Scope") == "swarm" or attrs.get("Driver") == "overlay"


class SwarmScheduler:
    kind = "swarm"
    route_provider = "file"

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
        self._routes_guard = threading.Lock()
        self.boot = secrets.token_hex(6)  # this run of gitd, on its one-off tasks
        self.routes_dir = settings.dynamic_dir
        self.routes_dir.mkdir(parents=True, exist_ok=True)
        self.routes_dir.chmod(0o700)

    # images

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

    # the seam

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

    def tasks(self, unit: SwarmUnit) -> list[dict]:
        try:
            return self.api.tasks(filters={"service": unit.id})
        except docker.errors.NotFound:
            return []

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

    def publish_routes(self, route_key: str, seq: int, routes: list, servers: set[str],
                       tls) -> None:
        config = router.file_routes(route_key, seq, routes, sorted(servers),
                                    self.settings.traefik_entrypoint, tls,
                                    retry_attempts=RETRY_ATTEMPTS)
        self._write_routes(route_key, seq, config)

    def _write_routes(self, route_key: str, seq: int, config: dict,
                      only_if_present: bool = False) -> bool:
        path = self.routes_dir / route_file_name(route_key, seq)
        text = router.route_file_text(config)
        with self._routes_guard:
            try:
                if path.read_text() == text:
                    return False
            except OSError:
                if only_if_present:  # removed meanwhile (its service retired): stays so
                    return False
            router.write_route_file(path, text)
        return True

    def unpublish_routes(self, unit: SwarmUnit) -> None:
        with self._routes_guard:
            (self.routes_dir / route_file_name(unit.route_key, unit.seq)).unlink(missing_ok=True)

    def units(self, app: str | None = None, **labels) -> list[SwarmUnit]:
        wanted = {LABEL_INSTANCE: self.settings.instance, LABEL_APP: app, **labels}
        filters = {"label": [f"{k}={v}" for k, v in wanted.items() if v is not None]}
        try:
            return [SwarmUnit.of(s) for s in self.client.services.list(filters=filters)]
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot list swarm services: {_explain(exc)}")

    def tail_logs(self, unit: SwarmUnit, lines: int = 20) -> list[str]:
        try:
            raw = self.api.service_logs(unit.id, stdout=True, stderr=True, tail=lines,
                                        follow=False)
            data = raw if isinstance(raw, bytes) else b"".join(raw)
        except docker.errors.DockerException:
            return []
        return data.decode("utf-8", "replace").splitlines()

    def remove(self, units: list, timeout: int = 0) -> None:
        """Take the routes away, remove the services, and wait (bounded) for
        their containers on this node to be gone. The swarm stops a task with
        SIGTERM, then SIGKILL after the grace period set at create."""
        for unit in units:
            self.unpublish_routes(unit)
            self._remove_service(unit)
        for unit in units:
            self._wait_gone(unit, timeout + 15)

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

    # services with data (gitd.services.runtime.SwarmRuntime)

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

    # the app commands: ps, logs, ps:stop, ps:start, run

    def dynos(self, app: str) -> list[dict]:
        """A row for each replica slot of the app's services, and each
        one-off task (hooks.dynos), with the node it runs on."""
        nodes = self.node_names()
        rows = []
        for unit in self.units(app):
            rows += task_rows(unit, self.tasks(unit), nodes)
        return rows

    def node_names(self) -> dict[str, str]:
        try:
            return {n["ID"]: (n.get("Description") or {}).get("Hostname") or n["ID"]
                    for n in self.api.nodes()}
        except docker.errors.DockerException:
            return {}

    def slot_names(self, unit: SwarmUnit) -> dict[str, str]:
        """task id -> its dyno (`web.2`), for the tasks the swarm still knows."""
        return {t["ID"]: task_dyno(unit, t) for t in self.tasks(unit)}

    def log_stream(self, unit: SwarmUnit, tail: int, follow: bool) -> CancellableStream:
        """The service's log from every node, each line with its time and
        task. docker-py's service_logs gives a bare generator, with nothing
        that ends a followed stream when the client hangs up: the same
        request, made closable the way docker-py makes a container's."""
        params = {"details": True, "follow": follow, "stdout": True, "stderr": True,
                  "timestamps": True, "tail": tail}
        try:
            response = self.api._get(self.api._url("/services/{0}/logs", unit.id),
                                     params=params, stream=True)
            self.api._raise_for_status(response)
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot read the log of {unit.name}: {_explain(exc)}")
        return CancellableStream(self.api._multiplexed_response_stream_helper(response), response)

    def log_lines(self, units: list[SwarmUnit], tail: int) -> list[str]:
        """The last `tail` lines of all `units`' tasks, in time order,
        prefixed with each task's slot."""
        lines = []
        for unit in units:
            prefixed = ServiceLogs(self, unit, tail, follow=False)
            lines += list(prefixed.stamped())
        return dynos.merge(lines, tail)

    def log_streams(self, units: list[SwarmUnit], tail: int) -> list["ServiceLogs"]:
        streams: list[ServiceLogs] = []
        try:
            for unit in units:
                streams.append(ServiceLogs(self, unit, tail, follow=True))
        except BaseException:
            for stream in streams:
                stream.close()
            raise
        return streams

    def follow_logs(self, app: str, units: list[SwarmUnit], tail: int, wanted,
                    emit) -> PumpedStreams:
        """`logs -f` on the swarm: the services' logs as they are now, until
        they end (a deploy makes new services: their logs are not followed)."""
        return PumpedStreams(self.log_streams(units, tail), emit)

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

    def oneoff(self, spec: dict, abandoned=None) -> "SwarmOneOff":
        """`run`: a one-off task on this node (oneoff_job_spec), running and
        ready for gitd to exec the command in."""
        probe = checks.find_probe(self.settings.probe_binary)
        if not probe:
            raise GitdError("run on the swarm needs a static busybox on this node (install "
                            "busybox-static, or set probe_binary); see `gitd doctor`")
        argv = oneoff_argv(spec, self.engine.image_attrs(spec["image"]).get("Config") or {})
        self._remove_orphans()
        unit = self._create(oneoff_job_spec(spec, self.image_for(spec), self.node_id, probe,
                                            self.boot))
        task = SwarmOneOff(self, unit, argv, bool(spec.get("tty")), abandoned)
        try:
            task.wait_running(self.settings.deploy_timeout)
        except BaseException:
            task.remove()
            raise
        return task

    def _remove_orphans(self) -> None:
        """One-off tasks an earlier run of gitd left (it stopped during a
        `run`): their sessions are gone."""
        orphans = [u for u in self.units(**{LABEL_ROLE: "oneoff"})
                   if u.labels.get(LABEL_BOOT) != self.boot]
        if orphans:
            log.info("removing one-off tasks of an earlier run", services=[u.name for u in orphans])
            self.remove_jobs(orphans)

    # keeping routes true when the swarm moves tasks

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
        files = {p.name for p in self.routes_dir.glob(f"{ROUTE_FILE_PREFIX}*.yml")}
        units = self.units(**{LABEL_ROLE: "service", LABEL_PROCESS: "web"})
        tasks = {unit.id: self.tasks(unit) for unit in units}
        everything = [t for group in tasks.values() for t in group]
        for task_id in set(self._task_addresses) - {t["ID"] for t in everything}:
            del self._task_addresses[task_id]
        self._stopping &= {(t["Status"].get("ContainerStatus") or {}).get("ContainerID")
                           for t in everything}  # gone ones forgotten
        changed = self.refresh_routes(units, tasks)
        for orphan in files - {route_file_name(u.route_key, u.seq) for u in units}:
            with self._routes_guard:
                (self.routes_dir / orphan).unlink(missing_ok=True)
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
            path = self.routes_dir / route_file_name(unit.route_key, unit.seq)
            port = unit.labels.get(
                f"traefik.http.services.{router.route_name(unit.route_key, unit.seq)}"
                ".loadbalancer.server.port", "")
            try:
                config = json.loads(path.read_text())
                servers = (self.endpoints(unit, int(port), leaving, (tasks or {}).get(unit.id))
                           if unit.replicas else set())
            except (OSError, ValueError, DeployError):
                continue  # not routed, or no task up right now: keep what is there
            for service in config.get("http", {}).get("services", {}).values():
                service["loadBalancer"]["servers"] = [{"url": u} for u in sorted(servers)]
            if self._write_routes(unit.route_key, unit.seq, config, only_if_present=True):
                log.info("routes follow the swarm", service=unit.name, servers=sorted(servers))
                written += 1
        return written


class ServiceLogs:
    """A service's log (every task, on any node), each line prefixed with
    its task's dyno (`web.2 | ...`). Iterated: the lines as they come, until
    the stream ends or `close()` (from another thread) ends it."""

    def __init__(self, scheduler: SwarmScheduler, unit: SwarmUnit, tail: int, follow: bool):
        self.scheduler = scheduler
        self.unit = unit
        self.name = unit.name
        self.names = scheduler.slot_names(unit)
        self.stream = scheduler.log_stream(unit, tail, follow)

    def dyno(self, task_id: str) -> str:
        if task_id not in self.names:  # a task started since: look again, once
            self.names.update(self.scheduler.slot_names(self.unit))
            self.names.setdefault(task_id, f"{dynos.dyno_type(self.unit.labels)}.?")
        return self.names[task_id]

    def stamped(self):
        """(sortable stamp, prefixed text) for each line."""
        lines = dynos.LineSplitter()
        try:
            for chunk in self.stream:
                for line in lines.feed(chunk):
                    yield self._prefixed(line)
            for line in lines.rest():
                yield self._prefixed(line)
        finally:
            self.stream.close()

    def _prefixed(self, line: str) -> tuple[str, str]:
        stamp, task_id, text = parse_log_line(line)
        return stamp, f"{self.dyno(task_id)} | {text}"

    def __iter__(self):
        for _, text in self.stamped():
            yield text

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass


class SwarmOneOff(OneOffInput):
    """A one-off task on this node bridged by gitd.commands.run: the command
    runs in its container with exec (stdin, pty and exit status as
    `docker exec` has them), and the task goes at the end."""

    def __init__(self, scheduler: SwarmScheduler, unit: SwarmUnit, argv: list[str], tty: bool,
                 abandoned=None):
        self.scheduler = scheduler
        self.api = scheduler.api
        self.unit = unit
        self.name = unit.name
        self.argv = argv
        self.tty = tty
        self.abandoned = abandoned or (lambda: False)
        self.container = None
        self.exec_id: str | None = None
        self.attached: Attached | None = None
        self.failure = b""  # what Docker said when the exec could not start

    def wait_running(self, timeout: float) -> None:
        """Until the task's container runs here. gitd reaches only this
        node's engine: a task it cannot place here cannot be attached to."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.scheduler.tasks(self.unit)
            for task in tasks:
                status = task["Status"]
                if status["State"] in FAILED_STATES + ("complete", "shutdown"):
                    raise GitdError("the one-off task ended on the swarm before the command ran: "
                                    f"{status.get('Err') or status.get('Message') or status['State']}")
                container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
                if status["State"] == "running" and container_id:
                    self.container = self.scheduler.engine.container(container_id)
                    if self.container is not None:
                        return
            if self.abandoned():
                raise GitdError("the client hung up before the one-off task started")
            if time.monotonic() > deadline:
                states = ", ".join(f"{t['Status']['State']}"
                                   + (f" ({t['Status'].get('Err')})" if t["Status"].get("Err") else "")
                                   for t in tasks) or "no task yet"
                raise GitdError(f"the one-off task did not start on this node within {timeout:g}s "
                                f"({states}): gitd can attach only to a task on the node it runs "
                                "on; is this node drained or short of resources? (`nodes`)")
            time.sleep(0.2)

    def attach(self) -> Attached:
        """Create and start the exec, attached from its first byte."""
        try:
            self.exec_id = self.api.exec_create(
                self.container.id, self.argv, stdin=True, stdout=True, stderr=True,
                tty=self.tty)["Id"]
            sock = self.api.exec_start(self.exec_id, socket=True, tty=self.tty)
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot run the command in the one-off task {self.name}: "
                            f"{_explain(exc)}")
        self.attached = ExecAttached(sock, self.tty, self)
        return self.attached

    def start(self, width: int = 0, height: int = 0) -> None:
        """The exec started with attach(); a pty gets the client's size once
        the exec runs. Docker 20.10 has no size at exec start: a command
        asking at once may see 0x0, then gets SIGWINCH, as with `docker exec`."""
        if not self.tty:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                state = self.api.exec_inspect(self.exec_id)
            except docker.errors.DockerException:
                break
            if state.get("Running") or state.get("ExitCode") is not None:
                break
            time.sleep(0.02)
        self.resize(width, height)

    def resize(self, width: int, height: int) -> None:
        if width and height and self.exec_id:
            try:
                self.api.exec_resize(self.exec_id, height=height, width=width)
            except docker.errors.DockerException:
                pass  # best effort: it may have ended

    def stop(self) -> None:
        self.scheduler.engine.kill(self.container)

    def wait(self) -> int:
        """The command's exit status (127 when Docker found no such command,
        as `docker run` says it)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                state = self.api.exec_inspect(self.exec_id)
            except docker.errors.DockerException:
                return 1
            if not state.get("Running") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        code = state.get("ExitCode")
        if code is None:
            return 1
        if code == 126 and (b"not found" in self.failure or b"no such file" in self.failure):
            return 127
        return int(code)

    def remove(self) -> None:
        self.scheduler.remove_jobs([self.unit])


class ExecAttached(Attached):
    """An exec's stream. Docker reports an exec that cannot start (no such
    command) on its *stdout*: that goes to stderr, and is kept for the
    exit status."""

    FAILED = b"OCI runtime exec failed"

    def __init__(self, sock, tty: bool, task: SwarmOneOff):
        super().__init__(sock, tty)
        self.task = task

    def frames(self):
        first = True
        for is_err, data in super().frames():
            if first and data.startswith(self.FAILED):
                self.task.failure = data
                is_err = True
            first = False
            yield is_err, data

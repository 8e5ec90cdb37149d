"""A service's tasks as `ps` and `logs` show them: task rows (hooks.dynos),
service logs prefixed with each task's dyno, and the scheduler's calls that
read them (TaskViews)."""

from __future__ import annotations

import threading
import urllib.parse
from typing import TYPE_CHECKING

import docker
import docker.errors
import structlog
from docker.types.daemon import CancellableStream

from gitd.core.errors import GitdError
from hooks import dynos
from hooks.engine import LABEL_ROLE, _explain
from hooks.scheduler import PumpedStreams
from hooks.swarm.specs import SwarmUnit

if TYPE_CHECKING:
    from hooks.swarm.scheduler import SwarmScheduler

log = structlog.get_logger("gitd.swarm")


FAILED_STATES = ("failed", "rejected", "orphaned")


ENDED_STATES = ("complete", "shutdown", "remove") + FAILED_STATES  # its container is gone or stopped


def current_task(tasks: list[dict]) -> dict | None:
    """The task the swarm wants running (the newest when it is replacing one)."""
    wanted = [t for t in tasks if t.get("DesiredState") == "running"]
    return max(wanted, key=lambda t: (t.get("Version") or {}).get("Index", 0), default=None)


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


STOP_SIGNAL_EXITS = (128 + 15, 128 + 9)  # SIGTERM, SIGKILL after the grace period


def task_state(task: dict) -> str:
    """The task's state, where a task the swarm stopped on purpose (a scale
    to 0, a removal) whose process answered the stop signal by exiting with
    it reads `shutdown`, as one that exited 0 would: the swarm calls it
    `failed` when the exit status is not 0, depending on which it saw first."""
    status = task.get("Status") or {}
    state = status.get("State") or "unknown"
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if state == "failed" and not _wanted(task) and exit_code in STOP_SIGNAL_EXITS:
        return "shutdown"
    return state


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
        state = task_state(task)
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


class TaskViews:
    """Part of SwarmScheduler (hooks.swarm.scheduler)."""

    def tasks(self, unit: SwarmUnit) -> list[dict]:
        try:
            return self.api.tasks(filters={"service": unit.id})
        except docker.errors.NotFound:
            return []

    def tail_logs(self, unit: SwarmUnit, lines: int = 20) -> list[str]:
        try:
            raw = self.api.service_logs(unit.id, stdout=True, stderr=True, tail=lines,
                                        follow=False)
            data = raw if isinstance(raw, bytes) else b"".join(raw)
        except docker.errors.DockerException:
            return []
        return data.decode("utf-8", "replace").splitlines()

    def dynos(self, app: str) -> list[dict]:
        """A row for each replica slot of the app's services, and each
        one-off task (hooks.dynos), with the node it runs on."""
        nodes = self.node_names()
        rows = []
        for unit in self.units(app):
            rows += task_rows(unit, self.tasks(unit), nodes)
        return rows

    def dynos_of(self, apps: list[str]) -> dict[str, list[dict]]:
        """dynos() of each of `apps` (the swarm's tasks are asked per service)."""
        return {app: self.dynos(app) for app in apps}

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

    def log_streams(self, units: list[SwarmUnit], tail: int) -> list[ServiceLogs]:
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

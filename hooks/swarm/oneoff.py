"""`run` on the swarm: a one-off task pinned to this node, its command run
in the task's container with exec (OneOffs, SwarmOneOff)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import docker
import docker.errors
import structlog

from gitd.core.errors import GitdError
from hooks import checks
from hooks.engine import LABEL_ROLE, Attached, _explain
from hooks.scheduler import OneOffInput
from hooks.swarm.specs import LABEL_BOOT, SwarmUnit, oneoff_argv, oneoff_job_spec
from hooks.swarm.tasks import FAILED_STATES

if TYPE_CHECKING:
    from hooks.swarm.scheduler import SwarmScheduler

log = structlog.get_logger("gitd.swarm")


class OneOffs:
    """Part of SwarmScheduler (hooks.swarm.scheduler)."""

    def oneoff(self, spec: dict, abandoned=None) -> SwarmOneOff:
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

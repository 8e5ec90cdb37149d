"""run: a one-off command in a new container made from the current release's
image, with its config; removed afterwards. The exit status passes through.
gitd.verbs.run decides what runs and makes the task (hooks.scheduler: a
container here; a one-off task on the swarm); this module bridges it to the
SSH channel.

With `ssh -t` the container gets a pty and the SSH channel is bridged to it
both ways (window size included); without, stdin is forwarded and stdout
and stderr stay apart.
"""

from __future__ import annotations

import re
import threading

import asyncssh

from gitd.commands.base import command
from gitd.core import validate
from gitd.core.errors import UsageError
from gitd.verbs import run as verbs
from hooks import components
from hooks.scheduler import ContainerOneOff

USAGE = "run APP [--service SERVICE] [--] COMMAND [ARGS...]"
POLL = 0.5  # seconds between checks that the client is still there


def parse_run(argv: list[str]) -> tuple[str, list[str], str]:
    """`APP [--service S] [--] COMMAND ARGS...` -> (APP, [COMMAND, ARGS...], S or "")."""
    if not argv:
        raise UsageError(f"name an app and a command\nusage: {USAGE}")
    app, rest = argv[0], argv[1:]
    service = ""
    if rest[:1] == ["--service"] or (rest[:1] and rest[0].startswith("--service=")):
        if rest[0] == "--service":
            if len(rest) < 2:
                raise UsageError(f"--service needs a name\nusage: {USAGE}")
            service, rest = rest[1], rest[2:]
        else:
            service, rest = rest[0].split("=", 1)[1], rest[1:]
        if not components.COMPONENT_NAME.fullmatch(service):
            raise UsageError(f"invalid service name {service[:40]!r}")
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if not rest:
        raise UsageError(f"name a command to run\nusage: {USAGE}")
    refuse_split_script(rest)
    return validate.app_name(app), rest, service


SHELLS = ("sh", "bash", "ash", "dash", "zsh", "ksh")


def refuse_split_script(argv: list[str]) -> None:
    """ssh joins its arguments with spaces and gitd splits the line again,
    so `ssh paas run APP sh -c 'echo a b'` arrives as `sh -c echo a b`: the
    shell would run `echo` alone, with a and b as $0 and $1. A one-word
    script followed by more words is that mistake far more often than a
    script reading its positional parameters: refuse it with the quoting."""
    shell, flags = argv[0].rsplit("/", 1)[-1], argv[1:2]
    if shell not in SHELLS or not flags or not re.fullmatch(r"-[a-z]*c[a-z]*", flags[0]):
        return
    script, more = argv[2:3], argv[3:]
    if script and more and not any(ch.isspace() for ch in script[0]):
        words = " ".join(argv[2:])
        raise UsageError(
            f"{shell} {flags[0]} takes its script as one argument, but it arrived split: "
            f"{shell} would run {script[0]!r} alone. ssh joins the words of a command, so "
            f"quote the script once more: ssh paas run APP -- {shell} {flags[0]} \"'{words}'\"")


class Session:
    """A one-off task (hooks.scheduler: a container, or a task on the swarm)
    bridged to the SSH channel: output out, stdin and window size in, and a
    hang-up stops it."""

    def __init__(self, ctx, task, tty: bool):
        self.ctx = ctx
        self.task = task
        self.tty = tty

    def run(self) -> int:
        attached = self.task.attach()
        stop = threading.Event()
        try:
            self._start()
            threading.Thread(target=self._stdin, args=(stop,), daemon=True,
                             name=f"stdin-{self.task.name}").start()
            bridge = self.ctx.bridge
            for is_err, data in attached.frames():
                (bridge.write_err if is_err else bridge.write)(data)
            return self.task.wait()
        finally:
            stop.set()
            attached.close()

    def _start(self) -> None:
        verbs.start(self.task, *(self.ctx.bridge.terminal_size() if self.tty else (0, 0)))

    def _stdin(self, stop: threading.Event) -> None:
        """Client -> task until EOF; then watch for a hang-up, which stops
        the task."""
        bridge, eof = self.ctx.bridge, False
        while not stop.is_set():
            if bridge.closed():
                self.task.stop()
                return
            if eof:
                stop.wait(POLL)
                continue
            try:
                data = bridge.recv(65536, timeout=POLL)
            except TimeoutError:
                continue
            except asyncssh.TerminalSizeChanged as exc:
                self.task.resize(exc.width, exc.height)
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            except Exception:  # noqa: BLE001 - the channel is gone
                data = b""
            eof = not self._send(data)

    def _send(self, data: bytes) -> bool:
        try:
            if data:
                return self.task.send(data)
            self.task.end_input()
        except OSError:
            pass
        return False


class OneOff(Session):
    """A created (not started) container bridged to the SSH channel."""

    def __init__(self, ctx, container, tty: bool):
        super().__init__(ctx, ContainerOneOff(ctx.gitd.engine, container, tty), tty)


@command("run", USAGE, "Run a one-off command in a new container of the current release",
         pty=True, help="""
The container gets the release's image and config, is labelled role=oneoff,
and is removed when the command ends; its exit status is the command's.
COMMAND runs as given (no shell); for shell syntax run `sh -c '...'`, quoted
once more for the remote side:
    ssh paas run APP -- sh -c "'echo \\$DATABASE_URL'"
A shell script that arrives split (sh -c echo a b: the shell would run
`echo` alone) is refused with the quoting to use.
With ssh -t it gets a terminal (an interactive shell: ssh -t paas run APP sh).
Without, stdin is passed on: echo hi | ssh paas run APP -- cat
An app whose app.json declares services needs --service NAME (before --):
the container gets that service's image and PORT.""")
def run(ctx, argv):
    app, command_argv, service = parse_run(argv)
    with verbs.oneoff(ctx, app, command_argv, service=service, tty=ctx.has_pty,
                      abandoned=ctx.bridge.closed) as task:
        return Session(ctx, task, ctx.has_pty).run()

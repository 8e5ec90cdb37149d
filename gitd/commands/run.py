"""run: a one-off command in a new container made from the current release's
image, with its config; removed afterwards. The exit status passes through.
The scheduler makes it (hooks.scheduler: a container here; a one-off task
on the swarm) and this module bridges it to the SSH channel.

With `ssh -t` the container gets a pty and the SSH channel is bridged to it
both ways (window size included); without, stdin is forwarded and stdout
and stderr stay apart.
"""

from __future__ import annotations

import re
import secrets
import threading

import asyncssh

from gitd.core import validate
from gitd.commands import command
from gitd.core.errors import GitdError, UsageError
from hooks import components, router
from gitd.core import resources
from hooks.engine import (LABEL_APP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_PROCESS,
                          LABEL_RELEASE, LABEL_ROLE)
from hooks.deploy import app_network, networks
from hooks.deploy import attach_storage
from hooks.pipeline import DEFAULT_PORT
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


def service_of(release, service: str) -> dict:
    """The app.json service `service` of `release` ({} for a plain app and "")."""
    if not service and release.components:
        raise UsageError(f"{release.app} runs several services: name one with --service "
                         f"({', '.join(sorted(release.components))})")
    if service and service not in release.components:
        known = ", ".join(sorted(release.components)) or "none: app.json declares no services"
        raise UsageError(f"v{release.version} has no service {service!r} (services: {known})")
    return release.components.get(service, {}) if service else {}


def oneoff_spec(settings, release, argv: list[str], tty: bool, token: str,
                limits: dict | None = None, service: str = "",
                service_networks: list[str] = ()) -> dict:
    """The docker create() arguments for a one-off container."""
    chosen = service_of(release, service)
    urls = {components.env_name(n): f"http://{n}:{s['port']}" for n, s in release.components.items()}
    env = {"PORT": str(chosen.get("port") or release.port or DEFAULT_PORT), **urls, **release.config,
           "GITD_APP": release.app, "GITD_RELEASE": f"v{release.version}", "DYNO": f"run.{token}"}
    if chosen:
        env["PORT"] = str(chosen["port"])
    spec = {
        "image": chosen.get("image_id") or release.image_id,
        "name": f"gitd-{settings.instance}.{release.app}.run.{token}",
        "command": argv,
        "environment": env,
        "labels": {LABEL_INSTANCE: settings.instance, LABEL_APP: release.app,
                   LABEL_RELEASE: str(release.version), LABEL_PROCESS: "run",
                   LABEL_ROLE: "oneoff", "traefik.enable": "false"},
        "init": True,
        "tty": tty,
        "stdin_open": True,
        "networks": networks(settings, release.app),
        **(limits or {}),
    }
    if chosen:
        spec["labels"][LABEL_COMPONENT] = service
    return attach_storage(spec, list(service_networks), release.mounts)


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
        size = self.ctx.bridge.terminal_size() if self.tty else (0, 0)
        try:
            self.task.start(*size)
        except GitdError as exc:
            missing = "not found" in exc.message or "no such file" in exc.message
            raise GitdError(exc.message, exit_status=127 if missing else 126) from exc

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
    ctx.app(app)
    release = ctx.store.require_current_release(app)
    engine = ctx.gitd.engine
    image_id = service_of(release, service).get("image_id") or release.image_id
    router.refuse_routing_labels(
        (engine.image_attrs(image_id).get("Config") or {}).get("Labels"),
        f"the image of v{release.version}" + (f" (service {service})" if service else ""))
    token = secrets.token_hex(3)
    limits = resources.container_args(
        resources.effective(ctx.settings, ctx.store.get_app(app).settings))
    spec = oneoff_spec(ctx.settings, release, command_argv, ctx.has_pty, token, limits, service,
                       service_networks=ctx.gitd.pipeline.service_networks(app))
    scheduler = ctx.gitd.scheduler
    scheduler.prepare(app_network(ctx.settings.instance, app), app)
    task = scheduler.oneoff(spec, abandoned=ctx.bridge.closed)
    try:
        return Session(ctx, task, ctx.has_pty).run()
    finally:
        task.remove()

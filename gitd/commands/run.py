"""run: a one-off command in a new container made from the current release's
image, with its config; removed afterwards. The exit status passes through.

With `ssh -t` the container gets a pty and the SSH channel is bridged to it
both ways (window size included); without, stdin is forwarded and stdout
and stderr stay apart.
"""

from __future__ import annotations

import secrets
import threading

import asyncssh

from gitd import validate
from gitd.commands import command
from gitd.errors import GitdError, UsageError
from hooks import components, resources, router
from hooks.engine import (LABEL_APP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_PROCESS,
                          LABEL_RELEASE, LABEL_ROLE)
from hooks.deploy import app_network, networks
from hooks.deploy import attach_storage
from hooks.pipeline import DEFAULT_PORT

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
    return validate.app_name(app), rest, service


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


class OneOff:
    """A created (not started) container, bridged to the SSH channel."""

    def __init__(self, ctx, container, tty: bool):
        self.ctx = ctx
        self.engine = ctx.gitd.engine
        self.container = container
        self.tty = tty

    def run(self) -> int:
        attached = self.engine.attach(self.container)
        stop = threading.Event()
        try:
            self._start()
            threading.Thread(target=self._stdin, args=(attached, stop), daemon=True,
                             name=f"stdin-{self.container.name}").start()
            bridge = self.ctx.bridge
            for is_err, data in attached.frames():
                (bridge.write_err if is_err else bridge.write)(data)
            return int(self.container.wait().get("StatusCode", 1))
        finally:
            stop.set()
            attached.close()

    def _start(self) -> None:
        try:
            self.engine.start(self.container)
        except GitdError as exc:
            missing = "not found" in exc.message or "no such file" in exc.message
            raise GitdError(exc.message, exit_status=127 if missing else 126) from exc
        if self.tty:
            self._resize(*self.ctx.bridge.terminal_size())

    def _resize(self, width: int, height: int) -> None:
        if width and height:
            try:
                self.container.resize(height=height, width=width)
            except Exception:  # noqa: BLE001 - best effort: it may have exited
                pass

    def _stdin(self, attached, stop: threading.Event) -> None:
        """Client -> container until EOF; then watch for a hang-up, which
        kills the container."""
        bridge, eof = self.ctx.bridge, False
        while not stop.is_set():
            if bridge.closed():
                self.engine.stop(self.container, 0)
                return
            if eof:
                stop.wait(POLL)
                continue
            try:
                data = bridge.recv(65536, timeout=POLL)
            except TimeoutError:
                continue
            except asyncssh.TerminalSizeChanged as exc:
                self._resize(exc.width, exc.height)
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            except Exception:  # noqa: BLE001 - the channel is gone
                data = b""
            eof = not self._send(attached, data)

    def _send(self, attached, data: bytes) -> bool:
        try:
            if data:
                attached.send(data)
                return True
            if not self.tty:  # with a pty, ^D travels as a byte instead
                attached.close_stdin()
        except OSError:
            pass
        return False


@command("run", USAGE, "Run a one-off command in a new container of the current release",
         pty=True, help="""
The container gets the release's image and config, is labelled role=oneoff,
and is removed when the command ends; its exit status is the command's.
COMMAND runs as given (no shell); for shell syntax run `sh -c '...'`, quoted
once more for the remote side:
    ssh paas run APP -- sh -c "'echo \\$DATABASE_URL'"
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
    engine.ensure_network(app_network(ctx.settings.instance, app), labels={LABEL_APP: app})
    container = engine.create(spec)
    try:
        return OneOff(ctx, container, ctx.has_pty).run()
    finally:
        ctx.gitd.engine.remove(container)

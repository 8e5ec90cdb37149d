"""The zero-downtime swap, as explicit states with one cleanup path.

What to run is plain data (`Target`, `container_specs`) that unit tests can
compare; running it goes through hooks.engine.

    start -> healthy -> routed -> live -> drained -> retired

A failure before `live` removes the new containers and never touches the
old ones, which keep serving. `deploy` returns at `live`: draining and
retiring the old containers goes on in the background (hooks.retire).
"""

from __future__ import annotations

import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from gitd.core.config import Settings
from gitd.core.errors import DeployError, GitdError
from hooks import checks, router, volumes
from hooks.checks import HealthCheck
from hooks.engine import (LABEL_APP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_PROCESS,
                          LABEL_RELEASE, LABEL_ROLE, LABEL_SEQ, Engine)
from hooks.retire import Retirements
from hooks.scheduler import DockerScheduler, confirm_routes, confirm_unrouted, unit_label


def app_network(instance: str, app: str) -> str:
    """The app's own bridge network: its containers reach each other, never
    another app's. Traefik reaches web containers over their ports published
    on 127.0.0.1, so it needs no network of its own. A DNS name component:
    a swarm names its networks that way."""
    return f"gitd-{instance}-app-{app}"


def service_network(instance: str, service: str) -> str:
    """A service's (Postgres, Redis) network: the apps linked to it join it."""
    return f"gitd-{instance}-svc-{service}"


def networks(settings: Settings, app: str) -> list[str]:
    nets = [app_network(settings.instance, app)]
    if settings.docker_network:
        nets.append(settings.docker_network)  # an admin's choice: shared by every app
    return nets

log = structlog.get_logger("gitd.deploy")


@dataclass
class Target:
    """Everything a deploy needs, resolved before any container starts."""
    app: str
    version: int
    seq: int
    image: str
    config: dict[str, str]
    port: int
    formation: dict[str, int]  # process type -> count
    commands: dict[str, list[str] | None]  # process type -> argv (None = the image's own)
    hosts: list[str]
    check: HealthCheck
    release_command: list[str] | None = None
    drain: float = 3.0  # seconds between the switch and SIGTERM to the old
    stop_timeout: int = 30  # seconds between SIGTERM and SIGKILL
    tls: router.TLSPlan | None = None  # None: HTTP only
    limits: dict = field(default_factory=dict)  # docker create() resource arguments
    release_timeout: float = 600.0  # seconds the release command may run
    networks: list[str] = field(default_factory=list)  # linked services' networks
    mounts: list[dict] = field(default_factory=list)  # the release's storage
    paths: list = field(default_factory=list)  # HostRoutes; empty: `hosts` at "/"
    # an app.json service (issue #13): its name, a network alias on the app's
    # network; "" for a plain app
    component: str = ""

    @property
    def routes(self) -> list:
        return self.paths or list(self.hosts)

    @property
    def route_key(self) -> str:
        """What names this deploy's Traefik routers: `<app>`, or
        `<app>_<service>` (no app name holds '_', so none can clash)."""
        return f"{self.app}_{self.component}" if self.component else self.app

    def process_name(self, process: str) -> str:
        return f"{self.component}_{process}" if self.component else process


def route_labels(settings: Settings, target: Target) -> dict[str, str]:
    """The Traefik labels of the target's web containers: its routes, as
    Traefik's docker provider reads them."""
    return router.labels(target.route_key, target.seq, target.routes, target.port,
                         settings.traefik_entrypoint, target.tls)


def attach_storage(spec: dict, networks: list[str], mounts: list[dict]) -> dict:
    """Add the app's service networks and storage mounts to a container spec
    (appended: other features put their own networks and mounts there too)."""
    if networks:
        spec["networks"] = list(spec.get("networks", [])) + list(networks)
    if mounts:
        spec["mounts"] = list(spec.get("mounts", [])) + [_storage_mount(m) for m in mounts]
    return spec


def _storage_mount(mount: dict) -> dict:
    """A volume is mounted with `nocopy`: the deploy's volume task seeded it
    and gave its root to the image's user (hooks.volumes); Docker's copy-up
    would give an empty volume back to the owner of the image's directory."""
    spec = {"type": mount["type"], "source": mount["source"], "target": mount["target"]}
    if mount["type"] == "volume":
        spec["no_copy"] = True
    return spec


def container_name(instance: str, app: str, process: str, index: int, seq: int) -> str:
    return f"gitd-{instance}.{app}.{process}.{index}.s{seq}"


def base_labels(instance: str, target: Target, process: str, role: str) -> dict[str, str]:
    labels = {
        LABEL_INSTANCE: instance,
        LABEL_APP: target.app,
        LABEL_RELEASE: str(target.version),
        LABEL_SEQ: str(target.seq),
        LABEL_PROCESS: process,
        LABEL_ROLE: role,
    }
    if target.component:
        labels[LABEL_COMPONENT] = target.component
    return labels


def environment(target: Target, process: str, index: int) -> dict[str, str]:
    env = dict(target.config)
    env.update({"PORT": str(target.port), "GITD_APP": target.app,
                "GITD_RELEASE": f"v{target.version}", "DYNO": f"{process}.{index}"})
    return env


def process_argv(command: str | None, buildpack: str | None) -> list[str] | None:
    """A Procfile command as argv. Heroku runs them with a shell; a Nix
    closure image has none, so there the line is split like a shell would."""
    if not command:
        return None
    if buildpack == "nix":
        return shlex.split(command)
    return ["/bin/sh", "-c", command]


def describe_argv(argv: list[str]) -> str:
    """The command as the Procfile wrote it."""
    if argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3:
        return argv[2]
    return shlex.join(argv)


def container_specs(target: Target, settings: Settings, probe: str | None) -> list[dict]:
    """The docker create() arguments for every service container of `target`."""
    specs = []
    for process, count in sorted(target.formation.items()):
        for index in range(1, count + 1):
            specs.append(_service_spec(target, settings, probe, process, index))
    return specs


def is_web(spec: dict) -> bool:
    return spec["labels"].get(LABEL_PROCESS) == "web"


def _service_spec(target: Target, settings: Settings, probe: str | None,
                  process: str, index: int) -> dict:
    labels = base_labels(settings.instance, target, process, "service")
    spec = {
        "image": target.image,
        "name": container_name(settings.instance, target.app, target.process_name(process), index,
                               target.seq),
        "command": target.commands.get(process),
        "environment": environment(target, process, index),
        "labels": labels,
        "restart_policy": {"Name": "unless-stopped"},
        "init": True,
        "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "stop_signal": "SIGTERM",
        "stop_timeout": target.stop_timeout,
        "networks": networks(settings, target.app),
        **target.limits,
    }
    if target.component:
        spec["network_aliases"] = [target.component]
    if process == "web":
        spec["ports"] = {f"{target.port}/tcp": ("127.0.0.1", None)}
        labels.update(route_labels(settings, target))
        if not target.check.disabled:
            if not probe:
                raise DeployError("no static busybox for health checks (install busybox-static, "
                                  "or set probe_binary); see `gitd doctor`")
            spec["healthcheck"] = checks.docker_healthcheck(
                target.check, target.port, checks.http_every(settings.health_interval))
            spec["mounts"] = [checks.probe_mount(probe)]
    else:
        labels["traefik.enable"] = "false"
    return attach_storage(spec, target.networks, target.mounts)



def release_task_spec(target: Target, settings: Settings) -> dict:
    labels = base_labels(settings.instance, target, "release", "release-task")
    labels["traefik.enable"] = "false"
    spec = {
        "image": target.image,
        "name": container_name(settings.instance, target.app, target.process_name("release"), 1,
                               target.seq),
        "command": target.release_command,
        "environment": environment(target, "release", 1),
        "labels": labels,
        "init": True,
        "networks": networks(settings, target.app),
        **target.limits,
    }
    return attach_storage(spec, target.networks, target.mounts)


def volume_task_base(target: Target, settings: Settings) -> dict:
    """Image, name and labels of the task that readies the release's volumes."""
    labels = base_labels(settings.instance, target, "volumes", "release-task")
    return {"image": target.image, "labels": labels,
            "name": container_name(settings.instance, target.app, target.process_name("volumes"),
                                   1, target.seq)}


class Deployer:
    """The swap's state machine. What runs the containers is `scheduler`
    (hooks.scheduler): local Docker, or Docker Swarm."""

    def __init__(self, engine: Engine, settings: Settings, retirements: Retirements | None = None,
                 scheduler=None):
        self.engine = engine
        self.settings = settings
        self.probe = checks.find_probe(settings.probe_binary)
        self.retirements = retirements or Retirements()
        self.scheduler = scheduler or DockerScheduler(engine, settings)

    def deploy(self, target, progress, on_live, on_retired=None) -> dict:
        """Run the swap up to `live`. `on_live()` records the new release as
        current; it is called once the new containers serve, before the old
        ones are touched. The old ones then drain and stop in the background,
        and `on_retired()` runs once they are gone (at once when there are
        none). Returns timings in seconds.

        `target` may be a list: the services of one release (app.json
        services), one seq. Every new container of every one is healthy and
        routed before `live`; any failure removes all of them."""
        targets = target if isinstance(target, list) else [target]
        first = targets[0]
        timings: dict[str, float] = {}
        started: dict[int, list] = {i: [] for i in range(len(targets))}
        everything = lambda: [u for group in started.values() for u in group]  # noqa: E731
        t0 = time.monotonic()
        self.scheduler.prepare(app_network(self.settings.instance, first.app), first.app)
        current = first
        try:
            self._prepare_storage(targets, progress)
            for current in targets:
                if current.release_command:
                    self._run_release_task(current, progress)
            specs = [container_specs(t, self.settings, self.probe) for t in targets]
            progress.stage("start")
            for i, current in enumerate(targets):
                started[i] = self.scheduler.start([s for s in specs[i] if is_web(s)], progress)
            timings["start"] = time.monotonic() - t0
            progress.stage("healthy")
            for i, current in enumerate(targets):
                self._wait_ready(current, started[i], progress)
            # the other process types run the new code only once its web
            # containers passed their checks: a rejected release runs no work
            for i, current in enumerate(targets):
                others = [s for s in specs[i] if not is_web(s)]
                if others:
                    units = self.scheduler.start(others, progress)
                    started[i] += units
                    self._wait_ready(current, units, progress)
            timings["healthy"] = time.monotonic() - t0
            progress.stage("routed")
            for i, current in enumerate(targets):
                confirm_routes(self.scheduler, self.settings, current, started[i], progress)
            timings["routed"] = time.monotonic() - t0
        except GitdError as exc:
            self._report_failure(everything(), progress)
            self._remove(everything(), progress)
            if current.component:
                raise DeployError(f"service {current.component}: {exc}")
            raise DeployError(str(exc))
        except BaseException:
            self._remove(everything(), progress)
            raise
        progress.stage("live")
        on_live()
        timings["live"] = time.monotonic() - t0
        self._retire_in_background(first, progress, on_retired)
        return timings

    def _prepare_storage(self, targets: list, progress) -> None:
        """Give the release's volumes to the user its image runs as (one
        short task; hooks.volumes), before anything of it starts. Services
        of one app (app.json) share its volumes: running as two different
        non-root users they cannot both own them, and the deploy stops."""
        mounted = list({t.image: t for t in targets if t.mounts}.values())  # one per image
        if not mounted:
            return
        if not self.probe:
            raise DeployError("no static busybox to ready the app's storage (install "
                              "busybox-static, or set probe_binary); see `gitd doctor`")
        users = {t.image: volumes.image_user(self._image_user(t.image)) for t in mounted}
        owner_of = mounted[0]
        if len(mounted) > 1:
            owners = {t.image: self._owner_task(t, users[t.image], chown=False).owner
                      for t in mounted}
            writers = {o for o in owners.values() if not volumes.is_root(o)}
            if len(writers) > 1:
                raise DeployError("the app's services run as different users "
                                  f"({', '.join(sorted(writers))}) and share its storage: "
                                  "only one of them can own it; give their images one USER")
            owner_of = next((t for t in mounted if owners[t.image] in writers), owner_of)
        has_volumes = bool(volumes.volume_mounts(owner_of.mounts))
        report = self._owner_task(owner_of, users[owner_of.image], chown=has_volumes)
        for path, old, entries in report.changed:
            progress.line(f"storage at {path}: owner {old} -> {report.owner} "
                          f"(the image's USER {users[owner_of.image]})")
            if entries:
                progress.warn(f"storage at {path}: the {entries} entries already there keep "
                              "their owners")
        for warning in volumes.host_dir_warnings(owner_of.mounts, report.owner):
            progress.warn(warning)

    def _image_user(self, image: str) -> str:
        return (self.engine.image_attrs(image).get("Config") or {}).get("User") or ""

    def _owner_task(self, target: Target, run_as, chown: bool):
        spec = volumes.owner_task_spec(volume_task_base(target, self.settings), run_as,
                                       volumes.volume_mounts(target.mounts), self.probe, chown)
        return volumes.run_owner_task(self.scheduler, spec)

    def _run_release_task(self, target: Target, progress) -> None:
        progress.stage("release-task")
        progress.step(f"Running release command: {describe_argv(target.release_command)}")
        status, timed_out = self.scheduler.run_task(
            release_task_spec(target, self.settings), progress.line, target.release_timeout)
        if timed_out:
            raise DeployError(f"release command ran longer than {target.release_timeout:g}s "
                              "(release_timeout); nothing changed")
        if status != 0:
            raise DeployError(f"release command failed with status {status}; nothing changed")

    def _wait_ready(self, target: Target, started: list, progress) -> None:
        if target.check.disabled and any(u.labels.get(LABEL_PROCESS) == "web" for u in started):
            progress.warn("health checks are disabled: this deploy may drop requests")
        for unit in started:
            self.scheduler.wait_ready(unit, target.check, progress)

    def _report_failure(self, started: list, progress) -> None:
        for unit in started:
            lines = self.scheduler.tail_logs(unit, 20)
            if lines:
                progress.line(f"last log lines of {unit_label(unit)}:")
                for line in lines:
                    progress.line(f"  {line}")

    def old_containers(self, app: str, live_seq: int) -> list:
        """Service units of `app` that are not the live ones."""
        return [c for c in self.scheduler.units(app)
                if c.labels.get(LABEL_SEQ) != str(live_seq)
                and c.labels.get(LABEL_ROLE) == "service"]

    def _retire_in_background(self, target: Target, progress, on_retired=None) -> None:
        # listed after `live`: includes the containers of a retirement this
        # deploy takes over (still draining, they are drained again)
        old = self.old_containers(target.app, target.seq)
        if not old:
            if on_retired:
                on_retired()
            return
        self.retire_later(target.app, old, target.drain, target.stop_timeout, on_retired)
        versions = sorted({c.labels.get(LABEL_RELEASE, "?") for c in old},
                          key=lambda v: int(v) if v.isdigit() else 0)
        progress.stage("drain")
        progress.step(f"Retiring {', '.join('v' + v for v in versions)} in the background "
                      f"(drain {_drain_of(old, target.drain):g}s)")

    def retire_later(self, app: str, old: list, drain: float, stop_timeout: int, then=None):
        """Drain (web containers only) then stop `old` in the background;
        then `then()`, unless a later deploy took the retirement over."""
        def stop(containers):
            self.retire(containers, stop_timeout)
            if then:
                then()
        return self.retirements.start(app, old, _drain_of(old, drain), stop)

    def retire(self, units: list, timeout: int) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; in parallel."""
        if not units:
            return
        def stop(unit):
            try:
                self.scheduler.remove([unit], timeout=timeout)
            except Exception as exc:  # the others still stop; a restart retires this one
                log.warning("cannot stop an old container", container=unit.name, error=str(exc))

        with ThreadPoolExecutor(max_workers=min(8, len(units))) as pool:
            list(pool.map(stop, units))

    def _remove(self, units: list, progress) -> None:
        self.scheduler.remove(units)
        confirm_unrouted(self.scheduler, self.settings, units, progress)


def _drain_of(containers: list, drain: float) -> float:
    """Only web containers get traffic to drain."""
    if any(c.labels.get(LABEL_PROCESS) == "web" for c in containers):
        return max(0.0, drain)
    return 0.0

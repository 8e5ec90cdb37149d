"""Container specs as data: the docker create() arguments of every
container gitd makes (an app's processes, its release and volume tasks,
one-offs, services and their relays and clients), built here and nowhere
else. A scheduler runs them: hooks.scheduler as they are, hooks.swarm.specs
translated into swarm services. Unit tests compare them without Docker."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from gitd.core.config import Settings
from gitd.core.errors import DeployError, UsageError
from hooks import checks, components, router
from hooks.checks import PROBE_PATH, HealthCheck, probe_mount
from hooks.engine import (LABEL_APP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_PROCESS,
                          LABEL_RELEASE, LABEL_ROLE, LABEL_SEQ, LABEL_SERVICE)

DEFAULT_PORT = 5000  # an app's PORT when nothing says otherwise (Heroku's)
LABEL_KIND = "gitd.service.kind"


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


def route_key_of(labels: dict) -> str:
    """The route key (Target.route_key) of a unit, from its labels."""
    app, component = labels.get(LABEL_APP, ""), labels.get(LABEL_COMPONENT)
    return f"{app}_{component}" if component else app


def web_deploys(units: list) -> set[tuple[str, int]]:
    """The (route key, seq) of the deploys the web units among `units` belong to."""
    return {(route_key_of(u.labels), int(u.labels[LABEL_SEQ])) for u in units
            if u.labels.get(LABEL_PROCESS) == "web" and u.labels.get(LABEL_SEQ, "").isdigit()}


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


def container_specs(target: Target, settings: Settings, probe: str | None,
                    gated_by_gitd: bool = False) -> list[dict]:
    """The docker create() arguments for every service container of `target`.
    `gated_by_gitd`: the scheduler probes its new web containers itself
    (checks.web_healthcheck)."""
    specs = []
    for process, count in sorted(target.formation.items()):
        for index in range(1, count + 1):
            specs.append(_service_spec(target, settings, probe, process, index, gated_by_gitd))
    return specs


def is_web(spec: dict) -> bool:
    return spec["labels"].get(LABEL_PROCESS) == "web"


def _service_spec(target: Target, settings: Settings, probe: str | None,
                  process: str, index: int, gated_by_gitd: bool) -> dict:
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
            spec["healthcheck"] = checks.web_healthcheck(
                target.check, target.port, settings.health_interval, gated_by_gitd)
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


# A service's names. Every one is a DNS name component (lowercase letters,
# digits, '-'; at most 5 + 8 + 5 + 30 + 16 characters): a swarm refuses dots
# in service and network names, and the host name must resolve on the
# service's network.


def service_host(instance: str, service: str) -> str:
    """A service's container name, also its host name on its network (no dots: one DNS label)."""
    return f"gitd-{instance}-svc-{service}"


def relay_name(instance: str, service: str) -> str:
    """The container publishing a swarm service's port on 127.0.0.1 (services:expose)."""
    return f"{service_host(instance, service)}-expose"


SECOND = 1_000_000_000


def service_spec(settings, kind, svc, name: str | None = None) -> dict:
    """The docker create() arguments of a service's container."""
    spec = {
        "image": svc.image,
        "name": name or service_host(settings.instance, svc.name),
        "hostname": service_host(settings.instance, svc.name),
        "environment": kind.environment(svc),
        "command": kind.command(svc),
        "labels": {LABEL_INSTANCE: settings.instance, LABEL_SERVICE: svc.name,
                   LABEL_KIND: kind.name, "traefik.enable": "false"},
        "restart_policy": {"Name": "unless-stopped"},
        "mounts": [{"type": "volume", "source": svc.volume, "target": kind.data_path}],
        "networks": [service_network(settings.instance, svc.name)],
        "healthcheck": {"test": ["CMD", *kind.health_argv(svc)], "interval": SECOND,
                        "timeout": 5 * SECOND, "retries": 5, "start_period": 60 * SECOND},
        "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "stop_signal": "SIGINT" if kind.name == "postgres" else "SIGTERM",
    }
    if svc.exposed_port is not None:
        spec["ports"] = {f"{kind.port}/tcp": ("127.0.0.1", svc.exposed_port or None)}
    return spec


def relay_spec(settings, kind, svc, probe: str) -> dict:
    """services:expose on a swarm: a container on this manager, on the
    service's network, publishing its port on 127.0.0.1 only and passing each
    connection on to the service (busybox nc, the static busybox gitd's
    health checks mount)."""
    host, port = service_host(settings.instance, svc.name), str(kind.port)
    return {
        "image": svc.image,
        "name": relay_name(settings.instance, svc.name),
        "entrypoint": [PROBE_PATH, "nc", "-ll", "-p", port, "-e", PROBE_PATH, "nc", host, port],
        "labels": {LABEL_INSTANCE: settings.instance, LABEL_SERVICE: svc.name,
                   LABEL_KIND: kind.name, LABEL_ROLE: "relay", "traefik.enable": "false"},
        "restart_policy": {"Name": "unless-stopped"},
        "mounts": [probe_mount(probe)],
        "networks": [service_network(settings.instance, svc.name)],
        "ports": {f"{port}/tcp": ("127.0.0.1", svc.exposed_port or None)},
        "log_config": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}},
    }


def service_client_spec(settings, kind, svc, token: str, tty: bool) -> dict:
    """services:connect: a one-off container running the service's client
    (psql, redis-cli) on its network."""
    host = service_host(settings.instance, svc.name)
    return {
        "image": svc.image, "name": f"{host}-connect-{token}",
        "command": kind.client_argv(svc, host), "environment": kind.client_env(svc),
        "labels": {LABEL_INSTANCE: settings.instance, LABEL_SERVICE: svc.name,
                   LABEL_ROLE: "oneoff", "traefik.enable": "false"},
        "networks": [service_network(settings.instance, svc.name)],
        "init": True, "tty": tty, "stdin_open": True,
    }

"""The docker create() arguments of a service's containers: its own and, on a
swarm, the relay that exposes it on this manager."""

from __future__ import annotations

from gitd.services.base import LABEL_KIND, Kind, container_name, network_name, relay_name
from hooks.checks import PROBE_PATH, probe_mount
from hooks.engine import LABEL_INSTANCE, LABEL_ROLE, LABEL_SERVICE

SECOND = 1_000_000_000


def service_spec(settings, kind: Kind, svc, name: str | None = None) -> dict:
    """The docker create() arguments of a service's container."""
    spec = {
        "image": svc.image,
        "name": name or container_name(settings.instance, svc.name),
        "hostname": container_name(settings.instance, svc.name),
        "environment": kind.environment(svc),
        "command": kind.command(svc),
        "labels": {LABEL_INSTANCE: settings.instance, LABEL_SERVICE: svc.name,
                   LABEL_KIND: kind.name, "traefik.enable": "false"},
        "restart_policy": {"Name": "unless-stopped"},
        "mounts": [{"type": "volume", "source": svc.volume, "target": kind.data_path}],
        "networks": [network_name(settings.instance, svc.name)],
        "healthcheck": {"test": ["CMD", *kind.health_argv(svc)], "interval": SECOND,
                        "timeout": 5 * SECOND, "retries": 5, "start_period": 60 * SECOND},
        "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "stop_signal": "SIGINT" if kind.name == "postgres" else "SIGTERM",
    }
    if svc.exposed_port is not None:
        spec["ports"] = {f"{kind.port}/tcp": ("127.0.0.1", svc.exposed_port or None)}
    return spec


def relay_spec(settings, kind: Kind, svc, probe: str) -> dict:
    """services:expose on a swarm: a container on this manager, on the
    service's network, publishing its port on 127.0.0.1 only and passing each
    connection on to the service (busybox nc, the static busybox gitd's
    health checks mount)."""
    host, port = container_name(settings.instance, svc.name), str(kind.port)
    return {
        "image": svc.image,
        "name": relay_name(settings.instance, svc.name),
        "entrypoint": [PROBE_PATH, "nc", "-ll", "-p", port, "-e", PROBE_PATH, "nc", host, port],
        "labels": {LABEL_INSTANCE: settings.instance, LABEL_SERVICE: svc.name,
                   LABEL_KIND: kind.name, LABEL_ROLE: "relay", "traefik.enable": "false"},
        "restart_policy": {"Name": "unless-stopped"},
        "mounts": [probe_mount(probe)],
        "networks": [network_name(settings.instance, svc.name)],
        "ports": {f"{port}/tcp": ("127.0.0.1", svc.exposed_port or None)},
        "log_config": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}},
    }

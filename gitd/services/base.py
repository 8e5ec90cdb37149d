"""What a kind of service (Postgres, Redis) is, as data and small methods.

Everything about one kind lives in its own small module (postgres.py,
redis.py) behind `Kind`; the lifecycle (gitd/services/lifecycle.py) runs
them all the same way and talks to Docker only through hooks.engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A service's container, host and network names are made in hooks.specs
# with its containers' specs; its volume's and swarm service's here.
from hooks.specs import LABEL_KIND, relay_name  # noqa: F401
from hooks.specs import service_host as container_name
from hooks.specs import service_network as network_name  # noqa: F401


def volume_name(instance: str, service: str, generation: int = 1) -> str:
    suffix = "" if generation == 1 else f"-g{generation}"
    return f"gitd-{instance}-svc-{service}-data{suffix}"


def version_matches(asked: str, reported: str) -> bool:
    """`15` is any 15.x; `15.4` is 15.4 or any 15.4.x."""
    parts = asked.split(".")
    return reported.split(".")[:len(parts)] == parts


def generation(volume: str) -> int:
    """1 for the first volume of a service, N for its `-gN` successors (upgrades)."""
    match = re.search(r"-g(\d+)$", volume)
    return int(match.group(1)) if match else 1


def swarm_service_name(instance: str, service: str, volume: str, staging: bool = False) -> str:
    """The swarm service running a service on `volume`: an upgrade starts the
    next one beside it (a swarm service cannot be renamed, so each volume
    generation has its own name; linked apps reach it by its host name)."""
    gen = generation(volume)
    return (container_name(instance, service) + ("" if gen == 1 else f"-g{gen}")
            + ("-upgrade" if staging else ""))



@dataclass(frozen=True)
class Kind:
    """One kind of service. Subclasses fill in the class attributes and the
    methods that differ; `svc` is a gitd.store.Service."""
    name: str = ""
    default_image: str = ""  # "{version}" is replaced by the service's version
    default_version: str = ""
    port: int = 0
    data_path: str = ""
    env_prefix: str = ""  # DATABASE -> DATABASE_URL, DATABASE_<NAME>_URL
    dump_suffix: str = ".dump"

    def image(self, configured: dict[str, str], version: str) -> str:
        return configured.get(self.name, self.default_image).replace("{version}", version)

    def versioned(self, configured: dict[str, str]) -> bool:
        """Whether the image setting names a version (`{version}`): without
        it, one image runs whatever version it holds, whichever is asked."""
        return "{version}" in configured.get(self.name, self.default_image)

    def version_argv(self, svc) -> list[str]:
        """A command run in the service's container that prints the server's version."""
        raise NotImplementedError

    def parse_version(self, output: str) -> str | None:
        raise NotImplementedError

    def env_var(self, service: str, taken: set[str]) -> str:
        """The config var a linked app gets: the plain one unless taken."""
        plain = f"{self.env_prefix}_URL"
        if plain not in taken:
            return plain
        return f"{self.env_prefix}_{service.upper().replace('-', '_')}_URL"

    # what runs

    def environment(self, svc) -> dict[str, str]:
        return {}

    def command(self, svc) -> list[str] | None:
        return None

    def health_argv(self, svc) -> list[str]:
        raise NotImplementedError

    def exec_env(self, svc) -> dict[str, str]:
        """Environment for commands gitd runs in the container (auth)."""
        return {}

    def url(self, svc, host: str) -> str:
        raise NotImplementedError

    def client_argv(self, svc, host: str) -> list[str]:
        """The interactive client, run in a one-off container on the
        service's network (services:connect)."""
        raise NotImplementedError

    def client_env(self, svc) -> dict[str, str]:
        return self.exec_env(svc)

    # backups

    def dump_argv(self, svc) -> list[str]:
        raise NotImplementedError

    def restore(self, engine, container, svc, chunks, emit, restart=None) -> None:
        """Load the dump in `chunks` so that a failure leaves the old data
        untouched; raises GitdError when refused. A kind that stops its
        server to load the data calls `restart(container)` (default: start
        the container again; a swarm starts a new task instead)."""
        raise NotImplementedError

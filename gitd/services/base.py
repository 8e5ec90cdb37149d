"""What a kind of service (Postgres, Redis) is, as data and small methods.

Everything about one kind lives in its own small module (postgres.py,
redis.py) behind `Kind`; the lifecycle (gitd/services/lifecycle.py) runs
them all the same way and talks to Docker only through hooks.engine.
"""

from __future__ import annotations

from dataclasses import dataclass

LABEL_KIND = "gitd.service.kind"


def container_name(instance: str, service: str) -> str:
    """Also the service's host name on its network (no dots: one DNS label)."""
    return f"gitd-{instance}-svc-{service}"


def network_name(instance: str, service: str) -> str:
    return f"gitd-{instance}-svc-{service}"


def volume_name(instance: str, service: str, generation: int = 1) -> str:
    suffix = "" if generation == 1 else f"-g{generation}"
    return f"gitd-{instance}-svc-{service}-data{suffix}"


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

    def restore(self, engine, container, svc, chunks, emit) -> None:
        """Load the dump in `chunks` so that a failure leaves the old data
        untouched; raises GitdError when refused."""
        raise NotImplementedError

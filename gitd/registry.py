"""gitd's own image registry for the swarm: Debian's docker-registry (the
Distribution registry) run as gitd's child on loopback. Pushing and removing
images is hooks/registry.py's."""

from __future__ import annotations

import shutil

from gitd.child import ManagedChild
from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.traefik import render
from hooks.registry import http_status


class ManagedRegistry(ManagedChild):
    """docker-registry as gitd's child on 127.0.0.1:registry_port, its
    images under <data_dir>/registry (0700)."""

    name = "registry"

    def __init__(self, settings: Settings):
        self.dir = settings.data_dir / "registry"
        super().__init__(config_path=self.dir / "registry.yml",
                         log_path=self.dir / "registry.log",
                         pid_path=self.dir / "registry.pid")
        self.settings = settings
        self.ready_url = f"http://127.0.0.1:{settings.registry_port}/v2/"

    def find_binary(self) -> str:
        binary = shutil.which(self.settings.registry_bin)
        if not binary:
            raise GitdError(f"{self.settings.registry_bin} not found (apt-get install "
                            "docker-registry, or set registry = host:port)")
        return binary

    def prepare(self) -> bool:
        if not 0 < self.settings.registry_port <= 65535:
            raise GitdError("setting registry_port must be a port above 0 when gitd runs "
                            "the registry")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        return self.write_config(render_config(self.settings))

    def argv(self, binary: str) -> list[str]:
        return [binary, "serve", str(self.config_path)]

    def ready(self, timeout: float) -> bool:
        answer = http_status(self.ready_url, timeout)
        return answer is not None and answer[0] == 200


def render_config(settings: Settings) -> str:
    return render("registry.yml.j2", port=settings.registry_port, instance=settings.instance,
                  storage_dir=settings.data_dir / "registry" / "storage")

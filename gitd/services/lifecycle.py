"""Services' lifecycle: create, link, expose, back up, restore, upgrade,
destroy. What to run is plain data (`service_spec`); Docker is reached only
through hooks.engine."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from gitd.errors import GitdError
from gitd.services import kind as kind_of
from gitd.services.base import (LABEL_KIND, Kind, container_name, network_name,
                                volume_name)
from hooks.engine import LABEL_INSTANCE, LABEL_SERVICE

SECOND = 1_000_000_000
HEALTH_WAIT = 120.0
CHUNK = 256 * 1024


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


def backup_dir(settings, service: str) -> Path:
    return settings.data_dir / "backups" / service


def backup_path(settings, kind: Kind, service: str, when: float, tag: str = "") -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    return backup_dir(settings, service) / f"{service}-{stamp}{tag}{kind.dump_suffix}"


class Services:
    def __init__(self, gitd):
        self.gitd = gitd

    @property
    def settings(self):
        return self.gitd.settings

    @property
    def store(self):
        return self.gitd.store

    @property
    def engine(self):
        return self.gitd.engine

    def kind(self, svc) -> Kind:
        return kind_of(svc.kind)

    def url(self, svc) -> str:
        return self.kind(svc).url(svc, container_name(self.settings.instance, svc.name))

    # create and destroy

    def create(self, kind_name: str, name: str, version: str | None, emit) -> object:
        kind = kind_of(kind_name)
        version = version or kind.default_version
        image = kind.image(self.settings.service_images, version)
        self.engine.ensure_image(image)  # a missing image fails before anything is made
        svc = self.store.create_service(
            name=name, kind=kind.name, version=version, image=image,
            password=secrets.token_urlsafe(18).replace("-", "x").replace("_", "y"),
            volume=volume_name(self.settings.instance, name))
        try:
            self._make(svc, emit)
        except BaseException:
            self._unmake(svc)
            self.store.delete_service(name)
            raise
        return svc

    def _make(self, svc, emit, name: str | None = None):
        kind = self.kind(svc)
        labels = {LABEL_SERVICE: svc.name}
        self.engine.ensure_network(network_name(self.settings.instance, svc.name), labels)
        self.engine.ensure_volume(svc.volume, labels)
        container = self.engine.run(service_spec(self.settings, kind, svc, name=name))
        emit(f"started {container.name} ({svc.image}); waiting until it is healthy")
        self.wait_healthy(container)
        return container

    def _unmake(self, svc, keep_volume: bool = False) -> None:
        container = self.container(svc, required=False)
        if container is not None:
            self.engine.remove(container, timeout=30)
        self.engine.remove_network(network_name(self.settings.instance, svc.name))
        if not keep_volume:
            self.engine.remove_volume(svc.volume)

    def destroy(self, svc, emit) -> Path | None:
        links = self.store.links_of_service(svc.name)
        if links:
            raise GitdError(f"{svc.name} is linked to {', '.join(links)}: "
                            f"unlink it first (services:unlink {svc.name} APP)")
        final = None
        if self.container(svc, required=False) is not None:
            final = self.backup_to_file(svc, tag="-final")
            emit(f"final backup kept at {final}")
        self._unmake(svc)
        self.store.delete_service(svc.name)
        return final

    def container(self, svc, required: bool = True):
        container = self.engine.container(container_name(self.settings.instance, svc.name))
        if container is None and required:
            raise GitdError(f"the container of {svc.name} is missing (services:info {svc.name})")
        return container

    def running(self, svc):
        """The service's container, started and healthy."""
        container = self.container(svc)
        if container.status != "running":
            self.engine.start(container)
        self.wait_healthy(container)
        return container

    def wait_healthy(self, container, timeout: float = HEALTH_WAIT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.engine.reload(container):
                raise GitdError(f"{container.name} disappeared while starting")
            state = container.attrs["State"]
            health = (state.get("Health") or {}).get("Status")
            if state.get("Status") == "running" and health == "healthy":
                return
            if time.monotonic() > deadline:
                tail = " | ".join(self.engine.tail_logs(container, 5))
                raise GitdError(f"{container.name} is not healthy after {timeout:g}s "
                                f"(state {state.get('Status')}, health {health}): {tail}")
            time.sleep(0.3)

    # links

    def network(self, svc) -> str:
        return network_name(self.settings.instance, svc.name)

    # expose

    def recreate(self, svc, emit) -> None:
        """A new container with the stored settings on the same volume (ports
        cannot change on a running container)."""
        old = self.container(svc)
        self.engine.stop(old, timeout=30)
        self.engine.remove(old)
        self._make(svc, emit)

    # backups

    def backup_stream(self, svc, write) -> None:
        """The dump, streamed to `write(chunk)` as the server produces it."""
        kind = self.kind(svc)
        container = self.running(svc)
        buffered = Buffered(write)
        status, err = self.engine.exec(container, kind.dump_argv(svc), stdout=buffered.write,
                                       environment=kind.exec_env(svc))
        buffered.flush()
        if status != 0:
            raise GitdError(f"backup of {svc.name} failed: "
                            f"{err.decode('utf-8', 'replace').strip()[-500:]}")

    def backup_to_file(self, svc, tag: str = "", record: bool = True) -> Path:
        kind = self.kind(svc)
        started = time.time()
        path = backup_path(self.settings, kind, svc.name, started, tag)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_name(path.name + ".partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                self.backup_stream(svc, out.write)
            if partial.stat().st_size == 0:
                raise GitdError(f"backup of {svc.name} is empty")
            partial.rename(path)
        except BaseException as exc:
            partial.unlink(missing_ok=True)
            if record:
                self.store.update_service(svc.name, last_backup_at=started, last_backup_ok=False,
                                          last_backup_message=str(exc)[:500])
            raise
        if record:
            self.store.update_service(svc.name, last_backup_at=started, last_backup_ok=True,
                                      last_backup_message=f"{path.name} ({path.stat().st_size} bytes)")
        return path

    def prune_backups(self, svc, keep: int) -> list[Path]:
        """Keep the newest `keep` dated dumps (final ones are never pruned)."""
        directory = backup_dir(self.settings, svc.name)
        pattern = re.compile(rf"^{re.escape(svc.name)}-\d{{8}}T\d{{6}}Z\.\w+$")
        dumps = sorted(p for p in directory.glob("*") if pattern.match(p.name))
        doomed = dumps[:-keep] if keep else dumps
        for path in doomed:
            path.unlink(missing_ok=True)
        return doomed

    def restore(self, svc, chunks, emit) -> None:
        kind = self.kind(svc)
        container = self.running(svc)
        kind.restore(self.engine, container, svc, chunks, emit)
        self.wait_answering(self.running(svc), svc)

    def wait_answering(self, container, svc, timeout: float = HEALTH_WAIT) -> None:
        """Docker's health status lags a restart: run the health command
        ourselves until it passes."""
        argv = self.kind(svc).health_argv(svc)
        deadline = time.monotonic() + timeout
        while True:
            self.engine.reload(container)
            try:
                if container.status == "running" and self.engine.exec(container, argv)[0] == 0:
                    return
            except GitdError:
                pass  # restarting between the look and the exec
            if time.monotonic() > deadline:
                raise GitdError(f"{svc.name} does not answer after {timeout:g}s")
            time.sleep(0.3)

    # upgrade

    def upgrade(self, svc, version: str, emit) -> None:
        """Dump, start the new version on a fresh volume, restore into it;
        only then retire the old container. Any failure keeps the old."""
        kind = self.kind(svc)
        image = kind.image(self.settings.service_images, version)
        self.engine.ensure_image(image)
        dump = self.backup_to_file(svc, tag=f"-before-{_safe(version)}")
        emit(f"dumped {svc.name} to {dump}")
        generation = _generation(svc.volume) + 1
        new = self.store.get_service(svc.name)
        new.image, new.version = image, version
        new.volume = volume_name(self.settings.instance, svc.name, generation)
        old_container = self.container(svc)
        staging = f"{old_container.name}-upgrade"
        made = None
        try:
            made = self._make(new, emit, name=staging)
            with open(dump, "rb") as fh:
                kind.restore(self.engine, made, new, iter(lambda: fh.read(CHUNK), b""), emit)
            self.wait_healthy(made)
        except BaseException:
            if made is not None:
                self.engine.remove(made)
            self.engine.remove_volume(new.volume)
            emit(f"upgrade failed: {svc.name} keeps running {svc.version}")
            raise
        self.engine.stop(old_container, timeout=30)
        self.engine.remove(old_container)
        made.rename(container_name(self.settings.instance, svc.name))
        self.store.update_service(svc.name, image=image, version=version, volume=new.volume)
        self.engine.remove_volume(svc.volume)


class Buffered:
    """Docker hands exec output over in small frames; the SSH channel is
    quicker fed in large writes."""

    def __init__(self, write, size: int = 1024 * 1024):
        self._write, self.size = write, size
        self._parts: list[bytes] = []
        self._held = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._held += len(data)
        if self._held >= self.size:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._write(b"".join(self._parts))
            self._parts, self._held = [], 0


def _generation(volume: str) -> int:
    match = re.search(r"-g(\d+)$", volume)
    return int(match.group(1)) if match else 1


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", text)

"""Services' lifecycle: create, link, expose, back up, restore, upgrade,
destroy. What to run is plain data (`service_spec`); where it runs (a
container, a swarm service) is gitd/services/runtime.py's, and Docker is
reached only through hooks.engine and hooks.swarm."""

from __future__ import annotations

import functools
import os
import re
import secrets
import time
from pathlib import Path

from gitd.core.errors import Conflict, GitdError
from gitd.services import kind as kind_of
from gitd.services.base import (Kind, container_name, generation, network_name, version_matches,
                                volume_name)

HEALTH_WAIT = 120.0
CHUNK = 256 * 1024


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

    @functools.cached_property
    def runtime(self):
        """Where services run (gitd/services/runtime.py): containers on this
        host, or swarm services pinned to their volume's node."""
        from gitd.scheduling import build_runtime

        return build_runtime(self.engine, self.settings, self.gitd.scheduler)

    def kind(self, svc) -> Kind:
        return kind_of(svc.kind)

    def url(self, svc) -> str:
        return self.kind(svc).url(svc, container_name(self.settings.instance, svc.name))

    # create and destroy

    def create(self, kind_name: str, name: str, version: str | None, emit,
               node: str | None = None) -> object:
        """`node`: on a swarm, the node the service (and its volume) stays on."""
        kind = kind_of(kind_name)
        version = version or kind.default_version
        image = kind.image(self.settings.service_images, version)
        self.engine.ensure_image(image)  # a missing image fails before anything is made
        self.refuse_leftovers(name)
        svc = self.store.create_service(
            name=name, kind=kind.name, version=version, image=image,
            password=secrets.token_urlsafe(18).replace("-", "x").replace("_", "y"),
            volume=volume_name(self.settings.instance, name), node=node)
        try:
            self.runtime.make(svc, emit)
        except BaseException:
            self.undo_create(svc, emit)
            raise
        return svc

    def refuse_leftovers(self, name: str) -> None:
        """A volume or network of the new service's name that no service owns
        (a volume an off-manager destroy kept, a network left by scheduler =
        "docker") is neither adopted nor removed: the user decides."""
        volume = volume_name(self.settings.instance, name)
        if self.engine.volume_exists(volume):
            raise Conflict(f"volume {volume} already exists and no service owns it: "
                            f"remove it (docker volume rm {volume}) once it holds nothing "
                            "you need, or choose another name")
        network = network_name(self.settings.instance, name)
        if self.engine.network_exists(network):
            raise Conflict(f"network {network} already exists and no service owns it (left "
                            f'by scheduler = "docker"?): remove it (docker network rm '
                            f"{network}), or choose another name")

    def undo_create(self, svc, emit) -> None:
        """What a failed create made goes; the error that failed it is the one shown."""
        try:
            self.runtime.unmake(svc, emit)
        except GitdError as exc:
            emit(f"could not remove all of {svc.name}: {exc}")
        finally:
            self.store.delete_service(svc.name)

    def destroy(self, svc, emit) -> Path | None:
        links = self.store.links_of_service(svc.name)
        if links:
            raise GitdError(f"{svc.name} is linked to {', '.join(links)}: "
                            f"unlink it first (services:unlink {svc.name} APP)")
        final = None
        if self.runtime.exists(svc):
            final = self.backup_to_file(svc, tag="-final")
            emit(f"final backup kept at {final}")
        self.runtime.unmake(svc, emit)
        self.store.delete_service(svc.name)
        return final

    def server_version(self, svc, container) -> str | None:
        """What the server in `container` (running) says it is (`15.18`);
        None when it cannot be asked."""
        kind = self.kind(svc)
        try:
            status, output = self.engine.exec(container, kind.version_argv(svc),
                                              environment=kind.exec_env(svc))
        except GitdError:
            return None
        return kind.parse_version(output.decode("utf-8", "replace")) if status == 0 else None

    def running(self, svc):
        """The service's container, healthy, to run commands in."""
        return self.runtime.exec_container(self.runtime.handle(svc), svc)

    def status(self, svc) -> dict:
        """state, health, node, exposed (host port), container (on this node)."""
        return self.runtime.status(svc)

    def logs(self, svc, lines: int, follow: bool):
        return self.runtime.logs(svc, lines, follow)

    # links

    def network(self, svc) -> str:
        return network_name(self.settings.instance, svc.name)

    # expose

    def recreate(self, svc, emit) -> None:
        """Publish (or not) the port as the stored settings say."""
        self.runtime.expose(svc, emit)

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
        handle = self.runtime.handle(svc)
        container = self.runtime.exec_container(handle, svc)
        kind.restore(self.engine, container, svc, chunks, emit,
                     restart=lambda stopped: self.runtime.restart(handle, stopped))
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

    def _check_version(self, svc, container, asked: str) -> str:
        """The version the staged server says it is, if it is the one asked."""
        reported = self.server_version(svc, container)
        if reported is None or not version_matches(asked, reported):
            said = f"it says it is {reported}" if reported else "it does not say which version it is"
            raise GitdError(f"the image {svc.image} does not run {self.kind(svc).name} {asked}: "
                            f"{said}")
        return reported

    def upgrade(self, svc, version: str, emit) -> str:
        """Dump, start the new version on a fresh volume, restore into it,
        check the server there is the version asked; only then retire the
        old one. Any failure keeps the old. Returns what the new server
        says it is. An image setting without {version} is refused."""
        kind = self.kind(svc)
        if not kind.versioned(self.settings.service_images):
            raise GitdError(
                f"{svc.name} cannot move to {kind.name} {version}: its image "
                f"({self.settings.service_images.get(kind.name, kind.default_image)}, setting "
                f"service_images) has no {{version}} in its name, so it runs one version "
                f"whichever is asked; nothing changed. Name one with {{version}} "
                f"(e.g. {kind.default_image}) to upgrade")
        image = kind.image(self.settings.service_images, version)
        self.engine.ensure_image(image)
        dump = self.backup_to_file(svc, tag=f"-before-{_safe(version)}")
        emit(f"dumped {svc.name} to {dump}")
        new = self.store.get_service(svc.name)
        new.image, new.version = image, version
        new.volume = volume_name(self.settings.instance, svc.name, generation(svc.volume) + 1)
        self.runtime.handle(svc)  # the old one is there to go back to
        made = None
        try:
            made = self.runtime.make(new, emit, staging=True)
            container = self.runtime.exec_container(made, new)
            with open(dump, "rb") as fh:
                kind.restore(self.engine, container, new, iter(lambda: fh.read(CHUNK), b""), emit,
                             restart=lambda stopped: self.runtime.restart(made, stopped))
            self.runtime.wait_ready(made)
            reported = self._check_version(new, container, version)
        except BaseException:
            if made is not None:
                self.runtime.discard(made)
            self.engine.remove_volume(new.volume)
            emit(f"upgrade failed: {svc.name} keeps running {svc.version}")
            raise
        self.runtime.promote(svc, new, made, emit)
        self.store.update_service(svc.name, image=image, version=version, volume=new.volume)
        self.engine.remove_volume(svc.volume)
        return reported


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


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", text)

"""The one small place that talks to Docker.

Everything else builds plain dicts (container specs) and hands them here.
"""

from __future__ import annotations

import socket

import docker
import docker.errors
from docker.types import Mount
from docker.utils.socket import STDERR, frames_iter

from gitd.errors import GitdError

LABEL_INSTANCE = "gitd.instance"
LABEL_APP = "gitd.app"
LABEL_RELEASE = "gitd.release"
LABEL_SEQ = "gitd.seq"
LABEL_PROCESS = "gitd.process"
LABEL_ROLE = "gitd.role"  # service | oneoff | release-task
LABEL_COMPONENT = "gitd.component"  # an app.json service's name (issue #13)


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise GitdError(f"cannot reach the Docker engine: {exc}")


class Engine:
    def __init__(self, client: docker.DockerClient, instance: str):
        self.client = client
        self.instance = instance

    def _filters(self, **labels) -> dict:
        wanted = {LABEL_INSTANCE: self.instance, **labels}
        return {"label": [f"{k}={v}" for k, v in wanted.items() if v is not None]}

    def containers(self, app: str | None = None, **labels) -> list:
        filters = self._filters(**{LABEL_APP: app}, **labels)
        return self.client.containers.list(all=True, filters=filters)

    def create(self, spec: dict):
        """Create (not start) a container from a spec. `networks` (a list) joins
        the container to each: the first at create, the rest before start."""
        spec = dict(spec)
        mounts = [Mount(**m) for m in spec.pop("mounts", [])]
        networks = list(spec.pop("networks", []))
        aliases = list(spec.pop("network_aliases", []))  # names on the first network
        if networks and "network" not in spec:
            spec["network"] = networks.pop(0)
            if aliases:
                spec["networking_config"] = {
                    spec["network"]: self.client.api.create_endpoint_config(aliases=aliases)}
        try:
            container = self.client.containers.create(mounts=mounts, **spec)
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot create container {spec.get('name')}: {_explain(exc)}")
        try:
            for name in networks:
                self.client.networks.get(name).connect(container)
        except docker.errors.DockerException as exc:
            self.remove(container)
            raise GitdError(f"cannot join container {spec.get('name')} to its networks: "
                            f"{_explain(exc)}")
        return container

    def ensure_network(self, name: str, labels: dict[str, str] | None = None,
                       internal: bool = False):
        """A user-defined bridge network, created when missing, labelled with
        this instance so clean-up finds it by label."""
        try:
            return self.client.networks.get(name)
        except docker.errors.NotFound:
            pass
        try:
            return self.client.networks.create(
                name, driver="bridge", internal=internal, check_duplicate=True,
                labels={LABEL_INSTANCE: self.instance, **(labels or {})})
        except docker.errors.DockerException as exc:
            try:  # made meanwhile by another deploy or `run` of the app
                return self.client.networks.get(name)
            except docker.errors.DockerException:
                pass
            raise GitdError(f"cannot create network {name}: {_explain(exc)}")

    def remove_network(self, name: str) -> None:
        try:
            self.client.networks.get(name).remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise GitdError(f"cannot remove network {name}: {_explain(exc)}")

    def networks(self, **labels) -> list:
        return self.client.networks.list(filters=self._filters(**labels))

    def start(self, container) -> None:
        try:
            container.start()
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot start container {container.name}: {_explain(exc)}")

    def run(self, spec: dict):
        """Create and start a container from a spec made by hooks.deploy."""
        container = self.create(spec)
        try:
            self.start(container)
        except GitdError:
            self.remove(container)
            raise
        return container

    def attach(self, container) -> "Attached":
        """stdin, stdout and stderr of a created container (attach before start)."""
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        try:
            sock = self.client.api.attach_socket(container.id, params=params)
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot attach to container {container.name}: {_explain(exc)}")
        return Attached(sock, bool(container.attrs.get("Config", {}).get("Tty")))

    def stop(self, container, timeout: int) -> None:
        try:
            container.stop(timeout=timeout)
        except docker.errors.NotFound:
            pass

    def kill(self, container) -> None:
        try:
            container.kill()
        except docker.errors.DockerException:
            pass  # already gone or stopped

    def remove(self, container, timeout: int = 0) -> None:
        try:
            if timeout:
                container.stop(timeout=timeout)
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass

    def reload(self, container) -> bool:
        try:
            container.reload()
            return True
        except docker.errors.NotFound:
            return False

    def tail_logs(self, container, lines: int = 20) -> list[str]:
        try:
            raw = container.logs(tail=lines, stdout=True, stderr=True)
        except docker.errors.DockerException:
            return []
        return raw.decode("utf-8", "replace").splitlines()

    def host_port(self, container, port: int) -> int | None:
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp")
        return int(bindings[0]["HostPort"]) if bindings else None

    def image_attrs(self, image_ref: str) -> dict:
        try:
            return self.client.images.get(image_ref).attrs
        except docker.errors.ImageNotFound:
            raise GitdError(f"image {image_ref} is missing")

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        self.client.images.get(image_id).tag(repository, tag)

    def remove_image(self, ref: str) -> bool:
        try:
            self.client.images.remove(ref, noprune=False)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError:
            return False  # in use by a container: kept for now

    def has_image(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
            return True
        except docker.errors.ImageNotFound:
            return False

    def images(self, app: str | None = None) -> list:
        filters = self._filters(**{LABEL_APP: app})
        return self.client.images.list(filters=filters)


class Attached:
    """A container's attach stream: frames out, bytes in."""

    def __init__(self, sock, tty: bool):
        self.sock = sock
        self.tty = tty
        self._raw = getattr(sock, "_sock", sock)

    def frames(self):
        """(is_stderr, bytes) until the container closes its output."""
        for stream, data in frames_iter(self.sock, self.tty):
            yield stream == STDERR, data

    def send(self, data: bytes) -> None:
        self._raw.sendall(data)

    def close_stdin(self) -> None:
        self._raw.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for close in (lambda: self._raw.shutdown(socket.SHUT_RDWR), self.sock.close,
                      self._raw.close):
            try:
                close()
            except OSError:
                pass


def _explain(exc: Exception) -> str:
    return getattr(exc, "explanation", None) or str(exc)

"""The one small place that talks to Docker.

Everything else builds plain dicts (container specs) and hands them here.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
import docker.utils
import requests
from docker.types import IPAMConfig, IPAMPool, Mount
from docker.utils.socket import STDERR, frames_iter

from buildpacks.stacks import STAGE_LABEL, stage_label
from gitd.core.errors import Conflict, GitdError
from hooks import netpool

LABEL_INSTANCE = "gitd.instance"
LABEL_APP = "gitd.app"
LABEL_RELEASE = "gitd.release"
LABEL_SEQ = "gitd.seq"
LABEL_PROCESS = "gitd.process"
LABEL_ROLE = "gitd.role"  # service | oneoff | release-task
LABEL_SERVICE = "gitd.service"  # a database or cache gitd runs (gitd.services)
LABEL_COMPONENT = "gitd.component"  # an app.json service's name (issue #13)
INSPECTIONS_AT_ONCE = 8  # within the SDK's pool of 10 connections to the engine


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise GitdError(f"cannot reach the Docker engine: {exc}")


def exit_code(value) -> int | None:
    """An exit status as Docker reports it (an int, or a string in an
    event's attributes), or None for anything else."""
    text = str(value) if value is not None else ""
    return int(text) if text.lstrip("-").isdigit() else None


class Engine:
    def __init__(self, client: docker.DockerClient, instance: str, network_pool: str = ""):
        self.client = client
        self.instance = instance
        self.pool = netpool.pool_of(network_pool)  # None: Docker's default address pools
        self._allocating = threading.Lock()

    def _filters(self, **labels) -> dict:
        wanted = {LABEL_INSTANCE: self.instance, **labels}
        return {"label": [f"{k}={v}" for k, v in wanted.items() if v is not None]}

    def containers(self, app: str | None = None, **labels) -> list:
        """The containers there are now: listed, then each inspected. One
        removed in between (an old release retiring in the background) is
        left out rather than failing the listing. The inspections run side
        by side: Docker answers each only once it may take the container's
        lock (held while it starts or stops), so one after another they made
        a listing of all apps' containers grow with the app count (40 took
        12 s on a busy engine, 4 s side by side)."""
        filters = self._filters(**{LABEL_APP: app}, **labels)
        ids = [row["Id"] for row in self.client.api.containers(all=True, filters=filters)]
        if len(ids) <= 1:
            return [c for c in map(self._inspected, ids) if c is not None]
        with ThreadPoolExecutor(max_workers=min(INSPECTIONS_AT_ONCE, len(ids))) as pool:
            return [c for c in pool.map(self._inspected, ids) if c is not None]

    def listed(self, app: str | None = None, **labels) -> list["Listed"]:
        """The containers there are now, as the engine lists them, none
        inspected: one request whatever their number. Enough for their
        names, labels, state and health (a poll of every app's containers
        inspected each in turn, 40 per look at 40 apps)."""
        filters = self._filters(**{LABEL_APP: app}, **labels)
        found = [Listed.of(row) for row in self.client.api.containers(all=True, filters=filters)]
        if any(c.health is None and c.status == "running" for c in found):
            self._health_by_filter(found, filters)
        return found

    def _health_by_filter(self, found: list["Listed"], filters: dict) -> None:
        """The health of listed containers whose status text does not say it
        (Podman's says "Up 5 seconds" alone), from listings filtered by
        health: a request per state, whatever the container count."""
        unsaid = {c.id: c for c in found if c.health is None}
        for health in ("unhealthy", "healthy", "starting"):
            for row in self.client.api.containers(all=True, filters={**filters, "health": health}):
                if row.get("Id") in unsaid:
                    unsaid[row["Id"]].health = health

    def _inspected(self, container_id: str):
        try:
            return self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return None

    def events(self, app: str | None, actions: tuple[str, ...], **labels):
        """The engine's events (decoded) for the app's containers (all of
        this instance's: app None) with `labels`, from now on; a stream that
        `close()` ends."""
        filters = {"type": "container", "event": list(actions),
                   **self._filters(**{LABEL_APP: app}, **labels)}
        return self.client.events(decode=True, filters=filters)

    def exit_status_at(self, container, finished: float) -> int | None:
        """The exit status of the container's run that ended at `finished`
        (its die event); None when the engine no longer has the event (it
        keeps its last few hundred)."""
        try:
            # the event may come a while after FinishedAt on a busy engine;
            # an `until` ahead of now would hold the answer until then
            events = self.client.events(since=int(finished) - 1, until=int(time.time()),
                                        decode=True, filters={"type": "container",
                                                              "container": container.id,
                                                              "event": "die"})
            statuses = [e.get("Actor", {}).get("Attributes", {}).get("exitCode") for e in events]
        except docker.errors.DockerException:
            return None
        last = statuses[-1] if statuses else None
        return exit_code(last)

    def create(self, spec: dict):
        """Create (not start) a container from a spec. `networks` (a list) joins
        the container to each: the first at create, the rest before start."""
        spec = dict(spec)
        # the swarm's stop grace period; a container gets it when it is stopped
        spec.pop("stop_timeout", None)
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
                       internal: bool = False, driver: str = "bridge", attachable: bool = False):
        """A user-defined network (a bridge; an overlay on a swarm), created
        when missing, labelled with this instance so clean-up finds it. A new
        one gets a subnet from the network pool; one that exists (made from
        Docker's defaults by an older gitd, say) is used as it is."""
        try:
            return self.client.networks.get(name)
        except docker.errors.NotFound:
            pass
        options = dict(driver=driver, internal=internal, check_duplicate=True,
                       attachable=attachable or None,
                       labels={LABEL_INSTANCE: self.instance, **(labels or {})})
        try:
            if self.pool is None:
                return self.client.networks.create(name, **options)
            return self._create_in_pool(name, options)
        except docker.errors.DockerException as exc:
            try:  # made meanwhile by another deploy or `run` of the app
                return self.client.networks.get(name)
            except docker.errors.DockerException:
                pass
            raise GitdError(f"cannot create network {name}: {_explain(exc)}")

    def _create_in_pool(self, name: str, options: dict, attempts: int = 8):
        """One allocation at a time in this process; a subnet another process
        took meanwhile is refused by Docker as overlapping (the engine may not
        list that network yet), and the next free one past it is tried."""
        refused = []
        with self._allocating:
            for attempt in range(attempts):
                subnet = self.free_subnet(name, refused)
                ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet))])
                try:
                    return self.client.networks.create(name, ipam=ipam, **options)
                except docker.errors.APIError as exc:
                    if "overlap" not in _explain(exc) or attempt == attempts - 1:
                        raise
                    refused.append(subnet)
                    time.sleep(0.05 * (attempt + 1))

    def free_subnet(self, name: str, refused=()):
        """The next free subnet of the pool, judged by every network the
        engine has, the host's routes (see hooks.netpool) and the subnets the
        engine just `refused`."""
        taken = (netpool.engine_subnets(self.client.api.networks()) + netpool.host_routes()
                 + list(refused))
        subnet = netpool.free_subnet(self.pool, taken)
        if subnet is None:
            raise netpool.exhausted(self.pool, name, sum(t.overlaps(self.pool) for t in taken))
        return subnet

    def check_network_pool(self) -> None:
        """At start: a pool over the engine's own bridge is refused."""
        if self.pool is None:
            return
        problem = netpool.clash_with_bridge(self.pool, self.client.api.networks())
        if problem:
            raise GitdError(problem)

    def remove_network(self, name: str, wait: float = 0.0) -> None:
        """`wait`: seconds to retry while it is in use (a swarm lets go of a
        removed service's endpoints a moment later)."""
        _retrying(lambda: self._remove_network(name), wait)

    def _remove_network(self, name: str) -> None:
        try:
            self.client.networks.get(name).remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise GitdError(f"cannot remove network {name}: {_explain(exc)}")

    def network_exists(self, name: str) -> bool:
        try:
            self.client.networks.get(name)
            return True
        except docker.errors.NotFound:
            return False

    def networks(self, **labels) -> list:
        return self.client.networks.list(filters=self._filters(**labels))

    # volumes (named volumes for services and app storage)

    def ensure_volume(self, name: str, labels: dict[str, str] | None = None):
        try:
            return self.client.volumes.get(name)
        except docker.errors.NotFound:
            pass
        try:
            return self.client.volumes.create(
                name, labels={LABEL_INSTANCE: self.instance, **(labels or {})})
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot create volume {name}: {_explain(exc)}")

    def volume_exists(self, name: str) -> bool:
        try:
            self.client.volumes.get(name)
            return True
        except docker.errors.NotFound:
            return False

    def volumes(self, **labels) -> list:
        return self.client.volumes.list(filters=self._filters(**labels))

    def remove_volume(self, name: str, wait: float = 0.0) -> None:
        """`wait`: as remove_network's (a removed task's container holds it a moment)."""
        _retrying(lambda: self._remove_volume(name), wait)

    def _remove_volume(self, name: str) -> None:
        try:
            self.client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise GitdError(f"cannot remove volume {name}: {_explain(exc)}")

    def container(self, name: str):
        """A container by name or id; None when there is none."""
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def exec(self, container, argv: list[str], stdin=None, stdout=None,
             environment: dict | None = None, user: str | None = None) -> tuple[int, bytes]:
        """Run `argv` in a running container. `stdin`: an iterable of byte
        chunks fed to it; `stdout(chunk)`: called with its output as it comes
        (else kept and returned). Returns (exit status, output or stderr)."""
        api = self.client.api
        try:
            exec_id = api.exec_create(container.id, argv, stdin=stdin is not None, stdout=True,
                                      stderr=True, environment=environment, user=user or "")["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot run {argv[0]} in {container.name}: {_explain(exc)}")
        attached = Attached(sock, tty=False)
        feeder = None
        feed_error: list[BaseException] = []
        if stdin is not None:
            def feed():
                try:
                    for chunk in stdin:
                        attached.send(chunk)
                except BaseException as exc:  # noqa: BLE001 - reported after the exec ends
                    feed_error.append(exc)
                finally:
                    try:
                        attached.close_stdin()
                    except OSError:
                        pass
            feeder = threading.Thread(target=feed, daemon=True, name=f"exec-stdin-{argv[0]}")
            feeder.start()
        out, err = [], []
        try:
            for is_err, data in attached.frames():
                if is_err:
                    if sum(len(e) for e in err) < 64 * 1024:
                        err.append(data)
                elif stdout is not None:
                    stdout(data)
                else:
                    out.append(data)
        finally:
            attached.close()
        if feeder is not None:
            feeder.join(timeout=5)
        status = api.exec_inspect(exec_id).get("ExitCode")
        if feed_error and status == 0:
            raise feed_error[0]
        if stdout is None and status == 0:
            return 0, b"".join(out)
        return (1 if status is None else status), b"".join(err) or b"".join(out)

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

    def restart(self, container, timeout: int) -> None:
        try:
            container.restart(timeout=timeout)
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot restart container {container.name}: {_explain(exc)}")

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
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):  # the swarm removing a task's container
                raise
            self._wait_removed(container)

    def _wait_removed(self, container, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                container.reload()
            except docker.errors.NotFound:
                return
            time.sleep(0.2)

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

    def ensure_image(self, ref: str) -> dict:
        """A service image: used when present, else pulled (an offline host
        names a local one in the service_images setting)."""
        try:
            return self.client.images.get(ref).attrs
        except docker.errors.ImageNotFound:
            pass
        try:
            return self.client.images.pull(ref).attrs
        except docker.errors.DockerException as exc:
            # the request was fine: this host lacks what it needs (409, not 400)
            raise Conflict(f"image {ref} is not here and cannot be pulled ({_explain(exc)}); "
                            "name a local image in the service_images setting")

    def pull(self, ref: str, timeout: float, emit, max_bytes: int | None = None) -> str:
        """Pull `ref` (validated, with a tag or digest) within `timeout`
        seconds, its steps to `emit`; returns the image's id. With
        `max_bytes`, the pull stops once its layers' downloads add up past it
        (hanging up stops the engine's pull)."""
        repository, tag = docker.utils.parse_repository_tag(ref)
        deadline = time.monotonic() + timeout
        shown, layer_sizes = set(), {}
        try:
            stream = self.client.api.pull(repository, tag=tag, stream=True, decode=True)
            for event in stream:
                if event.get("error"):
                    raise GitdError(f"cannot pull {ref}: {event['error']}")
                if time.monotonic() > deadline:
                    stream.close()
                    raise GitdError(f"pulling {ref} took longer than {timeout:.0f} s")
                if max_bytes is not None and _downloading(event, layer_sizes) > max_bytes:
                    stream.close()
                    raise GitdError(f"image {ref} is larger than max_image_bytes "
                                    f"({max_bytes} bytes): its layers to download are "
                                    f"{sum(layer_sizes.values())} bytes")
                status = event.get("status", "")
                line = f"{event['id']}: {status}" if event.get("id") else status
                if status and not event.get("progressDetail") and line not in shown:
                    shown.add(line)
                    emit(line)
            return self.client.images.get(ref).id
        except docker.errors.DockerException as exc:
            raise GitdError(f"cannot pull {ref}: {_explain(exc)}")
        except requests.exceptions.RequestException as exc:
            raise GitdError(f"cannot pull {ref}: {exc}")

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

    def build_stage_images(self, app: str) -> list:
        """The last image of each build stage of the app's stack builds (the
        engine keeps them untagged: they are the next build's cache)."""
        label = f"{STAGE_LABEL}={stage_label(self.instance, app)}"
        return self.client.images.list(filters={"label": [label]})


class Listed:
    """A container as the engine's listing shows it (no inspection): id,
    name, labels, state (`status`, as the SDK's container says it) and
    health, read from the listing's status text ("Up 2 minutes (healthy)")."""

    def __init__(self, id: str, name: str, labels: dict, status: str, health: str | None):
        self.id, self.name, self.labels, self.status, self.health = id, name, labels, status, health

    @classmethod
    def of(cls, row: dict) -> "Listed":
        names = row.get("Names") or [""]
        return cls(row.get("Id", ""), names[0].lstrip("/"), row.get("Labels") or {},
                   row.get("State") or "", listed_health(row.get("Status") or ""))


def listed_health(status_text: str) -> str | None:
    """Docker's health in a listing's status text; None: no health check."""
    for health in ("health: starting", "unhealthy", "healthy"):
        if f"({health})" in status_text:
            return health.removeprefix("health: ")
    return None


def _downloading(event: dict, layer_sizes: dict) -> int:
    """The bytes of the layers being downloaded, as the pull's progress
    events say (each layer's size once)."""
    detail = event.get("progressDetail") or {}
    total = detail.get("total")
    if event.get("id") and isinstance(total, int) and not isinstance(total, bool) and total > 0:
        layer_sizes[event["id"]] = max(total, layer_sizes.get(event["id"], 0))
    return sum(layer_sizes.values())


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


def _retrying(action, seconds: float) -> None:
    """`action` until it does not raise GitdError, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except GitdError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _explain(exc: Exception) -> str:
    return getattr(exc, "explanation", None) or str(exc)

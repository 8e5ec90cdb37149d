"""The one small place that talks to the container engine: Docker, or
Podman through its Docker-compatible API (issue #28).

Everything else builds plain dicts (container specs) and hands them here.
Every client is made by `client()` from one URL (the engine_url setting);
what differs between the engines is told by `probe()` (`Capabilities`), and
the rest of gitd asks that rather than which engine it is.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import docker
import docker.errors
import docker.utils
import requests
import structlog
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


DOCKER_SOCKET = "unix:///var/run/docker.sock"

log = structlog.get_logger("gitd.engine")


def endpoint(url: str = "") -> str:
    """The engine's URL: the engine_url setting, else DOCKER_HOST, else
    Docker's socket."""
    return url or os.environ.get("DOCKER_HOST") or DOCKER_SOCKET


def client(url: str = "", timeout: int = 120, version: str | None = None) -> docker.DockerClient:
    """A client of the engine at `url` (see `endpoint`); DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH apply as the SDK's from_env reads them."""
    environment = dict(os.environ, DOCKER_HOST=endpoint(url))
    return docker.from_env(timeout=timeout, version=version, environment=environment)


def connect(url: str = "") -> docker.DockerClient:
    try:
        made = client(url)
        made.ping()
        return made
    except docker.errors.DockerException as exc:
        raise GitdError(f"cannot reach the Docker engine (or Podman's API) at {endpoint(url)}: {exc}")


@dataclass(frozen=True)
class Capabilities:
    """What gitd relies on that differs between the engines."""
    name: str  # Docker | Podman
    version: str
    api_version: str
    # the engine runs containers' HEALTHCHECKs itself (Podman only from
    # systemd timers: without systemd a container stays `starting`)
    runs_health_checks: bool = True
    # swarm mode (docker service ...); Podman has none
    swarm: bool = True
    # a HEALTHCHECK's ["CMD", ...] arguments kept as given: Podman 4.3's
    # compatible API splits them at whitespace (an `sh -c SCRIPT` breaks)
    keeps_check_arguments: bool = True

    @property
    def title(self) -> str:
        return f"{self.name} {self.version} (API {self.api_version})"


def capabilities(version: dict, info: dict) -> Capabilities:
    """What the engine can do, from its `version` and `info` answers."""
    components = [c.get("Name", "") for c in version.get("Components") or []]
    number = str(version.get("Version") or "?")
    api = str(version.get("ApiVersion") or "?")
    if not any("podman" in name.lower() for name in components):
        return Capabilities("Docker", number, api)
    # Podman creates a systemd timer per health check; its cgroup manager is
    # systemd exactly when it runs under systemd
    timers = str(info.get("CgroupDriver", "")).lower() == "systemd"
    return Capabilities("Podman", number, api, runs_health_checks=timers, swarm=False,
                        keeps_check_arguments=False)


def probe(engine_client: docker.DockerClient) -> Capabilities:
    try:
        return capabilities(engine_client.version(), engine_client.info())
    except docker.errors.DockerException as exc:
        raise GitdError(f"cannot ask the container engine what it is: {_explain(exc)}")


HEALTH_SCRIPT_VARIABLE = "GITD_HEALTHCHECK_SCRIPT"


def has_spaced_check(spec: dict) -> bool:
    test = (spec.get("healthcheck") or {}).get("test") or []
    return test[:1] == ["CMD"] and any(c.isspace() for arg in test for c in arg)


def unsplittable_check(spec: dict) -> dict:
    """A spec whose health check survives an engine that splits its
    arguments at whitespace: an `sh -c SCRIPT` check's script moves into
    the container's environment, and the check evals it (arguments without
    whitespace: `${IFS}` separates eval from it). Any other spec as it is."""
    if not has_spaced_check(spec):
        return spec
    test = list(spec["healthcheck"]["test"])
    if len(test) < 4 or test[-2] != "-c" or any(c.isspace() for arg in test[1:-1] for c in arg):
        raise GitdError(f"this engine splits a health check's arguments at whitespace: "
                        f"{test[1:]!r} cannot run there (use one without spaces)")
    environment = spec.get("environment") or {}
    if not isinstance(environment, dict):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {**spec, "environment": {**environment, HEALTH_SCRIPT_VARIABLE: test[-1]},
            "healthcheck": {**spec["healthcheck"],
                            "test": [*test[:-1], f'eval${{IFS}}"${HEALTH_SCRIPT_VARIABLE}"']}}


# Podman names the images it builds or loads with a registry (docker.io/gitd/
# hello:v3, localhost/base:1) where Docker says gitd/hello:v3, base:1
IMPLIED_REGISTRIES = ("docker.io/", "localhost/")


def short_name(ref: str) -> str:
    """An image's name as Docker reports it: `docker.io/gitd/hello:v3` -> `gitd/hello:v3`."""
    for registry in IMPLIED_REGISTRIES:
        if ref.startswith(registry):
            return ref[len(registry):]
    return ref


def exit_code(value) -> int | None:
    """An exit status as Docker reports it (an int, or a string in an
    event's attributes), or None for anything else."""
    text = str(value) if value is not None else ""
    return int(text) if text.lstrip("-").isdigit() else None


class Engine:
    def __init__(self, client: docker.DockerClient, instance: str, network_pool: str = "",
                 url: str = ""):
        self.client = client
        self.instance = instance
        self.url = url  # the engine_url setting ("": see `endpoint`)
        self.pool = netpool.pool_of(network_pool)  # None: Docker's default address pools
        self._allocating = threading.Lock()
        self._capabilities: Capabilities | None = None

    def another_client(self) -> docker.DockerClient:
        """A client of its own (a build's, so hanging up ends only the build)."""
        return client(self.url, timeout=120, version=self.client.api.api_version)

    @property
    def capabilities(self) -> Capabilities:
        """Asked of the engine once."""
        if self._capabilities is None:
            self._capabilities = probe(self.client)
        return self._capabilities

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
        except docker.errors.APIError as exc:
            if not container_gone(exc):
                raise
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
        if has_spaced_check(spec) and not self.capabilities.keeps_check_arguments:
            spec = unsplittable_check(spec)
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
        """The volumes carrying every label asked for: Podman 4.3 answers
        with those carrying any of them (an app's destroy would take its
        services' volumes, and other apps')."""
        wanted = {k: v for k, v in {LABEL_INSTANCE: self.instance, **labels}.items()
                  if v is not None}
        return [volume for volume in self.client.volumes.list(filters=self._filters(**labels))
                if wanted.items() <= (volume.attrs.get("Labels") or {}).items()]

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
        except docker.errors.APIError as exc:
            if not container_gone(exc):
                raise
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
        except docker.errors.APIError as exc:
            if not container_gone(exc):
                raise

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
        except docker.errors.APIError as exc:
            if container_gone(exc):
                return
            if "already in progress" not in str(exc):  # the swarm removing a task's container
                raise
            self._wait_removed(container)

    def _wait_removed(self, container, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.reload(container):
                return
            time.sleep(0.2)

    def reload(self, container) -> bool:
        try:
            container.reload()
            return True
        except docker.errors.APIError as exc:
            if not container_gone(exc):
                raise
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
    name, labels, state (`status`, as the SDK's container says it),
    health, read from the listing's status text ("Up 2 minutes (healthy)"),
    and published ports (the listing's: {"IP", "PrivatePort", "PublicPort"})."""

    def __init__(self, id: str, name: str, labels: dict, status: str, health: str | None,
                 ports: list | None = None):
        self.id, self.name, self.labels, self.status, self.health = id, name, labels, status, health
        self.ports = ports or []

    @classmethod
    def of(cls, row: dict) -> "Listed":
        names = row.get("Names") or [""]
        return cls(row.get("Id", ""), names[0].lstrip("/"), row.get("Labels") or {},
                   row.get("State") or "", listed_health(row.get("Status") or ""),
                   row.get("Ports") or [])


def listed_health(status_text: str) -> str | None:
    """Docker's health in a listing's status text; None: no health check."""
    for health in ("health: starting", "unhealthy", "healthy"):
        if f"({health})" in status_text:
            return health.removeprefix("health: ")
    return None


DEFAULT_CHECK_INTERVAL = 30.0  # seconds: Docker's and Podman's default
LIBPOD_API = "/v4.0.0/libpod"  # Podman's own API, beside the compatible one (404 unversioned)


class HealthChecks:
    """Runs the HEALTHCHECKs of this instance's running containers on an
    engine that does not (`Capabilities.runs_health_checks` false: Podman
    with no systemd for its timers), each at its own interval. Podman's
    API runs one on request and records the result as its timer would, with
    the same health_status event (gitd's route files and an external
    Traefik's docker provider follow it)."""

    def __init__(self, engine: Engine, clock=time.monotonic):
        self.engine = engine
        self.clock = clock
        self._due: dict[str, float] = {}  # container id -> when its next check is due
        self._intervals: dict[str, float | None] = {}  # container id -> seconds (None: no check)
        self._stop = threading.Event()

    def start(self, every: float = 0.5) -> "HealthChecks":
        def loop():
            said = None  # a failure that lasts is logged once, not twice a second
            while not self._stop.wait(every):
                try:
                    self.tick()
                    said = None
                except Exception as exc:  # noqa: BLE001 - an engine hiccup: the next tick tries again
                    if repr(exc) != said:
                        said = repr(exc)
                        log.exception("health checks: a look failed")
        threading.Thread(target=loop, daemon=True, name="health-checks").start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> None:
        """One look: the checks that are due run, side by side."""
        now = self.clock()
        rows = self.engine.client.api.containers(
            filters={**self.engine._filters(), "status": "running"})
        running = {row["Id"] for row in rows}
        for gone in set(self._due) - running:
            self._due.pop(gone, None)
            self._intervals.pop(gone, None)
        due = [cid for cid in running if self._is_due(cid, now)]
        if not due:
            return
        with ThreadPoolExecutor(max_workers=min(INSPECTIONS_AT_ONCE, len(due))) as pool:
            list(pool.map(self.run_check, due))

    def _is_due(self, container_id: str, now: float) -> bool:
        if container_id not in self._intervals:
            self._intervals[container_id] = self._interval_of(container_id)
            self._due[container_id] = now  # its first check at once, as a timer's
        interval = self._intervals[container_id]
        return interval is not None and now >= self._due[container_id]

    def _interval_of(self, container_id: str) -> float | None:
        try:
            config = self.engine.client.api.inspect_container(container_id)["Config"]
        except docker.errors.DockerException:
            return None
        test = (config.get("Healthcheck") or {}).get("Test") or []
        if not test or test[0] == "NONE":
            return None
        nanoseconds = (config.get("Healthcheck") or {}).get("Interval") or 0
        return nanoseconds / 1e9 if nanoseconds > 0 else DEFAULT_CHECK_INTERVAL

    def run_check(self, container_id: str) -> None:
        self._due[container_id] = self.clock() + (self._intervals.get(container_id) or 0)
        api = self.engine.client.api
        try:
            api._result(api._get(f"{api.base_url}{LIBPOD_API}/containers/{container_id}/healthcheck"))
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass  # gone meanwhile; a failing check is recorded by the engine itself


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


def container_gone(exc: docker.errors.APIError) -> bool:
    """The container is not there: Docker answers 404; Podman answers 500
    "... does not exist in database: no such container" for one that it is
    removing, whatever the request."""
    return isinstance(exc, docker.errors.NotFound) or "no such container" in _explain(exc)

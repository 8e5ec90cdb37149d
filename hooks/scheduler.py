"""Where a release's containers run: the seam between the deploy state
machine (hooks.deploy) and what runs them.

A scheduler turns container specs (plain data from hooks.deploy) into
running *units* and retires them. A unit is what the deploy waits on, routes
and retires: a container for `DockerScheduler`, a swarm service (one per
process type, its replicas spread over the nodes) for
`hooks.swarm.SwarmScheduler`. Each unit carries gitd's labels
(`unit.labels`) and a name (`unit.name`, `gitd-<instance>.<rest>`).

The deploy never asks which scheduler it has:

    start(specs) -> units        wait_ready(unit)      endpoints(unit, port)
    routes.publish(...)          remove(units)         units(app, **labels)

`routes` is the scheduler's route provider (hooks.router.RouteProvider):
here hooks.docker_routes.FileRoutes (a managed Traefik) or LabelRoutes.

nor do the app commands (ps, logs, run, ps:stop, ps:start):

    dynos(app) -> rows (hooks.dynos)           log_lines(units, tail) -> lines
    follow_logs(app, units, tail, wanted, emit) -> a follower: close(), done
    stop_units(units, timeout) -> count
    start_units(units) -> count                oneoff(spec) -> a one-off task

A one-off task (`run`) is bridged to the SSH channel by gitd.commands.run:

    attach() -> Attached      start(width, height)     resize(width, height)
    send(data) -> bool        end_input()              stop()
    wait() -> exit status     remove()
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker.errors
import structlog

from gitd.core.config import Settings
from gitd.core.errors import DeployError
from hooks import checks, dynos, router
from hooks.docker_routes import FileRoutes, LabelRoutes
from hooks.engine import (LABEL_APP, LABEL_PROCESS, LABEL_RELEASE, LABEL_ROLE,
                          LABEL_SEQ, Attached, Engine, exit_code)
from hooks.specs import web_deploys


def unit_label(unit) -> str:
    """What progress lines call a unit: its name without `gitd-<instance>`
    (and the separator after it: `.`, or `_` in a swarm service's name)."""
    separator = "." if "." in unit.name else "_"
    return unit.name.split(separator, 1)[-1]


log = structlog.get_logger("gitd.scheduler")

UNROUTE_WAIT = 10.0  # seconds for Traefik to drop the routes of a failed deploy


class DockerScheduler:
    """Containers on this host, through the Docker engine. With a managed
    Traefik, a deploy runs the health check itself and a route file sends
    its hosts to the new containers (hooks.docker_routes.FileRoutes). An
    external Traefik's docker provider reads each web container's labels,
    and routes one only once Docker calls it healthy."""

    kind = "docker"
    has_nodes = False
    needs_registry = False
    heals_itself = False  # hooks.health restarts an unhealthy web container
    routes_follow_tasks = False
    release_wait = 0.0

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        # gitd's own Traefik reads route files only (hooks.docker_routes)
        self._routes = (FileRoutes(engine, settings) if settings.traefik == "managed"
                        else LabelRoutes(engine, settings))
        self._exits = ExitWatch(engine)

    @property
    def routes(self) -> LabelRoutes | FileRoutes:
        return self._routes

    @property
    def routes_by_file(self) -> bool:
        return self._routes.routes_by_file

    @property
    def probes_deploys(self) -> bool:
        """Routed by file (a managed Traefik): wait_ready probes itself, and the
        deploy's route file routes it before Docker's first check."""
        return self.routes_by_file

    def prepare(self, network: str, app: str) -> None:
        self.engine.ensure_network(network, labels={LABEL_APP: app})

    def start(self, specs: list[dict], progress) -> list:
        units = []
        try:
            for spec in specs:
                progress.line(f"starting {spec['name']}")
                units.append(self.engine.run(spec))
        except BaseException:
            self.remove(units)
            raise
        return units

    def wait_ready(self, unit, check: checks.HealthCheck, progress) -> None:
        label = unit_label(unit)
        if unit.labels.get(LABEL_PROCESS) == "web" and not check.disabled:
            progress.line(f"waiting for {label} to pass {check.describe()}")
            # a check Docker runs rarely is never waited for (it may be
            # Traefik that cannot be asked now, not at the deploy's start)
            wait = (checks.wait_probe if self.routes_by_file or not checks.runs_often(unit)
                    else checks.wait_healthy)
            wait(self.engine, unit, check, progress.line, label)
            progress.line(f"{label} is healthy")
        else:
            checks.wait_running(self.engine, unit, min(2.0, check.wait), progress.line, label)

    def endpoints(self, unit, port: int) -> set[str]:
        self.engine.reload(unit)
        host_port = self.engine.host_port(unit, port)
        if host_port is None:
            raise DeployError(f"{unit.name} has no published port {port}")
        return {f"http://127.0.0.1:{host_port}"}

    def reconcile(self, live: dict[str, int | None], data_leftovers) -> list[str]:
        """The containers a stop left are gitd.service's to judge (one host,
        one snapshot), and the route files it left are followed from the
        start (follow_tasks)."""
        return []

    def follow_tasks(self) -> None:
        """With a managed Traefik, the route files follow the containers
        (hooks.docker_routes); an external one's docker provider reads their labels."""
        self._routes.follow()

    def remove_app(self, app: str, out) -> None:
        """Nothing beyond the app's containers (gitd.service removes those)."""

    @property
    def node_name(self) -> str:
        return socket.gethostname()

    def take_out_of_routes(self, node_id: str, wait: float) -> int:
        return 0  # one host: no node to drain

    def back_in_routes(self, node_id: str) -> None:
        pass

    def units(self, app: str | None = None, **labels) -> list:
        return self.engine.containers(app, **labels)

    def tail_logs(self, unit, lines: int = 20) -> list[str]:
        return self.engine.tail_logs(unit, lines)

    def remove(self, units: list, timeout: int = 0) -> None:
        for unit in units:
            self.engine.remove(unit, timeout=timeout)
        if self.routes_by_file:
            for route_key, seq in web_deploys(units):
                if not self._routes.web_running(route_key, seq):
                    self._routes.unpublish(route_key, seq)  # its file goes with the last of them

    def run_task(self, spec: dict, on_line, timeout: float) -> tuple[int | None, bool]:
        """Run a one-off container to its end, its output to `on_line`.
        Returns (exit status, timed out). A watchdog kills it at `timeout`:
        the log stream ends only when the container does."""
        container = self.engine.run(spec)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            self.engine.kill(container)

        watchdog = threading.Timer(timeout, kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode("utf-8", "replace").splitlines():
                    on_line(line)
            result = container.wait(timeout=timeout + 30)
        finally:
            watchdog.cancel()
            self.engine.remove(container)
        return result.get("StatusCode", 1), timed_out.is_set()

    # the app commands

    def dynos(self, app: str) -> list[dict]:
        """A row for each of the app's containers (hooks.dynos)."""
        self._exits.start()
        return [self._row(c) for c in self.engine.containers(app)]

    def dynos_of(self, apps: list[str]) -> dict[str, list[dict]]:
        """dynos() of each of `apps`, from one listing of the engine's
        containers (the dashboard's apps page: one listing per app took
        2.5 ms each on a quiet engine, far more on a busy one)."""
        self._exits.start()
        found: dict[str, list[dict]] = {app: [] for app in apps}
        for container in self.engine.containers():
            rows = found.get(container.labels.get(LABEL_APP))
            if rows is not None:
                rows.append(self._row(container))
        return found

    def _row(self, container) -> dict:
        row = dynos.container_row(container, self._last_exit(container))
        # Docker's first check of a container comes `health_interval` after
        # its start; gitd's own run of that check passed before its route
        # file named it, so the container serves and is called healthy
        # (unless it crashed since: the engine's restart is not what passed)
        if row["health"] == "starting" and not row["restarts"] and self._routes.carries(container):
            row["health"] = "healthy"
        return row

    def _last_exit(self, container) -> int | None:
        """A running container that has exited before (Docker restarted it):
        the status of that exit, from the engine's events."""
        state = container.attrs.get("State") or {}
        finished = dynos.parse_time(state.get("FinishedAt"))
        if container.status != "running" or finished is None:
            return None
        known = self._exits.last(container.id)
        return known if known is not None else self.engine.exit_status_at(container, finished)

    def log_lines(self, units: list, tail: int) -> list[str]:
        """The last `tail` lines of all `units`, in time order, prefixed."""
        lines = []
        for container in sorted(units, key=dynos.dyno):
            name = dynos.dyno(container)
            lines += [(stamp, f"{name} | {text}") for stamp, text in fetch_lines(container, tail)]
        return dynos.merge(lines, tail)

    def follow_logs(self, app: str, units: list, tail: int, wanted, emit) -> "AppLogs":
        """`logs -f`: the last `tail` lines of `units`, then the lines of the
        app's service containers that `wanted(labels)` picks, across deploys,
        restarts and crashes, to `emit`, until the follower is closed."""
        follower = AppLogs(self.engine, app, wanted, emit)
        follower.start(sorted(units, key=dynos.dyno), tail)
        return follower

    def stop_units(self, units: list, timeout: int) -> int:
        """SIGTERM (SIGKILL after `timeout`) to the running ones, in parallel;
        they are kept, for start_units. Returns how many were running."""
        running = [c for c in units if c.status == "running"]
        if running:
            with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
                list(pool.map(lambda c: self.engine.stop(c, timeout), running))
        return len(running)

    def start_units(self, units: list) -> int:
        stopped = [c for c in units if c.status != "running"]
        for container in stopped:
            self.engine.start(container)
        return len(stopped)

    def oneoff(self, spec: dict, abandoned=None) -> "ContainerOneOff":
        """A one-off container (`run`), created, not started."""
        return ContainerOneOff(self.engine, self.engine.create(spec), bool(spec.get("tty")))


def fetch_lines(container, tail: int) -> list[tuple[str, str]]:
    """(sortable timestamp, text) for the last `tail` lines of a container."""
    raw = container.logs(stdout=True, stderr=True, tail=tail, timestamps=True)
    lines = []
    for line in raw.decode("utf-8", "replace").splitlines():
        stamp, _, text = line.partition(" ")
        lines.append((dynos.sortable(stamp), text))
    return lines


class ExitWatch:
    """The exit status of the last run that ended of each of gitd's
    containers, from the engine's die events, kept from the first `start()`:
    Docker's state forgets it when it restarts a container, and the engine
    keeps only its last few hundred events."""

    KEEP = 10_000

    def __init__(self, engine: Engine):
        self.engine = engine
        self._statuses: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name="exit-watch")
                self._thread.start()

    def last(self, container_id: str) -> int | None:
        with self._lock:
            return self._statuses.get(container_id)

    def _watch(self) -> None:
        while True:
            try:
                for event in self.engine.events(None, ("die",)):
                    self._record(event)
            except Exception:  # noqa: BLE001 - the engine restarted: listen again
                time.sleep(1.0)

    def _record(self, event: dict) -> None:
        status = exit_code(((event.get("Actor") or {}).get("Attributes") or {}).get("exitCode"))
        if status is None:
            return
        with self._lock:
            self._statuses.pop(event.get("id", ""), None)  # newest last
            self._statuses[event.get("id", "")] = status
            while len(self._statuses) > self.KEEP:
                self._statuses.pop(next(iter(self._statuses)))


class _Run:
    """One run of a followed container: from its start to its exit."""

    def __init__(self, container, started_at: str, floor: float | None):
        labels = container.labels or {}
        self.id = container.id
        self.name = dynos.dyno(container)
        self.release = dynos.number(labels.get(LABEL_RELEASE))
        self.seq = dynos.number(labels.get(LABEL_SEQ))
        self.started_at = started_at
        self.last = floor  # the stamp of the last line shown (or where showing began)
        self.stream = None
        self.thread: threading.Thread | None = None
        self.exited = False


class AppLogs:
    """An app's processes, followed across deploys, restarts and crashes
    (`logs -f`). Docker's events for the app's service containers tell of
    each start and exit; each run of a wanted container gets a thread that
    follows its log (a container's log stream ends when it stops, and a
    restart is a new run). `emit` gets `web.1 | text` lines, and a line
    when a process starts or exits (hooks.dynos: `-----> web.1 (v3) started`).
    It ends only with `close()`, which ends the event stream and every log
    stream, and so their threads."""

    done = False  # it follows until closed
    ACTIONS = ("start", "die", "destroy")

    def __init__(self, engine: Engine, app: str, wanted, emit):
        self.engine, self.app, self.wanted, self.emit = engine, app, wanted, emit
        self._runs: dict[str, _Run] = {}  # container id -> its latest run
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._events = None
        self._watcher: threading.Thread | None = None

    def start(self, containers: list, tail: int) -> None:
        # listen first: a container starting while the others are listed is not missed
        self._events = self.engine.events(self.app, self.ACTIONS, **{LABEL_ROLE: "service"})
        now = time.time()
        for container in containers:
            state = container.attrs.get("State") or {}
            run = _Run(container, state.get("StartedAt", ""), now)
            self._begin(run, None, tail=tail)
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"logs-events-{self.app}")
        self._watcher.start()

    def close(self) -> None:
        self._closed.set()
        _close_quietly(self._events)
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            _close_quietly(run.stream)
        for thread in [self._watcher, *(run.thread for run in runs)]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)

    def _watch(self) -> None:
        try:
            for event in self._events:
                if self._closed.is_set():
                    return
                self._on_event(event)
        except Exception:  # noqa: BLE001 - closed under it, or the engine went away
            if not self._closed.is_set():
                log.warning("logs -f: the engine's events stream ended", app=self.app)
                self.emit(f"-----> lost the Docker engine's events: new processes of "
                          f"{self.app} are not followed")

    def _on_event(self, event: dict) -> None:
        action = event.get("Action") or event.get("status")
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if not self.wanted(attributes):
            return
        if action == "start":
            self._on_start(event.get("id", ""))
        elif action == "die":
            self._on_exit(event.get("id", ""), attributes.get("exitCode"))
        elif action == "destroy":
            with self._lock:
                self._runs.pop(event.get("id", ""), None)

    def _on_start(self, container_id: str) -> None:
        try:
            container = self.engine.client.containers.get(container_id)
        except docker.errors.DockerException:
            return  # gone already
        state = container.attrs.get("State") or {}
        with self._lock:
            previous = self._runs.get(container_id)
        if previous is not None and previous.started_at == state.get("StartedAt"):
            return  # that run is followed already (it started as the others were listed)
        run = _Run(container, state.get("StartedAt", ""), None)
        self.emit(dynos.started_line(run.name, run.release, container.attrs.get("RestartCount") or 0))
        self._begin(run, previous)

    def _on_exit(self, container_id: str, status) -> None:
        with self._lock:
            run = self._runs.get(container_id)
            if run is None or run.exited:
                return
            run.exited = True
            newer = [r.release for r in self._runs.values()
                     if r.name == run.name and r.seq > run.seq]
        if run.thread is not None:
            run.thread.join(timeout=2)  # its last lines first
        status = exit_code(status)
        self.emit(dynos.exited_line(run.name, run.release, status, max(newer, default=None)))

    def _begin(self, run: _Run, previous: _Run | None, tail: int | None = None) -> None:
        with self._lock:
            self._runs[run.id] = run
        run.thread = threading.Thread(target=self._follow, args=(run, previous, tail),
                                      daemon=True, name=f"logs-{run.name}")
        run.thread.start()

    def _follow(self, run: _Run, previous: _Run | None, tail: int | None) -> None:
        """A run's lines. A restarted container's log holds its earlier runs
        too: it is read from after the last line shown of the one before."""
        since = None
        if previous is not None:
            if previous.thread is not None:
                previous.thread.join(timeout=5)
            since = previous.last + 1e-6 if previous.last else None
        if self._closed.is_set():
            return
        try:
            run.stream = self.engine.client.api.logs(
                run.id, stream=True, follow=True, stdout=True, stderr=True, timestamps=True,
                tail="all" if tail is None else tail, since=since)
        except docker.errors.DockerException:
            return  # removed meanwhile
        if self._closed.is_set():
            _close_quietly(run.stream)
            return
        lines = dynos.LineSplitter()
        try:
            for chunk in run.stream:
                for line in lines.feed(chunk):
                    self._show(run, line)
            for line in lines.rest():
                self._show(run, line)
        except Exception:  # noqa: BLE001 - closed by close(), or the container went
            pass

    def _show(self, run: _Run, line: str) -> None:
        stamp, _, text = line.partition(" ")
        seconds = dynos.stamp_seconds(stamp)
        if seconds is not None:
            run.last = seconds
        self.emit(f"{run.name} | {text}")


class PumpedStreams:
    """Log streams (iterables of prefixed lines, each with `close()`), each
    pumped to `emit` by a thread; `done` once they have all ended."""

    def __init__(self, streams: list, emit):
        self.streams = streams
        self.emit = emit
        self._threads = [threading.Thread(target=self._pump, args=(s,), daemon=True,
                                          name=f"logs-{s.name}") for s in streams]
        for thread in self._threads:
            thread.start()

    @property
    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _pump(self, stream) -> None:
        try:
            for line in stream:
                self.emit(line)
        except Exception:  # noqa: BLE001 - closed by close()
            pass

    def close(self) -> None:
        for stream in self.streams:
            _close_quietly(stream)
        for thread in self._threads:
            thread.join(timeout=5)


def _close_quietly(stream) -> None:
    if stream is None:
        return
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - closing what may be closed already
        pass


class OneOffInput:
    """The client's input to a one-off task, through `self.attached`."""

    attached: Attached | None
    tty: bool

    def send(self, data: bytes) -> bool:
        self.attached.send(data)
        return True

    def end_input(self) -> None:
        if not self.tty:  # with a pty, ^D travels as a byte instead
            self.attached.close_stdin()


class ContainerOneOff(OneOffInput):
    """A created (not started) one-off container: attach, then start."""

    def __init__(self, engine: Engine, container, tty: bool):
        self.engine = engine
        self.container = container
        self.name = container.name
        self.tty = tty
        self.attached: Attached | None = None

    def attach(self) -> Attached:
        self.attached = self.engine.attach(self.container)
        return self.attached

    def start(self, width: int = 0, height: int = 0) -> None:
        self.engine.start(self.container)
        if self.tty:
            self.resize(width, height)

    def resize(self, width: int, height: int) -> None:
        if width and height:
            try:
                self.container.resize(height=height, width=width)
            except Exception:  # noqa: BLE001 - best effort: it may have exited
                pass

    def stop(self) -> None:
        self.engine.stop(self.container, 0)

    def wait(self) -> int:
        return int(self.container.wait().get("StatusCode", 1))

    def remove(self) -> None:
        self.engine.remove(self.container)


def confirm_unrouted(scheduler, settings: Settings, units: list, progress,
                     timeout: float = UNROUTE_WAIT) -> None:
    """After a failed deploy removed its units, wait until Traefik routes
    none of them: while a sibling (another service of the release, another
    process type) was still starting, Traefik may have taken a web
    container in (a route file written, or an external Traefik's docker
    provider reading its labels), at a higher priority than the live
    release, and requests sent there now fail until Traefik sees it gone.
    The push returns once the live release serves again."""
    api = settings.api_url
    if not api:
        return
    providers = scheduler.routes.providers
    for route_key, seq in sorted(web_deploys(units)):
        if not router.still_routed(api, route_key, seq, providers):
            continue
        started = time.monotonic()
        if router.confirm_unrouted(api, route_key, seq, providers, timeout):
            progress.line(f"Traefik no longer routes {router.route_name(route_key, seq)} "
                          f"({time.monotonic() - started:.1f}s)")
        else:
            progress.warn(f"Traefik still routes {router.route_name(route_key, seq)} "
                          f"{timeout:g}s after its containers were removed")


def confirm_routes(scheduler, settings: Settings, target, units: list, progress) -> None:
    """Publish the deploy's routes to its web units' endpoints and wait until
    Traefik routes them (HTTP, and HTTPS when planned)."""
    web = [u for u in units if u.labels.get(LABEL_PROCESS) == "web"]
    if not web or not target.hosts:
        return
    servers: set[str] = set()
    for unit in web:
        servers |= scheduler.endpoints(unit, target.port)
    scheduler.routes.publish(target.route_key, target.seq, target.routes, servers, target.tls)
    api = settings.api_url
    if not api:
        progress.warn("no Traefik API configured: cannot confirm the switch; waiting 3s")
        time.sleep(3)
        return
    planned = router.routes(target.route_key, target.seq, target.routes,
                            settings.traefik_entrypoint, target.tls)
    took = router.confirm_routed(api, target.route_key, target.seq, servers,
                                 routers=[r.router for r in planned],
                                 provider=scheduler.routes.providers)
    over = " (HTTP and HTTPS)" if target.tls else ""
    shown = ", ".join(str(r) for r in target.routes)
    progress.line(f"Traefik routes {shown} to the new containers{over} ({took:.1f}s)")

"""Deploy recovery at start: after a crash or restart, the current release's
containers serve, leftovers of interrupted deploys go, and the state tells
the truth. Beside the pipeline, whose rules it shares: which containers make
a complete release (`pipeline.release_formations`) and what a release's
routes are (`Pipeline.targets`, rendered by `specs.route_labels`: what
its deploy made, read from what the release recorded, never parsed back
out of labels).

A deploy killed once its new containers were healthy is finished rather
than undone: Traefik already routes to them (a healthy container with the
highest priority takes the traffic), so removing them would drop requests,
while the old ones no longer get any.

The engine, scheduler and pipeline are asked for only when needed (Docker
may be unreachable at start): the daemon (gitd.service) hands them in as
callables, with what it alone knows (service containers' names, the data
leftovers of its service runtime)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable

import structlog

from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.core.store import Store
from hooks import checks, router
from hooks.docker_routes import FileRoutes
from hooks.specs import route_labels
from hooks.engine import (LABEL_APP, LABEL_COMPONENT, LABEL_PROCESS, LABEL_RELEASE, LABEL_ROLE,
                          LABEL_SEQ, LABEL_SERVICE)
from hooks.pipeline import release_formations
from hooks.specs import route_key_of
from hooks.swarm import TASK_ROLE

log = structlog.get_logger("gitd.service")

# at start, how long reconcile waits for a container whose health check is
# still starting to pass (it may be routed the moment it passes)
HEALTH_SETTLE_SECONDS = 15.0


class Recovery:
    def __init__(self, settings: Settings, store: Store, *, engine: Callable, scheduler: Callable,
                 pipeline: Callable, app_lock: Callable, data_leftovers: Callable,
                 service_containers: Callable[[str], tuple]):
        self.settings = settings
        self.store = store
        self._engine = engine  # raises GitdError while Docker is unreachable
        self._scheduler = scheduler
        self._pipeline = pipeline
        self.app_lock = app_lock
        self._data_leftovers = data_leftovers
        self._service_containers = service_containers  # a service's own container names
        self._adoptions: list[threading.Thread] = []  # deploys finished at start, not yet retiring

    def reconcile(self) -> list[str]:
        notes = []
        try:
            engine = self._engine()
        except GitdError as exc:
            log.warning("reconcile skipped containers", error=str(exc))
            engine = None
        if engine:
            notes += self._reconcile_scheduler()
        # one snapshot for every decision: a container that turns healthy
        # between two looks would be judged twice, differently
        snapshot = self._reconcile_services(engine, own_containers(engine), notes) if engine else []
        if engine and any(_health_starting(c) for c in snapshot):
            snapshot = self._settle_health(engine)
        adopted = self._finish_interrupted_deploys(snapshot, notes) if engine else set()
        routed_leftovers = self._remove_leftovers(engine, snapshot, notes) if engine else []
        if engine:
            self._stage_live_routes(engine, snapshot)
        for deployment in self.store.end_unfinished_deployments(
                "interrupted: gitd stopped during this deployment", adopted):
            notes.append(f"{deployment.app} deployment {deployment.id}: ended (interrupted)")
        for release in self.store.interrupted_releases():
            if (release.app, release.version) in adopted:
                continue
            self.store.update_release(release.app, release.version, status="failed",
                                      log=release.log + " !     interrupted: gitd stopped during this deploy\n")
            notes.append(f"{release.app} v{release.version}: marked failed (interrupted)")
            if engine:
                try:
                    engine.remove_image(f"gitd/{release.app}:v{release.version}")
                except GitdError:
                    pass
        shutil.rmtree(self.settings.work_dir, ignore_errors=True)  # builds cut short
        if engine:  # the pipeline needs Docker; the next deploy writes them otherwise
            self._pipeline().sync_fallbacks_quietly()  # apps destroyed or routed while stopped
        self._retire_later(routed_leftovers, notes, snapshot, {app for app, _ in adopted})
        for note in notes:
            log.info("reconcile", note=note)
        return notes

    def _reconcile_scheduler(self) -> list[str]:
        """What the scheduler keeps running while gitd is down, put right
        (the store's live seq says which deploy is live)."""
        live = {a.name: a.live_seq for a in self.store.list_apps()}
        return self._scheduler().reconcile(live, self._data_leftovers)

    def _reconcile_services(self, engine, snapshot: list, notes: list) -> list:
        """Database and cache containers: start those stopped, remove those no
        service owns (a connect client or an upgrade cut short). Returns the
        rest of the snapshot: the apps' containers."""
        services = {s.name for s in self.store.list_services()}
        apps_containers = []
        for container in snapshot:
            service = container.labels.get(LABEL_SERVICE)
            if service is None:
                apps_containers.append(container)
            elif service not in services or container.name not in self._service_containers(service):
                engine.remove(container)
                notes.append(f"removed leftover container {container.name}")
            elif container.status in ("exited", "created"):
                container.start()
                notes.append(f"started {container.name}")
        return apps_containers

    def _settle_health(self, engine) -> list:
        """A web container still starting may turn healthy at any moment, and
        Traefik then routes to it: removing it as a leftover would send its
        requests to a dying container. Docker may check it only
        health_interval after its start (hooks.checks.web_healthcheck), so
        gitd runs its check itself, as the deploy did: one that passes counts
        as healthy in the snapshot. Wait (bounded) until each is judged, then
        decide from that snapshot."""
        deadline = time.monotonic() + HEALTH_SETTLE_SECONDS
        passed: set[str] = set()  # ids: each look inspects afresh, Docker still says starting
        while True:
            snapshot = [c for c in own_containers(engine) if c.labels.get(LABEL_SERVICE) is None]
            for container in snapshot:
                if not _health_starting(container):
                    continue
                if container.id in passed or (time.monotonic() < deadline
                                              and checks.passes_now(engine, container)):
                    passed.add(container.id)
                    _judged_healthy(container)
            if not any(_health_starting(c) for c in snapshot) or time.monotonic() > deadline:
                return snapshot
            time.sleep(0.25)

    def _finish_interrupted_deploys(self, snapshot: list, notes: list) -> set:
        """Make live the newest complete, healthy set of containers of an
        app that is not its live one. Returns the (app, version) adopted."""
        adopted = set()
        groups: dict = {}
        for container in snapshot:
            labels = container.labels
            if labels.get(LABEL_ROLE) != "service":
                continue
            key = (labels.get(LABEL_APP), labels.get(LABEL_SEQ), labels.get(LABEL_RELEASE))
            groups.setdefault(key, []).append(container)
        for (app_name, seq, version), containers in sorted(
                groups.items(), key=lambda item: -int(item[0][1] or 0)):
            try:
                app = self.store.get_app(app_name)
                seq_n, version_n = int(seq), int(version)
            except (GitdError, TypeError, ValueError):
                continue
            if app.name in {a for a, _ in adopted} or app.live_seq is None or seq_n <= app.live_seq:
                continue
            try:
                release = self.store.get_release(app.name, version_n)
            except GitdError:
                continue
            if not complete_and_healthy(release, app.scale, containers):
                continue
            self.store.set_live(app.name, version_n, seq_n)
            if release.status in ("building", "deploying"):
                self.store.update_release(app.name, version_n, status="succeeded",
                                          log=release.log + "-----> finished by gitd after a restart\n")
            adopted.add((app.name, version_n))
            notes.append(f"{app.name} v{version_n}: interrupted deploy was healthy; finished it")
        return adopted

    def _remove_leftovers(self, engine, snapshot: list, notes: list) -> list:
        """Remove at once what is not the live deploy and not routed (not
        healthy yet: before it can become healthy and take traffic); start
        live containers that are down. Returns the routed leftovers."""
        known = {a.name: a for a in self.store.list_apps()}
        routed = []
        for container in snapshot:
            app = known.get(container.labels.get(LABEL_APP))
            seq = container.labels.get(LABEL_SEQ)
            if app is not None and (_routed(container) or _retired_by_a_live_release(container, app)):
                if str(app.live_seq) != seq:
                    routed.append(container)  # may carry traffic: drained before it stops
                    continue
            if app is None or str(app.live_seq) != seq:
                notes.append(f"removed leftover container {container.name}")
                engine.remove(container)
            elif container.status in ("exited", "created") and not app.settings.get("stopped"):
                container.start()
                notes.append(f"started {container.name}")
        return routed

    def _stage_live_routes(self, engine, snapshot: list) -> None:
        """A managed Traefik starts with gitd and reads route files only
        (hooks.docker_routes): a live deploy that has none (an older gitd's
        docker provider had taken it over) gets one to its running healthy
        web containers before Traefik starts, so every app is served from
        Traefik's first read of the files; the files there are brought to
        the containers as they are now (an engine restarted meanwhile
        started them again on other ports). gitd follows them once it runs."""
        routes = self._scheduler().routes
        if not isinstance(routes, FileRoutes):
            return
        web = [c for c in snapshot if c.labels.get(LABEL_PROCESS) == "web"
               and c.labels.get(LABEL_ROLE) == "service" and _routed(c)]
        by_app: dict[str, list] = {}
        for container in web:
            by_app.setdefault(container.labels.get(LABEL_APP), []).append(container)
        for name, containers in by_app.items():
            try:
                app = self.store.get_app(name)
                live = [c for c in containers if c.labels.get(LABEL_SEQ) == str(app.live_seq)]
                if not live or not app.current_release:
                    continue
                targets = self._pipeline().targets(
                    self.store.get_release(name, app.current_release), app.live_seq)
            except (GitdError, KeyError, TypeError, ValueError) as exc:
                log.warning("cannot stage the routes of a live deploy", app=name, error=str(exc))
                continue
            for target in targets:
                ports = (engine.host_port(c, target.port) for c in live
                         if route_key_of(c.labels) == target.route_key)
                servers = {f"http://127.0.0.1:{port}" for port in ports if port}
                if target.hosts and servers:
                    routes.stage(target.route_key, target.seq, target.routes, servers,
                                 target.tls)
        routes.sync()  # the files there already: on the ports their containers have now

    def _retire_later(self, containers: list, notes: list, snapshot: list, adopted: set) -> None:
        """Old containers that may still carry traffic, found at start: drained
        and retired in the background, as a deploy would have. For a deploy
        finished here, only once Traefik is seen routing to it (a deploy
        confirms that before it retires anything): stopping the old ones
        before would send their requests to a dying container."""
        by_app: dict[str, list] = {}
        for container in containers:
            by_app.setdefault(container.labels.get(LABEL_APP), []).append(container)
        for name, group in by_app.items():
            app = self.store.get_app(name)
            pipeline = self._pipeline()
            drain = pipeline.drain_of(app.settings)
            stop_timeout = pipeline.stop_timeout_of(app.settings)
            if name in adopted:
                web = [c for c in snapshot if c.labels.get(LABEL_APP) == name
                       and c.labels.get(LABEL_SEQ) == str(app.live_seq)
                       and c.labels.get(LABEL_PROCESS) == "web"]
                thread = threading.Thread(target=self._retire_once_routed, daemon=True,
                                          name=f"adopted-{name}",
                                          args=(name, app.live_seq, web, group, drain, stop_timeout))
                self._adoptions.append(thread)
                thread.start()
            else:
                pipeline.deployer.retire_later(name, group, drain, stop_timeout)
            notes.append(f"retiring {len(group)} old container(s) of {name} in the background")

    def wait_adoptions(self, timeout: float) -> bool:
        """Wait (bounded) until the deploys finished at start have handed their
        old containers to the retirements. True when all did in time."""
        deadline = time.monotonic() + timeout
        for thread in list(self._adoptions):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._adoptions)

    def _retire_once_routed(self, name: str, seq: int, web: list, old: list, drain: float,
                            stop_timeout: int) -> None:
        if not self._routed_in_traefik(name, seq, web):
            log.warning("Traefik does not route the deploy finished at start; the old containers "
                        "keep running until the next deploy", app=name, seq=seq)
            return
        with self.app_lock(name):
            if self.store.get_app(name).live_seq != seq:
                return  # a newer deploy retires them with its own old containers
            self._pipeline().deployer.retire_later(name, old, drain, stop_timeout)

    def _routed_in_traefik(self, name: str, seq: int, web: list) -> bool:
        """Every route of the adopted deploy (one per app.json service) sends
        its hosts to its web containers, on the port its release recorded."""
        api = self.settings.api_url
        if not api:
            time.sleep(3)  # as a deploy does without an API to ask
            return True
        try:
            release = self.store.get_release(name, int(web[0].labels.get(LABEL_RELEASE, "")))
            targets = self._pipeline().targets(release, seq)
        except (GitdError, IndexError, KeyError, TypeError, ValueError):
            return True  # no web container, or no release to route: nothing routed
        engine = self._engine()
        for target in targets:
            if not target.hosts:
                continue  # not routed at all
            ports = (engine.host_port(c, target.port) for c in web
                     if route_key_of(c.labels) == target.route_key)
            urls = {f"http://127.0.0.1:{port}" for port in ports if port}
            if not urls:
                continue
            try:
                router.confirm_routed(api, target.route_key, seq, urls,
                                      timeout=self.settings.deploy_timeout,
                                      provider=self._scheduler().routes.providers)
            except GitdError:
                return False
        return True

    # routes that no longer match the settings

    def routes_drifted(self, app) -> bool:
        """The live web containers' Traefik labels differ from what a deploy
        would make now (HTTPS turned on or off, custom certificates)."""
        if not app.current_release or app.live_seq is None:
            return False
        web = [c for c in self._scheduler().units(app.name)
               if c.labels.get(LABEL_PROCESS) == "web"
               and c.labels.get(LABEL_ROLE) == "service"
               and c.labels.get(LABEL_SEQ) == str(app.live_seq)]
        release = self.store.get_release(app.name, app.current_release)
        try:
            targets = self._pipeline().targets(release, app.live_seq) if web else []
        except (GitdError, KeyError, TypeError, ValueError) as exc:
            log.warning("cannot tell whether its routes drifted", app=app.name, error=str(exc))
            return False  # a redeploy would fail as well
        for target in targets:  # one web container of each route is enough
            labels = next((c.labels for c in web if route_key_of(c.labels) == target.route_key), None)
            if labels is not None and route_labels(self.settings, target) != {
                    k: v for k, v in labels.items() if k.startswith("traefik.")}:
                return True
        return False

    def refresh_routes(self) -> list[str]:
        """Redeploy (zero downtime) the apps whose routes drifted, so turning
        HTTPS on applies to the apps already running. Returns their names."""
        refreshed = []
        try:
            apps = [a for a in self.store.list_apps() if self.routes_drifted(a)]
        except GitdError as exc:
            log.warning("route refresh skipped", error=str(exc))
            return refreshed
        for app in apps:
            app_log = log.bind(app=app.name)
            try:
                with self.app_lock(app.name):
                    if self.routes_drifted(self.store.get_app(app.name)):
                        self._pipeline().redeploy(app.name, lambda line: app_log.info(line.rstrip()),
                                                  "Routes changed (HTTPS settings): redeploying")
                        refreshed.append(app.name)
            except GitdError as exc:
                app_log.warning("route refresh failed; the old routes keep serving", error=str(exc))
        log.info("routes checked", redeployed=refreshed)
        return refreshed


def complete_and_healthy(release, scale: dict, containers: list) -> bool:
    """Every container the release's formation asks for is there and
    running, and the web ones are healthy."""
    if release.status not in ("building", "deploying", "succeeded"):
        return False
    wanted = {(component, process): n
              for component, formation in release_formations(release, scale).items()
              for process, n in formation.items()}
    have: dict = {}
    for container in containers:
        state = container.attrs.get("State") or {}
        process = container.labels.get(LABEL_PROCESS)
        healthy = (state.get("Health") or {}).get("Status") == "healthy"
        if state.get("Status") != "running" or (process == "web" and not healthy):
            return False
        key = (container.labels.get(LABEL_COMPONENT), process)
        have[key] = have.get(key, 0) + 1
    return have == wanted


def own_containers(engine) -> list:
    """This instance's containers that gitd runs itself: a swarm task's
    container is the swarm's to start, replace and remove."""
    return [c for c in engine.containers() if c.labels.get(LABEL_ROLE) != TASK_ROLE]


def _health_starting(container) -> bool:
    state = container.attrs.get("State") or {}
    return (state.get("Status") == "running"
            and container.labels.get(LABEL_ROLE) == "service"
            and (state.get("Health") or {}).get("Status") == "starting")


def _judged_healthy(container) -> None:
    """The snapshot's view of a container whose check gitd ran and saw pass."""
    state = container.attrs.setdefault("State", {})
    state["Health"] = {**(state.get("Health") or {}), "Status": "healthy"}


def _routed(container) -> bool:
    """Traefik routes a running web service container once it is healthy
    (at once when it has no health check: checks:disable)."""
    state = container.attrs.get("State") or {}
    return (container.status == "running"
            and container.labels.get(LABEL_PROCESS) == "web"
            and container.labels.get(LABEL_ROLE) == "service"
            and (state.get("Health") or {}).get("Status") in ("healthy", None))


def _retired_by_a_live_release(container, app) -> bool:
    """An older release's running service container: it may still carry
    traffic, so it drains before it stops."""
    seq = container.labels.get(LABEL_SEQ, "")
    return (container.labels.get(LABEL_ROLE) == "service" and container.status == "running"
            and seq.isdigit() and app.live_seq is not None and int(seq) < int(app.live_seq))

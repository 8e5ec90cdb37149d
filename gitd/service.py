"""The daemon's services in one place: settings, store, Docker, pipeline, locks."""

from __future__ import annotations

import collections
import contextlib
import functools
import shutil
import threading
import time

import docker.errors
import structlog

from gitd import gitserve, repos, scheduling
from hooks import tls

from gitd.core import certs
from gitd.core.config import Settings
from gitd.core.errors import GitdError, NotFound, PermissionDenied
from gitd.services.base import container_name as service_container
from gitd.services.base import relay_name
from gitd.core.store import Store
from hooks import engine as engine_mod
from hooks import router
from hooks.deployments import Deployments
from hooks.health import HealthWatcher
from hooks.locks import AppLocks
from hooks.pipeline import Pipeline, service_paths
from hooks.retire import Retirements
from hooks.swarm import TASK_ROLE

log = structlog.get_logger("gitd.service")

# at start, how long reconcile waits for Docker to judge a container whose
# health check is still starting (it may be routed the moment it passes)
HEALTH_SETTLE_SECONDS = 15.0


class Gitd:
    def __init__(self, settings: Settings, store: Store | None = None):
        self.store = store or Store(settings.db_path)
        if not settings.instance:
            from gitd.core.config import replace
            settings = replace(settings, instance=self.store.instance)
        self.settings = settings
        self.deployments = Deployments(self.store, settings.max_log_bytes)
        self.locks = AppLocks()
        self.retirements = Retirements()  # old containers draining after a deploy
        self._adoptions: list[threading.Thread] = []  # deploys finished at start, not yet retiring
        self._engine = None
        self._engine_guard = threading.Lock()
        self._repo_guard = threading.Condition()  # git sessions vs repository gc
        self._repo_users: collections.Counter = collections.Counter()
        self._collecting: set[str] = set()
        self.traefik_child = None  # the managed Traefik (gitd.traefik), set by the daemon

    @property
    def engine(self) -> engine_mod.Engine:
        with self._engine_guard:
            if self._engine is None:
                self._engine = engine_mod.Engine(engine_mod.connect(), self.settings.instance,
                                                 self.settings.network_pool)
            return self._engine

    @functools.cached_property
    def scheduler(self):
        """What runs the apps' containers (hooks.scheduler): this host's
        Docker, or the swarm this engine manages."""
        # not cached while Docker is unreachable: self.engine raises
        return scheduling.build_scheduler(self.engine, self.settings, self.store)

    @functools.cached_property
    def scheduler_class(self) -> type:
        """The scheduler's kind and capabilities (has_nodes, ...), known
        without reaching the engine."""
        return scheduling.scheduler_class(self.settings)

    @functools.cached_property
    def pipeline(self) -> Pipeline:
        return Pipeline(self.settings, self.store, self.engine, self.retirements,
                        try_lock=lambda app: self.locks.hold(app, 0), scheduler=self.scheduler,
                        deployments=self.deployments)

    @functools.cached_property
    def services(self):
        from gitd.services.lifecycle import Services
        return Services(self)

    def watch_health(self) -> HealthWatcher | None:
        """Restart live web containers that stay unhealthy (hooks.health);
        a swarm restarts its unhealthy tasks itself."""
        after = self.settings.unhealthy_restart
        if self.scheduler_class.heals_itself or not 0 < after <= 86400:
            return None
        watcher = HealthWatcher(self.engine, after, self._restart_unhealthy, self._record_restart)
        watcher.start(every=min(5.0, max(0.5, after / 4)))
        return watcher

    def _restart_unhealthy(self, container) -> None:
        """Only a live deploy's container, and not while a deploy runs."""
        app = container.labels.get(engine_mod.LABEL_APP, "")
        with self.locks.hold(app, 0):
            live = self.store.get_app(app).live_seq
            if container.labels.get(engine_mod.LABEL_SEQ) != str(live):
                raise GitdError("not the live deploy's container")
            self.engine.restart(container, timeout=self.pipeline.stop_timeout_of(
                self.store.get_app(app).settings))

    def _record_restart(self, app: str, container: str, count: int) -> None:
        self.store.update_app_settings(app, health_restarts={
            "count": count, "container": container,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def app_lock(self, app: str, notify=None):
        def waiting():
            if notify:
                notify(f"-----> Waiting for the deploy of {app} in progress to finish")
        return self.locks.hold(app, self.settings.lock_wait, on_wait=waiting)

    # apps

    def create_app(self, name: str):
        app = self.store.create_app(name)
        try:
            gitserve.create_repo(self.settings.repos_dir, name)
            self.store.add_domains(name, [f"{name}.{self.settings.domain}"])
        except Exception:
            self.store.delete_app(name)
            shutil.rmtree(gitserve.repo_path(self.settings.repos_dir, name), ignore_errors=True)
            raise
        return app

    def destroy_app(self, name: str, out) -> None:
        self.store.get_app(name)
        with self.app_lock(name, notify=out):
            self.retirements.cancel(name)
            engine = self.engine
            self.scheduler.remove_app(name, out)
            if self.scheduler.needs_registry:
                self._remove_from_registry(name)
            containers = engine.containers(name)
            for container in containers:
                engine.remove(container)
            out(f"removed {len(containers)} container(s)")
            removed = 0
            release_images = set()
            for release in self.store.releases(name):
                release_images.add(release.image_id)
                release_images |= {c.get("image_id") for c in (release.components or {}).values()}
            for image in engine.images(name) + engine.build_stage_images(name):
                release_images.add(image.id)
            for image_id in release_images - {None, ""}:
                if self._remove_app_image(name, image_id):
                    removed += 1
            out(f"removed {removed} image(s)")
            wait = self.scheduler.release_wait
            for network in engine.networks(**{engine_mod.LABEL_APP: name}):
                engine.remove_network(network.name, wait=wait)
            volumes = engine.volumes(**{engine_mod.LABEL_APP: name})
            for volume in volumes:
                engine.remove_volume(volume.name, wait=wait)
            if volumes:
                out(f"removed {len(volumes)} storage volume(s)")
            shutil.rmtree(gitserve.repo_path(self.settings.repos_dir, name), ignore_errors=True)
            self.pipeline.drop_app_files(name)
            self.store.delete_app(name)
            if certs.remove_custom(self.settings, name):
                out("removed its custom certificate")
            tls.sync_dynamic(self.settings, self.store)
            self.pipeline.sync_fallbacks_quietly()

    def _remove_from_registry(self, app: str) -> None:
        """Best effort: the registry's manifests of the app's releases (their
        blobs go at the registry's next garbage collection)."""
        from hooks import registry
        for release in self.store.releases(app):
            tags = [f"v{release.version}"] + [f"v{release.version}-{c}"
                                              for c in (release.components or {})]
            for tag in tags:
                registry.remove_image(self.settings, app, tag)

    def _remove_app_image(self, app: str, image_id: str) -> bool:
        """Untag the app's own tags of an image (another app built from the
        same layers may share it), then remove it if nothing else uses it.
        True when the image is gone."""
        client = self.engine.client
        try:
            image = client.images.get(image_id)
        except docker.errors.ImageNotFound:
            return False
        for tag in image.tags:
            if tag.startswith(f"gitd/{app}:"):
                self.engine.remove_image(tag)
        self.engine.remove_image(image_id)
        try:
            client.images.get(image_id)
            return False
        except docker.errors.ImageNotFound:
            return True

    # pushes

    @contextlib.contextmanager
    def using_repo(self, app: str):
        """A git session reading or storing packs: it waits for a garbage
        collection of the repository to end, and none starts while it runs.
        The app's lock cannot do this since a push takes it only once its
        pack is stored: a pack stored during a collection loses the objects
        the collection found unreachable (an old refused push's, sent again)."""
        with self._repo_guard:
            self._repo_guard.wait_for(lambda: app not in self._collecting)
            self._repo_users[app] += 1
        try:
            yield
        finally:
            with self._repo_guard:
                self._repo_users[app] -= 1
                if self._repo_users[app] <= 0:
                    del self._repo_users[app]
                self._repo_guard.notify_all()

    def collect_repo_later(self, app: str) -> None:
        """Garbage-collect the app's repository on a thread of its own, under
        the app's lock, when no deploy holds it and no git session uses the
        repository (else a later push does)."""
        threading.Thread(target=self.collect_repo, args=(app,), daemon=True,
                         name=f"gitd-gc-{app}").start()

    def collect_repo(self, app: str) -> bool:
        """True when it ran (see collect_repo_later)."""
        try:
            with self.locks.hold(app, 0):
                with self._repo_guard:
                    if self._repo_users[app]:
                        return False
                    self._collecting.add(app)
                try:
                    repos.collect(gitserve.repo_path(self.settings.repos_dir, app), app)
                finally:
                    with self._repo_guard:
                        self._collecting.discard(app)
                        self._repo_guard.notify_all()
                return True
        except GitdError:
            return False  # busy: a later push collects

    @contextlib.contextmanager
    def push_lock(self, app: str, key, notify=None):
        """The app's lock for a push whose pack is stored, then the pusher's
        right to it asked again: the pack may have taken long to arrive, or
        the push waited for another deploy, while the key was removed, its
        grant revoked or the app destroyed."""
        with self.app_lock(app, notify=notify):
            found = self.store.key_by_fingerprint(key.fingerprint)
            if found is None or found.name != key.name:
                raise PermissionDenied("this key was removed while the push arrived")
            if not self.store.app_exists(app):
                raise NotFound(f"app {app!r} was destroyed while the push arrived")
            if not found.is_admin and not self.store.granted(app, found.name):
                raise PermissionDenied(f"key {found.name} lost its access to {app} while the push arrived")
            yield

    def deploy_push(self, app: str, repo, pushed_by: str | None):
        def deploy(commit: bytes, sink):
            self.pipeline.push(app, repo, commit, pushed_by, sink)
        return deploy

    # start-up

    def reconcile(self) -> list[str]:
        """After a crash or restart: the current release's containers serve,
        leftovers of interrupted deploys go, and the state tells the truth.

        A deploy killed once its new containers were healthy is finished
        rather than undone: Traefik already routes to them (a healthy
        container with the highest priority takes the traffic), so removing
        them would drop requests, while the old ones no longer get any."""
        notes = []
        try:
            engine = self.engine
        except GitdError as exc:
            log.warning("reconcile skipped containers", error=str(exc))
            engine = None
        if engine:
            notes += self._reconcile_scheduler()
        # one snapshot for every decision: a container that turns healthy
        # between two looks would be judged twice, differently
        snapshot = self._reconcile_services(engine, _own_containers(engine), notes) if engine else []
        if engine and any(_health_starting(c) for c in snapshot):
            snapshot = self._settle_health(engine, notes)
        adopted = self._finish_interrupted_deploys(snapshot, notes) if engine else set()
        routed_leftovers = self._remove_leftovers(engine, snapshot, notes) if engine else []
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
            self.pipeline.sync_fallbacks_quietly()  # apps destroyed or routed while stopped
        self._retire_later(routed_leftovers, notes, snapshot, {app for app, _ in adopted})
        for note in notes:
            log.info("reconcile", note=note)
        return notes

    def _reconcile_scheduler(self) -> list[str]:
        """What the scheduler keeps running while gitd is down, put right
        (the store's live seq says which deploy is live)."""
        live = {a.name: a.live_seq for a in self.store.list_apps()}
        return self.scheduler.reconcile(
            live, lambda: self.services.runtime.leftovers(self.store.list_services()))

    # routes that no longer match the settings

    def routes_drifted(self, app) -> bool:
        """The live web containers' Traefik labels differ from what a deploy
        would make now (HTTPS turned on or off, custom certificates)."""
        if not app.current_release or app.live_seq is None:
            return False
        web = [c for c in self.scheduler.units(app.name)
               if c.labels.get(engine_mod.LABEL_PROCESS) == "web"
               and c.labels.get(engine_mod.LABEL_ROLE) == "service"
               and c.labels.get(engine_mod.LABEL_SEQ) == str(app.live_seq)]
        if not web:
            return False
        release = self.store.get_release(app.name, app.current_release)
        if not release.components:
            return self._labels_drifted(app.name, web[0].labels, app.live_seq,
                                        self.store.routes(app.name))
        app_routes = self.store.routes(app.name)
        for container in web:  # one web container of each app.json service
            component = container.labels.get(engine_mod.LABEL_COMPONENT)
            if component in release.components and self._labels_drifted(
                    f"{app.name}_{component}", container.labels, app.live_seq,
                    service_paths(app_routes, release.components[component])):
                return True
        return False

    def _labels_drifted(self, route_key: str, labels: dict, seq: int, paths: list) -> bool:
        name = router.route_name(route_key, seq)
        port = labels.get(f"traefik.http.services.{name}.loadbalancer.server.port")
        if port is None or not port.isdigit():
            return False
        hosts = list(dict.fromkeys(r.host for r in paths))
        app_name = route_key.split("_", 1)[0]
        expected = router.labels(route_key, seq, paths, int(port), self.settings.traefik_entrypoint,
                                 tls.tls_plan(self.settings, app_name, hosts))
        return expected != {k: v for k, v in labels.items() if k.startswith("traefik.")}

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
                        self.pipeline.redeploy(app.name, lambda line: app_log.info(line.rstrip()),
                                               "Routes changed (HTTPS settings): redeploying")
                        refreshed.append(app.name)
            except GitdError as exc:
                app_log.warning("route refresh failed; the old routes keep serving", error=str(exc))
        log.info("routes checked", redeployed=refreshed)
        return refreshed

    def _remove_leftovers(self, engine, snapshot: list, notes: list) -> list:
        """Remove at once what is not the live deploy and not routed (not
        healthy yet: before it can become healthy and take traffic); start
        live containers that are down. Returns the routed leftovers."""
        known = {a.name: a for a in self.store.list_apps()}
        routed = []
        for container in snapshot:
            app = known.get(container.labels.get(engine_mod.LABEL_APP))
            seq = container.labels.get(engine_mod.LABEL_SEQ)
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

    def _settle_health(self, engine, notes: list) -> list:
        """A web container still starting may turn healthy at any moment, and
        Traefik then routes to it: removing it as a leftover would send its
        requests to a dying container. Wait (bounded) until Docker has judged
        it, then decide from that snapshot."""
        deadline = time.monotonic() + HEALTH_SETTLE_SECONDS
        while True:
            snapshot = [c for c in _own_containers(engine)
                        if c.labels.get(engine_mod.LABEL_SERVICE) is None]
            if not any(_health_starting(c) for c in snapshot) or time.monotonic() > deadline:
                return snapshot
            time.sleep(0.25)

    def _reconcile_services(self, engine, snapshot: list, notes: list) -> list:
        """Database and cache containers: start those stopped, remove those no
        service owns (a connect client or an upgrade cut short). Returns the
        rest of the snapshot: the apps' containers."""
        services = {s.name for s in self.store.list_services()}
        apps_containers = []
        for container in snapshot:
            service = container.labels.get(engine_mod.LABEL_SERVICE)
            if service is None:
                apps_containers.append(container)
            elif service not in services or container.name not in (
                    service_container(self.settings.instance, service),
                    relay_name(self.settings.instance, service)):
                engine.remove(container)
                notes.append(f"removed leftover container {container.name}")
            elif container.status in ("exited", "created"):
                container.start()
                notes.append(f"started {container.name}")
        return apps_containers

    def _retire_later(self, containers: list, notes: list, snapshot: list, adopted: set) -> None:
        """Old containers that may still carry traffic, found at start: drained
        and retired in the background, as a deploy would have. For a deploy
        finished here, only once Traefik is seen routing to it (a deploy
        confirms that before it retires anything): stopping the old ones
        before would send their requests to a dying container."""
        by_app: dict[str, list] = {}
        for container in containers:
            by_app.setdefault(container.labels.get(engine_mod.LABEL_APP), []).append(container)
        for name, group in by_app.items():
            app = self.store.get_app(name)
            drain = self.pipeline.drain_of(app.settings)
            stop_timeout = self.pipeline.stop_timeout_of(app.settings)
            if name in adopted:
                web = [c for c in snapshot if c.labels.get(engine_mod.LABEL_APP) == name
                       and c.labels.get(engine_mod.LABEL_SEQ) == str(app.live_seq)
                       and c.labels.get(engine_mod.LABEL_PROCESS) == "web"]
                thread = threading.Thread(target=self._retire_once_routed, daemon=True,
                                          name=f"adopted-{name}",
                                          args=(name, app.live_seq, web, group, drain, stop_timeout))
                self._adoptions.append(thread)
                thread.start()
            else:
                self.pipeline.deployer.retire_later(name, group, drain, stop_timeout)
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
            self.pipeline.deployer.retire_later(name, old, drain, stop_timeout)

    def _routed_in_traefik(self, name: str, seq: int, web: list) -> bool:
        api = self.settings.api_url
        if not api:
            time.sleep(3)  # as a deploy does without an API to ask
            return True
        port_label = f"traefik.http.services.{router.route_name(name, seq)}.loadbalancer.server.port"
        urls = set()
        for container in web:
            port = container.labels.get(port_label, "")
            host_port = self.engine.host_port(container, int(port)) if port.isdigit() else None
            if host_port:
                urls.add(f"http://127.0.0.1:{host_port}")
        if not urls:
            return True  # not routed at all (no hosts)
        try:
            router.confirm_routed(api, name, seq, urls, timeout=self.settings.deploy_timeout)
            return True
        except GitdError:
            return False

    def _finish_interrupted_deploys(self, snapshot: list, notes: list) -> set:
        """Make live the newest complete, healthy set of containers of an
        app that is not its live one. Returns the (app, version) adopted."""
        adopted = set()
        groups: dict = {}
        for container in snapshot:
            labels = container.labels
            if labels.get(engine_mod.LABEL_ROLE) != "service":
                continue
            key = (labels.get(engine_mod.LABEL_APP), labels.get(engine_mod.LABEL_SEQ),
                   labels.get(engine_mod.LABEL_RELEASE))
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
            if not self._complete_and_healthy(app, version_n, containers):
                continue
            release = self.store.get_release(app.name, version_n)
            self.store.set_live(app.name, version_n, seq_n)
            if release.status in ("building", "deploying"):
                self.store.update_release(app.name, version_n, status="succeeded",
                                          log=release.log + "-----> finished by gitd after a restart\n")
            adopted.add((app.name, version_n))
            notes.append(f"{app.name} v{version_n}: interrupted deploy was healthy; finished it")
        return adopted

    def _complete_and_healthy(self, app, version: int, containers: list) -> bool:
        """Every container the formation asks for is there and running, and
        the web ones are healthy."""
        try:
            release = self.store.get_release(app.name, version)
        except GitdError:
            return False
        if release.status not in ("building", "deploying", "succeeded"):
            return False
        if release.components:  # app.json services: SERVICE.TYPE, as ps:scale names them
            types = [f"{name}.{t}" for name, service in release.components.items()
                     for t in ["web"] + [t for t in service.get("procfile") or {}
                                         if t not in ("web", "release")]]
        else:
            types = ["web"] + [t for t in release.procfile if t not in ("web", "release")]
        wanted = {t: int(app.scale.get(t, 1 if t.rpartition(".")[2] == "web" else 0)) for t in types}
        have: dict = {}
        for container in containers:
            state = container.attrs.get("State") or {}
            process = container.labels.get(engine_mod.LABEL_PROCESS)
            healthy = (state.get("Health") or {}).get("Status") == "healthy"
            if state.get("Status") != "running" or (process == "web" and not healthy):
                return False
            component = container.labels.get(engine_mod.LABEL_COMPONENT)
            key = f"{component}.{process}" if component else process
            have[key] = have.get(key, 0) + 1
        return have == {t: n for t, n in wanted.items() if n > 0}


def _own_containers(engine) -> list:
    """This instance's containers that gitd runs itself: a swarm task's
    container is the swarm's to start, replace and remove."""
    return [c for c in engine.containers() if c.labels.get(engine_mod.LABEL_ROLE) != TASK_ROLE]


def _health_starting(container) -> bool:
    state = container.attrs.get("State") or {}
    return (state.get("Status") == "running"
            and container.labels.get(engine_mod.LABEL_ROLE) == "service"
            and (state.get("Health") or {}).get("Status") == "starting")


def _routed(container) -> bool:
    """Traefik routes a running web service container once it is healthy."""
    state = container.attrs.get("State") or {}
    return (container.status == "running"
            and container.labels.get(engine_mod.LABEL_PROCESS) == "web"
            and container.labels.get(engine_mod.LABEL_ROLE) == "service"
            and (state.get("Health") or {}).get("Status") == "healthy")

def _retired_by_a_live_release(container, app) -> bool:
    """An older release's running service container: it may still carry
    traffic, so it drains before it stops."""
    seq = container.labels.get(engine_mod.LABEL_SEQ, "")
    return (container.labels.get(engine_mod.LABEL_ROLE) == "service" and container.status == "running"
            and seq.isdigit() and app.live_seq is not None and int(seq) < int(app.live_seq))

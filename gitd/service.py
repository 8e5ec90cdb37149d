"""The daemon's services in one place: settings, store, Docker, pipeline, locks."""

from __future__ import annotations

import functools
import shutil
import threading
import time

import docker.errors
import structlog

from gitd import certs, gitserve, repos, tlsconfig
from gitd.config import Settings
from gitd.errors import GitdError
from gitd.store import Store
from hooks import engine as engine_mod
from hooks import router
from hooks.locks import AppLocks
from hooks.pipeline import Pipeline, service_paths
from hooks.retire import Retirements

log = structlog.get_logger("gitd.service")


class Gitd:
    def __init__(self, settings: Settings, store: Store | None = None):
        self.store = store or Store(settings.db_path)
        if not settings.instance:
            from gitd.config import replace
            settings = replace(settings, instance=self.store.instance)
        self.settings = settings
        self.locks = AppLocks()
        self.retirements = Retirements()  # old containers draining after a deploy
        self._engine = None
        self._engine_guard = threading.Lock()

    @property
    def engine(self) -> engine_mod.Engine:
        with self._engine_guard:
            if self._engine is None:
                self._engine = engine_mod.Engine(engine_mod.connect(), self.settings.instance)
            return self._engine

    @functools.cached_property
    def pipeline(self) -> Pipeline:
        # not cached while Docker is unreachable: self.engine raises
        return Pipeline(self.settings, self.store, self.engine, self.retirements)

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
            containers = engine.containers(name)
            for container in containers:
                engine.remove(container)
            out(f"removed {len(containers)} container(s)")
            removed = 0
            release_images = {r.image_id for r in self.store.releases(name) if r.image_id}
            for image in engine.images(name):
                release_images.add(image.id)
            for image_id in release_images:
                if self._remove_image_everywhere(image_id):
                    removed += 1
            out(f"removed {removed} image(s)")
            for network in engine.networks(**{engine_mod.LABEL_APP: name}):
                engine.remove_network(network.name)
            shutil.rmtree(gitserve.repo_path(self.settings.repos_dir, name), ignore_errors=True)
            self.pipeline.drop_app_files(name)
            self.store.delete_app(name)
            if certs.remove_custom(self.settings, name):
                out("removed its custom certificate")
            tlsconfig.sync_dynamic(self.settings, self.store)

    def _remove_image_everywhere(self, image_id: str) -> bool:
        """Untag the app's tags of an image, then remove it if nothing else
        uses it. True when the image is gone."""
        client = self.engine.client
        try:
            image = client.images.get(image_id)
        except docker.errors.ImageNotFound:
            return False
        for tag in image.tags:
            if tag.startswith("gitd/"):
                self.engine.remove_image(tag)
        self.engine.remove_image(image_id)
        try:
            client.images.get(image_id)
            return False
        except docker.errors.ImageNotFound:
            return True

    # pushes

    def collect_repo_later(self, app: str) -> None:
        """Garbage-collect the app's repository on a thread of its own, under
        the app's lock, when no deploy holds it (else the next push does)."""
        def collect():
            try:
                with self.locks.hold(app, 0):
                    repos.collect(gitserve.repo_path(self.settings.repos_dir, app), app)
            except GitdError:
                pass  # busy: a later push collects
        threading.Thread(target=collect, daemon=True, name=f"gitd-gc-{app}").start()

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
        # one snapshot for every decision: a container that turns healthy
        # between two looks would be judged twice, differently
        snapshot = engine.containers() if engine else []
        adopted = self._finish_interrupted_deploys(snapshot, notes) if engine else set()
        routed_leftovers = self._remove_leftovers(engine, snapshot, notes) if engine else []
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
        self._retire_later(routed_leftovers, notes)
        for note in notes:
            log.info("reconcile", note=note)
        return notes

    # routes that no longer match the settings

    def routes_drifted(self, app) -> bool:
        """The live web containers' Traefik labels differ from what a deploy
        would make now (HTTPS turned on or off, custom certificates)."""
        if not app.current_release or app.live_seq is None:
            return False
        web = [c for c in self.engine.containers(app.name)
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
                                 tlsconfig.tls_plan(self.settings, app_name, hosts))
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

    def _retire_later(self, containers: list, notes: list) -> None:
        """Old containers that may still carry traffic, found at start: drained
        and retired in the background, as a deploy would have."""
        by_app: dict[str, list] = {}
        for container in containers:
            by_app.setdefault(container.labels.get(engine_mod.LABEL_APP), []).append(container)
        for name, group in by_app.items():
            settings = self.store.get_app(name).settings
            self.pipeline.deployer.retire_later(
                name, group, float(settings.get("drain", self.settings.drain_seconds)),
                int(settings.get("stop_timeout", self.settings.stop_timeout)))
            notes.append(f"retiring {len(group)} old container(s) of {name} in the background")

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

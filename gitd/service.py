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
from gitd.previews import Previews
from hooks import tls

from gitd.core import certs, notify
from gitd.core import previews as preview_rules
from gitd.core.config import Settings
from gitd.core.errors import GitdError, NotFound, PermissionDenied
from gitd.services.base import container_name as service_container
from gitd.services.base import relay_name
from gitd.core.store import Store
from hooks import engine as engine_mod
from hooks.deployments import Deployments
from hooks.events import Progress
from hooks.health import HealthWatcher
from hooks.locks import AppLocks
from hooks.pipeline import Pipeline
from hooks.recovery import Recovery
from hooks import checks, restarts
from hooks.retire import Retirements

log = structlog.get_logger("gitd.service")

class Gitd:
    def __init__(self, settings: Settings, store: Store | None = None):
        self.store = store or Store(settings.db_path)
        if not settings.instance:
            from gitd.core.config import replace
            settings = replace(settings, instance=self.store.instance)
        self.settings = settings
        self.deployments = Deployments(self.store, settings.max_log_bytes)
        self.notifier = notify.Notifier(self.store)  # installed and started by the daemon
        self.locks = AppLocks()
        self.retirements = Retirements()  # old containers draining after a deploy
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
                self._engine = engine_mod.Engine(
                    engine_mod.connect(self.settings.engine_url), self.settings.instance,
                    self.settings.network_pool, url=self.settings.engine_url)
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

    def watch_restarts(self) -> restarts.RestartWatch | None:
        """Bridge a live web container started again (hooks.restarts): on
        the docker scheduler, whose managed Traefik routes it by labels only
        after Docker's first check."""
        if self.scheduler_class.routes_follow_tasks or self.settings.traefik != "managed":
            return None
        give_up = checks.live_interval(self.settings.health_interval)
        return restarts.RestartWatch(self.engine, self._serve_restarted, give_up).start()

    def _serve_restarted(self, container) -> None:
        """Probe a live deploy's restarted web container and write its
        deploy's route file to it and to the deploy's other running ones.
        Not while a deploy or a command of the app runs (Conflict: the watch
        tries again), and not when the file routes it already (served by
        ps:start, or followed back in)."""
        app = container.labels.get(engine_mod.LABEL_APP, "")
        seq = container.labels.get(engine_mod.LABEL_SEQ)
        with self.locks.hold(app, 0):
            record = self.store.get_app(app)
            if seq != str(record.live_seq) or record.settings.get("stopped"):
                return
            container = self.engine.container(container.id)  # as it is now, under the lock
            if container is None or not restarts.waits_for_docker(container.attrs) \
                    or self.scheduler.routes.carries(container):
                return
            # the deploy's others too (the file is rewritten whole), but
            # not one Docker calls unhealthy: it would fail the probe
            units = [u for u in self.scheduler.units(app, **{engine_mod.LABEL_SEQ: seq,
                                                             engine_mod.LABEL_PROCESS: "web"})
                     if u.id == container.id or (u.status == "running" and (
                         (u.attrs.get("State") or {}).get("Health") or {}).get("Status") != "unhealthy")]
            self.pipeline.serve_started(app, units, Progress(None, app, by="restart-watch"))

    def run_health_checks(self) -> engine_mod.HealthChecks | None:
        """On an engine that does not run containers' health checks (Podman
        without systemd), gitd runs them (hooks.engine.HealthChecks)."""
        if self.engine.capabilities.runs_health_checks:
            return None
        log.info("engine runs no health checks: gitd runs them",
                 engine=self.engine.capabilities.title)
        return engine_mod.HealthChecks(self.engine).start()

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
        self.previews.destroy_all(name, out)  # a parent's previews go first
        fresh = self.previews.fresh_of(name)  # a preview's own services go after it
        self._destroy_app(name, out)
        self.previews.remove_fresh(fresh, out)

    def _destroy_app(self, name: str, out) -> None:
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
            if engine_mod.short_name(tag).startswith(f"gitd/{app}:"):
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

    @functools.cached_property
    def previews(self) -> Previews:
        return Previews(self)

    def preview_push(self, app: str, repo, pushed_by: str | None):
        """A pushed branch other than the deploy branch (commit None: its
        deletion) -> its preview app's name; None for an app with previews
        off, whose branches are only stored (as before previews: an atomic
        push of several of them is no deploy to refuse)."""
        if self.previews.policy(app) is None and not self.store.previews(app):
            return None

        def preview(branch: str, commit: bytes | None, sink):
            if preview_rules.pull_request_label(branch):
                if commit is None:
                    return None  # a pull request's preview goes when it closes
                raise GitdError(f"branch {preview_rules.shown(branch)} would be named as a pull "
                                "request's preview (pr-N); rename the branch")
            if commit is None:
                return self.previews.remove_branch(app, branch, sink)
            return self.previews.push(app, branch, repo, commit, pushed_by, sink)
        return preview

    # start-up (hooks.recovery)

    @functools.cached_property
    def recovery(self) -> Recovery:
        instance = self.settings.instance
        return Recovery(
            self.settings, self.store, engine=lambda: self.engine, scheduler=lambda: self.scheduler,
            pipeline=lambda: self.pipeline, app_lock=self.app_lock,
            data_leftovers=lambda: self.services.runtime.leftovers(self.store.list_services()),
            service_containers=lambda service: (service_container(instance, service),
                                                relay_name(instance, service)))

    def reconcile(self) -> list[str]:
        return self.recovery.reconcile()

    def wait_adoptions(self, timeout: float) -> bool:
        return self.recovery.wait_adoptions(timeout)

    def refresh_routes(self) -> list[str]:
        return self.recovery.refresh_routes()

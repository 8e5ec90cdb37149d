"""The daemon's services in one place: settings, store, Docker, pipeline, locks."""

from __future__ import annotations

import functools
import shutil
import threading

import docker.errors
import structlog

from gitd import gitserve
from gitd.config import Settings
from gitd.errors import GitdError
from gitd.services.base import container_name as service_container
from gitd.store import Store
from hooks import engine as engine_mod
from hooks.locks import AppLocks
from hooks.pipeline import Pipeline

log = structlog.get_logger("gitd.service")


class Gitd:
    def __init__(self, settings: Settings, store: Store | None = None):
        self.store = store or Store(settings.db_path)
        if not settings.instance:
            from gitd.config import replace
            settings = replace(settings, instance=self.store.instance)
        self.settings = settings
        self.locks = AppLocks()
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
        return Pipeline(self.settings, self.store, self.engine)

    @functools.cached_property
    def services(self):
        from gitd.services.lifecycle import Services
        return Services(self)

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
            volumes = engine.volumes(**{engine_mod.LABEL_APP: name})
            for volume in volumes:
                engine.remove_volume(volume.name)
            if volumes:
                out(f"removed {len(volumes)} storage volume(s)")
            shutil.rmtree(gitserve.repo_path(self.settings.repos_dir, name), ignore_errors=True)
            self.pipeline.drop_app_files(name)
            self.store.delete_app(name)

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

    def deploy_push(self, app: str, repo, pushed_by: str | None):
        def deploy(commit: bytes, sink):
            self.pipeline.push(app, repo, commit, pushed_by, sink)
        return deploy

    # start-up

    def reconcile(self) -> list[str]:
        """After a crash or restart: the current release's containers serve,
        leftovers of interrupted deploys go, and the state tells the truth."""
        notes = []
        for release in self.store.interrupted_releases():
            self.store.update_release(release.app, release.version, status="failed",
                                      log=release.log + " !     interrupted: gitd stopped during this deploy\n")
            notes.append(f"{release.app} v{release.version}: marked failed (interrupted)")
            try:
                self.engine.remove_image(f"gitd/{release.app}:v{release.version}")
            except GitdError:
                pass
        try:
            engine = self.engine
        except GitdError as exc:
            log.warning("reconcile skipped containers", error=str(exc))
            return notes
        known = {a.name: a for a in self.store.list_apps()}
        services = {s.name for s in self.store.list_services()}
        for container in engine.containers():
            service = container.labels.get(engine_mod.LABEL_SERVICE)
            if service is not None:
                if service not in services or container.name != service_container(
                        self.settings.instance, service):
                    engine.remove(container)  # a connect client or an upgrade cut short
                    notes.append(f"removed leftover container {container.name}")
                elif container.status in ("exited", "created"):
                    container.start()
                    notes.append(f"started {container.name}")
                continue
            app = known.get(container.labels.get(engine_mod.LABEL_APP))
            seq = container.labels.get(engine_mod.LABEL_SEQ)
            if app is None or str(app.live_seq) != seq:
                engine.remove(container)
                notes.append(f"removed leftover container {container.name}")
            elif container.status in ("exited", "created") and not app.settings.get("stopped"):
                container.start()
                notes.append(f"started {container.name}")
        for note in notes:
            log.info("reconcile", note=note)
        return notes

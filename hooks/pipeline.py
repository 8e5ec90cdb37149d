"""checkout -> detect -> build -> release -> deploy, for a push; and the
release -> deploy tail for config changes, rollbacks, restarts and scaling.
One path: every change that alters what runs goes through `_deploy`.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import structlog

import buildpacks
from buildpacks import BuildRequest
from gitd.core import cron, previews, resources, validate
from gitd.core.config import Settings
from gitd.core.errors import BuildError, DeployError, GitdError, NotFound
from gitd.core.store import Release, Store
from hooks import checkout, checks, components, maintenance, procfile, router, tls
from hooks.components import service_paths
from hooks.deployments import Deployments, trigger_of_kind, trigger_of_reason
from hooks.deploy import Deployer
from hooks.specs import DEFAULT_PORT, Target, process_argv, service_network
from hooks.engine import LABEL_APP, LABEL_INSTANCE, LABEL_PROCESS, LABEL_RELEASE, Engine
from hooks.events import Progress
from hooks.retire import Retirements
from hooks.scheduler import confirm_routes
from hooks.specs import route_key_of

FALLBACK_FILE = "fallback.yml"  # in the file provider's dir: the 503 routes
_fallback_writing = threading.Lock()  # one writer: the file goes through one temporary
progress_log = structlog.get_logger("gitd.pipeline")
TRIMMED_LOG_CHARS = 4000  # the tail kept of a log rollback cannot use


def image_repository(app: str) -> str:
    return f"gitd/{app}"


def image_tag(app: str, version: int) -> str:
    return f"{image_repository(app)}:v{version}"


def refuse_unpacked_size(attrs: dict, ref: str, max_bytes: int) -> None:
    """A pulled image whose layers unpack past `max_bytes` (a small download
    may unpack huge) is refused."""
    size = attrs.get("Size")
    if isinstance(size, int) and size > max_bytes:
        raise GitdError(f"image {ref} is larger than max_image_bytes ({max_bytes} bytes): "
                        f"it unpacks to {size} bytes")


class Pipeline:
    def __init__(self, settings: Settings, store: Store, engine: Engine,
                 retirements: Retirements | None = None, try_lock=None, scheduler=None,
                 deployments: Deployments | None = None):
        self.settings = settings
        self.store = store
        self.engine = engine
        # every entry point below records a deployment around its work
        self.deployments = deployments or Deployments(store, settings.max_log_bytes)
        self.deployer = Deployer(engine, settings, retirements, scheduler)
        # (app) -> context manager taking the app's lock at once or raising
        # GitdError: a prune after a background retirement takes it
        self.try_lock = try_lock

    # entry points

    def push(self, app: str, repo, commit: bytes, pushed_by: str | None, sink,
             trigger: str = "push", deployment: int | None = None,
             trusted: bool | None = None) -> Release:
        """Build and deploy a pushed commit. The caller holds the app's lock.
        Built as an admin's (`trusted`) when said, else when the pusher is one."""
        with self.deployments.record(app, trigger, sink, "building", deployment,
                                     by=pushed_by, commit=commit.decode()) as run:
            return self._push(app, repo, commit, pushed_by, run,
                              self._is_admin(pushed_by) if trusted is None else trusted)

    def _push(self, app: str, repo, commit: bytes, pushed_by: str | None, run,
              trusted: bool) -> Release:
        sha = commit.decode()
        sink = run
        release = self.store.new_release(
            app, kind="push", commit=sha, pushed_by=pushed_by,
            config=self.store.get_config(app), mounts=self.store.get_mounts(app),
            description=f"Deploy {sha[:8]}")
        progress = self._progress(sink, app, release.version)
        built_image = None
        try:
            progress.stage("checkout")
            app_settings = self.store.get_app(app).settings
            with tempfile.TemporaryDirectory(dir=self._work_dir(), prefix=f"{app}-") as tmp:
                source = Path(tmp) / "src"
                tree = checkout.subtree(repo, commit, app_settings.get("build_dir", ""))
                checkout.export(repo, tree, source, checkout.Limits(
                    self.settings.max_export_files, self.settings.max_export_bytes))
                processes = procfile.parse(checkout.read_file(repo, tree, "Procfile"))
                app_json = checkout.read_file(repo, tree, "app.json")
                checks.from_app_json(app_json)  # a broken app.json fails the push early
                previews.from_app_json(app_json)
                declared = components.parse(app_json)
                cron.checked_jobs(app_json, [c.name for c in declared])
                progress.stage("build")
                if declared:
                    built_services = self._build_components(
                        app, release.version, repo, commit, app_settings.get("build_dir", ""),
                        declared, source, Path(tmp), app_settings, progress,
                        trusted=trusted)
                else:
                    result, buildpack = self._build(app, release.version, source, Path(tmp),
                                                    app_settings, processes, progress,
                                                    trusted=trusted)
                    built_image = result.image_id
            if declared:
                first = built_services[declared[0].name]
                self.store.update_release(
                    app, release.version, status="deploying", image=first["image"],
                    image_id=first["image_id"], buildpack="services", procfile={},
                    port=first["port"], app_json=app_json, components=built_services)
            else:
                port = self._image_port(result.image_id)
                self.store.update_release(
                    app, release.version, status="deploying", image=image_tag(app, release.version),
                    image_id=result.image_id, buildpack=buildpack, procfile=processes, port=port,
                    app_json=app_json)
            release = self.store.get_release(app, release.version)
            run.move("deploying", release=release.version, image=release.image)
            self._deploy(release, progress)
            return release
        except Exception as exc:  # any failure: no release left `building`, no stray image
            self._fail(release, progress, exc)
            if built_image:
                self._remove_image_quietly(image_tag(app, release.version))
            for tag in self._component_tags(app, release.version):
                self._remove_image_quietly(tag)
            raise

    def release(self, app: str, base: Release, config: dict, kind: str, description: str,
                by: str | None, sink, mounts: list[dict] | None = None,
                trigger: str | None = None, deployment: int | None = None) -> Release:
        """A new release from `base`'s image with `config` (and `mounts`,
        else `base`'s): no rebuild. The trigger defaults to the kind's."""
        with self.deployments.record(app, trigger or trigger_of_kind(kind), sink, "deploying",
                                     deployment, by=by, commit=base.commit) as run:
            return self._release(app, base, config, kind, description, by, run, mounts)

    def _release(self, app, base, config, kind, description, by, run, mounts) -> Release:
        sink = run
        self._image_exists(base)
        release = self.store.new_release(
            app, kind=kind, status="deploying", commit=base.commit,
            image=image_tag(app, 0), image_id=base.image_id, buildpack=base.buildpack,
            pushed_by=by, description=description, config=config, procfile=base.procfile,
            port=base.port, app_json=base.app_json,
            mounts=base.mounts if mounts is None else mounts)
        tag = image_tag(app, release.version)
        progress = self._progress(sink, app, release.version)
        try:
            self.engine.tag(base.image_id, image_repository(app), f"v{release.version}")
            services = {}
            for name, service in base.components.items():  # every service together
                self.engine.tag(service["image_id"], image_repository(app), f"v{release.version}-{name}")
                services[name] = {**service, "image": f"{tag}-{name}", "reused": True}
            self.store.update_release(app, release.version, image=tag, components=services)
        except Exception as exc:
            self._fail(release, progress, exc)
            for each in [tag] + self._component_tags(app, release.version):
                self._remove_image_quietly(each)
            raise
        release = self.store.get_release(app, release.version)
        run.set(release=release.version, image=release.image)
        progress.step(f"Releasing v{release.version}: {description}")
        try:
            self._deploy(release, progress, announce=False)
        except Exception as exc:
            self._fail(release, progress, exc)
            for each in [tag] + self._component_tags(app, release.version):
                self._remove_image_quietly(each)
            raise
        return release

    def deploy_image(self, app: str, ref: str, by: str | None, sink, trigger: str = "image",
                     deployment: int | None = None) -> Release:
        """Pull a prebuilt image (`ref`, validated and allowed by the caller)
        and release and deploy it as a push's build: the same refusals,
        config, checks and rollback. The caller holds the app's lock."""
        with self.deployments.record(app, trigger, sink, "building", deployment,
                                     by=by, image=ref) as run:
            return self._deploy_image(app, ref, by, run)

    def _deploy_image(self, app: str, ref: str, by: str | None, run) -> Release:
        progress = Progress(run, app, max_bytes=self.settings.max_log_bytes)
        progress.step(f"Pulling {ref}")
        was_here = self.engine.has_image(ref)
        image_id = self.engine.pull(ref, self.settings.build_timeout, progress.line,
                                    self.settings.max_image_bytes)
        try:  # refused before any release exists: nothing changes
            attrs = self.engine.image_attrs(image_id)
            router.refuse_routing_labels((attrs.get("Config") or {}).get("Labels"), f"image {ref}")
            refuse_unpacked_size(attrs, ref, self.settings.max_image_bytes)
        except GitdError:
            if not was_here:
                self._remove_image_quietly(ref)
            raise
        release = self.store.new_release(
            app, kind="image", status="deploying", image=image_tag(app, 0), image_id=image_id,
            buildpack="image", pushed_by=by, description=f"Deploy image {ref}"[:200],
            config=self.store.get_config(app), mounts=self.store.get_mounts(app),
            port=self._image_port(image_id))
        tag = image_tag(app, release.version)
        progress = self._progress(run, app, release.version)
        try:
            self.engine.tag(image_id, image_repository(app), f"v{release.version}")
            self.store.update_release(app, release.version, image=tag)
            release = self.store.get_release(app, release.version)
            run.move("deploying", release=release.version)
            self._deploy(release, progress)
            return release
        except Exception as exc:
            self._fail(release, progress, exc)
            self._remove_image_quietly(tag)
            raise

    def redeploy(self, app: str, sink, reason: str, trigger: str | None = None,
                 deployment: int | None = None) -> None:
        """Restart or re-scale the current release: new containers, same
        release. The trigger defaults to the reason's (trigger_of_reason)."""
        release = self.store.require_current_release(app)
        with self.deployments.record(app, trigger or trigger_of_reason(reason), sink, "deploying",
                                     deployment, commit=release.commit, release=release.version,
                                     image=release.image) as run:
            self._redeploy(release, run, reason)

    def _redeploy(self, release: Release, sink, reason: str) -> None:
        app = release.app
        progress = self._progress(sink, app, release.version)
        progress.step(f"{reason} v{release.version}")
        # the Procfile's `release` command runs once per release, not per restart
        self._deploy(release, progress, announce=False, record=False, release_task=False)

    def rebuild(self, release: Release, repo, sink) -> Release:
        """Build `release`'s commit again into its own tag and record the
        new image (its image is gone: a restore onto another engine). The
        caller holds the app's lock; the release stays as it was recorded."""
        app = release.app
        progress = self._progress(sink, app, release.version)
        progress.step(f"Rebuilding v{release.version} from {release.commit[:8]}")
        app_settings = self.store.get_app(app).settings
        build_dir = app_settings.get("build_dir", "")
        commit = release.commit.encode()
        trusted = self._is_admin(release.pushed_by)
        with tempfile.TemporaryDirectory(dir=self._work_dir(), prefix=f"{app}-") as tmp:
            source = Path(tmp) / "src"
            tree = checkout.subtree(repo, commit, build_dir)
            checkout.export(repo, tree, source, checkout.Limits(
                self.settings.max_export_files, self.settings.max_export_bytes))
            if release.components:
                # each service whose image is gone, as its push built it; one
                # still here is reused (its tree is the recorded one)
                built = self._build_components(
                    app, release.version, repo, commit, build_dir,
                    components.parse(release.app_json), source, Path(tmp), app_settings,
                    progress, trusted=trusted)
                first = built[next(iter(built))]
                self.store.update_release(app, release.version, image_id=first["image_id"],
                                          components=built)
                return self.store.get_release(app, release.version)
            result, _ = self._build(app, release.version, source, Path(tmp), app_settings,
                                    release.procfile, progress, trusted=trusted)
        self.store.update_release(app, release.version, image_id=result.image_id)
        return self.store.get_release(app, release.version)

    # stages

    def _is_admin(self, key_name: str | None) -> bool:
        """Whether the pusher's key is an admin's (root-equivalent). Unknown
        keys (removed since) are not."""
        if not key_name:
            return False
        try:
            return self.store.get_key(key_name).is_admin
        except NotFound:
            return False

    def _build(self, app, version, source, tmp, app_settings, processes, progress,
               trusted: bool = False, tag: str = "", gc_root: Path | None = None):
        buildpack, reason = buildpacks.detect(
            source, app_settings.get("buildpack"),
            build_dir=app_settings.get("build_dir", ""))
        progress.line(f"{buildpack.name} buildpack: {reason}")
        request = BuildRequest(
            app=app, release=version, source_dir=source, image_tag=tag or image_tag(app, version),
            labels={LABEL_INSTANCE: self.settings.instance, LABEL_APP: app,
                    LABEL_RELEASE: str(version)},
            emit=progress.line, docker=self.engine.client,
            engine_client=self.engine.another_client, work_dir=tmp / "work",
            gc_root=gc_root or self.gc_root(app, version), options=app_settings.get("buildpack_options", {}),
            procfile=processes, network=self.settings.build_network,
            base_images=self.settings.base_images, trusted=trusted,
            timeout=self.settings.build_timeout,
            limits=resources.effective(self.settings, app_settings),
            image_owners=self.store.apps_of_image)
        request.work_dir.mkdir(parents=True, exist_ok=True)
        result = buildpack.build(request)
        if not result.image_id:
            raise BuildError("the build produced no image")
        return result, buildpack.name

    def _deploy(self, release: Release, progress: Progress, announce: bool = True,
                record: bool = True, release_task: bool = True) -> None:
        app = release.app
        if announce:
            progress.step(f"Releasing v{release.version}")
        # push, rollback, config change or restart: whatever image is about to
        # run, it may not route (images made before this check included)
        images = ({n: c["image_id"] for n, c in release.components.items()} if release.components
                  else {"": release.image_id})
        for name, image_id in images.items():
            router.refuse_routing_labels(
                (self.engine.image_attrs(image_id).get("Config") or {}).get("Labels"),
                f"the image of v{release.version}" + (f" (service {name})" if name else ""))
        targets = self.targets(release)
        target = targets[0]
        if not release_task:
            for each in targets:
                each.release_command = None
        shown = ", ".join(
            (f"{t.component}: " if t.component else "") + _formation_text(t.formation) for t in targets)
        progress.step(f"Deploying v{release.version} ({shown})")
        progress.stage("deploy")
        progress.bind(seq=target.seq)

        def on_live():
            self.store.set_live(app, release.version, target.seq)
            self.store.update_app_settings(app, stopped=None)  # ps:stop ends with a deploy
            if record:
                self.store.update_release(app, release.version, status="succeeded", log=progress.text)

        self._cover_maintenance(app, targets)
        # images of old releases go once no container uses them: after the retirement
        deploying = threading.get_ident()
        self.deployer.deploy(targets if release.components else target, progress, on_live,
                             on_retired=(lambda: self._prune_after_retirement(app, progress, deploying))
                             if record else None)
        progress.stage("done")
        hosts = [h for t in targets for h in t.hosts]
        if not any(t.formation.get("web") for t in targets):
            progress.step(f"Deployed v{release.version} with web scaled to 0: not serving "
                          "(its routes answer 503; ps:scale web=1 to serve)")
        elif hosts:
            progress.step(f"Deployed to {self.settings.host_url(hosts[0])}")
        else:
            progress.step(f"Deployed v{release.version} (no domains: not routed)")
        if record:
            self.store.update_release(app, release.version, log=progress.text)
        self.sync_fallbacks_quietly()

    def sync_fallbacks(self) -> bool:
        """Write the 503 routes (router.fallback_config) of every deployed
        app's routes, for Traefik's file provider; True when changed."""
        if not (self.settings.traefik == "managed" or self.settings.https):
            return False  # no file provider of gitd's to read it
        routes = self.store.all_routes()
        app_routes = {a.name: routes.get(a.name, []) for a in self.store.list_apps()
                      if a.current_release}
        config = router.fallback_config(
            app_routes, self.settings.traefik_entrypoint,
            router.HTTPS_ENTRYPOINT if self.settings.https else "")
        path = self.settings.dynamic_dir / FALLBACK_FILE
        with _fallback_writing:
            try:
                if path.read_text() == router.route_file_text(config):
                    return False
            except OSError:
                pass
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            router.write_route_file(path, router.route_file_text(config))
        return True

    def sync_fallbacks_quietly(self) -> None:
        try:
            self.sync_fallbacks()
        except Exception as exc:  # noqa: BLE001 - a deploy or destroy is done either way
            progress_log.warning("cannot write the 503 routes", error=str(exc))
        try:  # routes changed or an app went: maintenance routes follow
            maintenance.sync(self.settings, self.store)
        except Exception as exc:  # noqa: BLE001 - as above
            progress_log.warning("cannot write the maintenance routes", error=str(exc))

    def _cover_maintenance(self, app: str, targets: list) -> None:
        try:
            maintenance.cover(self.settings, self.store, app,
                              [route for t in targets for route in router.as_routes(t.routes)])
        except Exception as exc:  # noqa: BLE001 - the deploy goes on; its end syncs again
            progress_log.warning("cannot cover the deploy's routes with the maintenance page",
                                 app=app, error=str(exc))

    def serve_started(self, app: str, units: list, progress) -> None:
        """After ps:start: the started web containers pass their check and
        Traefik routes them (their route file, as a deploy does) before the
        command returns."""
        scheduler = self.deployer.scheduler
        if scheduler.routes_follow_tasks:
            return  # its routes follow its tasks as they come up (follow_tasks)
        release = self.store.require_current_release(app)
        seq = self.store.get_app(app).live_seq
        for target in self.targets(release, seq):
            mine = [u for u in units if route_key_of(u.labels) == target.route_key]
            for unit in mine:
                if unit.labels.get(LABEL_PROCESS) == "web":
                    scheduler.wait_ready(unit, target.check, progress)
            confirm_routes(scheduler, self.settings, target, mine, progress)

    def targets(self, release: Release, seq: int | None = None) -> list[Target]:
        """What a deploy of `release` runs and routes: one Target, or one per
        app.json service; `seq`: the deploy's (default: a new one)."""
        return self.component_targets(release, seq) if release.components else [self.target(release, seq)]

    def target(self, release: Release, seq: int | None = None) -> Target:
        """`seq`: the deploy's (default: a new one)."""
        app = self.store.get_app(release.app)
        settings = app.settings
        config = dict(release.config)
        port = route_port(release)
        commands = self.commands(release)
        paths = self.store.routes(release.app)
        hosts = list(dict.fromkeys(r.host for r in paths))
        return Target(
            app=release.app, version=release.version,
            seq=self.store.take_seq(release.app) if seq is None else seq,
            image=release.image_id, config=config, port=port,
            formation=formation(commands, app.scale), commands=commands, hosts=hosts,
            tls=tls.tls_plan(self.settings, release.app, hosts),
            check=checks.resolve(settings, release.app_json, self.settings.deploy_timeout),
            release_command=process_argv(release.procfile.get("release"), release.buildpack),
            drain=self.drain_of(settings), stop_timeout=self.stop_timeout_of(settings),
            limits=resources.container_args(resources.effective(self.settings, settings)),
            release_timeout=self.settings.release_timeout,
            networks=self.service_networks(release.app), mounts=list(release.mounts),
            paths=paths,
        )

    # bounded again where used: a value stored before checks:set checked its
    # range (inf, a word) must not stop a deploy, a drain or gitd's start
    def drain_of(self, app_settings: dict) -> float:
        return _within(app_settings.get("drain"), self.settings.drain_seconds, 3600)

    def stop_timeout_of(self, app_settings: dict) -> int:
        return int(_within(app_settings.get("stop_timeout"), self.settings.stop_timeout, 3600))

    def service_networks(self, app: str) -> list[str]:
        """The networks of the services linked to `app`: only they reach them."""
        return [service_network(self.settings.instance, service)
                for service in self.store.links_of_app(app)]

    # app.json services (issue #13)

    def _build_components(self, app, version, repo, commit, root_dir, declared, source, tmp,
                          app_settings, progress, trusted) -> dict:
        """Build (or reuse) every service's image; name -> what the release
        records of it. A service whose build input is unchanged since the
        current release (the git tree of its directory; for a flake
        attribute, the whole tree) reuses that release's image."""
        current = self.store.current_release(app)
        before = current.components if current else {}
        built: dict = {}
        for component in declared:
            subdir = "/".join(p for p in (root_dir, component.build_dir) if p)
            tree = checkout.subtree(repo, commit, subdir).id.decode()
            build = {"dir": component.build_dir} if component.build_dir else \
                {"flake_attr": component.flake_attr}
            tag = image_tag(app, version) + f"-{component.name}"
            previous = before.get(component.name) or {}
            entry = {"image": tag, "tree": tree, "build": build, "port": component.port,
                     "healthchecks": component.healthchecks,
                     "routes": [[r.path, r.strip_prefix] for r in component.routes]}
            if (previous.get("tree") == tree and previous.get("build") == build
                    and self._reusable(previous.get("image_id"))):
                progress.step(f"{component.name} unchanged (tree {tree[:12]}): reusing its image")
                self.engine.tag(previous["image_id"], image_repository(app), f"v{version}-{component.name}")
                entry.update(image_id=previous["image_id"], buildpack=previous.get("buildpack"),
                             procfile=previous.get("procfile", {}), reused=True)
                built[component.name] = entry
                continue
            what = (f"dir {component.build_dir}" if component.build_dir
                    else f"flake attribute {component.flake_attr}")
            progress.step(f"Building service {component.name} ({what}, tree {tree[:12]})")
            if component.build_dir:
                service_source = source / component.build_dir
                settings = {**app_settings, "build_dir": "", "buildpack": None, "buildpack_options": {}}
                processes = component.processes or procfile.parse(
                    checkout.read_file(repo, checkout.subtree(repo, commit, subdir), "Procfile"))
            else:
                service_source = source
                settings = {**app_settings, "buildpack": "nix",
                            "buildpack_options": {"image_attr": component.flake_attr}}
                processes = dict(component.processes)
            work = tmp / f"service-{component.name}"
            work.mkdir()
            try:
                result, buildpack = self._build(
                    app, version, service_source, work, settings, processes, progress,
                    trusted=trusted, tag=tag,
                    gc_root=self.gc_root(app, version).with_name(f"v{version}-{component.name}"))
            except GitdError as exc:
                raise BuildError(f"service {component.name}: {exc}") from exc
            entry.update(image_id=result.image_id, buildpack=buildpack, procfile=processes,
                         reused=False)
            built[component.name] = entry
        return built

    def _reusable(self, image_id: str | None) -> bool:
        if not image_id:
            return False
        try:
            self.engine.image_attrs(image_id)
            return True
        except GitdError:
            return False

    def _component_tags(self, app: str, version: int) -> list[str]:
        try:
            release = self.store.get_release(app, version)
        except GitdError:
            return []
        return [c["image"] for c in release.components.values() if c.get("image")]

    def component_targets(self, release: Release, seq: int | None = None) -> list[Target]:
        """One Target per service of `release`, all with one seq (default: a new one)."""
        app = self.store.get_app(release.app)
        seq = self.store.take_seq(release.app) if seq is None else seq
        app_routes = self.store.routes(release.app)
        services = release.components
        urls = {components.env_name(name): f"http://{name}:{c['port']}" for name, c in services.items()}
        targets = []
        for name, service in sorted(services.items()):
            config = {**urls, **release.config}
            config.pop("PORT", None)  # each service has its own port
            commands = {"web": process_argv(service.get("procfile", {}).get("web"), service.get("buildpack"))
                        if service.get("buildpack") != "nix" else None}
            commands.update({k: process_argv(v, service.get("buildpack"))
                             for k, v in service.get("procfile", {}).items() if k not in ("web", "release")})
            paths = service_paths(app_routes, service)
            for route in paths:
                # app.json comes from a deployer: a service route may not
                # reach a path another app routes on a shared host
                owner = components.route_owner(self.store.routes_of_host(route.host), route.path)
                if owner != release.app:
                    raise DeployError(
                        f"service {name}: {route} is routed to app {owner!r}, not {release.app}")
            hosts = list(dict.fromkeys(r.host for r in paths))
            check = checks.resolve(app.settings, None, self.settings.deploy_timeout)
            check = replace(check, **{**service.get("healthchecks", {}),
                                      **app.settings.get("checks", {})})
            release_command = service.get("procfile", {}).get("release")
            targets.append(Target(
                app=release.app, version=release.version, seq=seq, image=service["image_id"],
                config=config, port=route_port(release, name),
                formation=formation(commands, app.scale, name), commands=commands,
                hosts=hosts, tls=tls.tls_plan(self.settings, release.app, hosts), check=check,
                release_command=process_argv(release_command, service.get("buildpack")),
                drain=self.drain_of(app.settings), stop_timeout=self.stop_timeout_of(app.settings),
                limits=resources.container_args(resources.effective(self.settings, app.settings)),
                release_timeout=self.settings.release_timeout, paths=paths, component=name,
                networks=self.service_networks(release.app), mounts=list(release.mounts)))
        return targets

    @staticmethod
    def commands(release: Release) -> dict[str, list[str] | None]:
        """Process type -> argv. The Nix buildpack already made the web
        command the image's own (flake app, else Procfile web)."""
        web = None if release.buildpack == "nix" else release.procfile.get("web")
        commands = {"web": process_argv(web, release.buildpack)}
        commands.update({k: process_argv(v, release.buildpack) for k, v in release.procfile.items()
                         if k not in ("web", "release")})
        return commands

    def _remove_image_quietly(self, tag: str) -> None:
        """Cleanup after a failure must not hide the failure itself."""
        try:
            self.engine.remove_image(tag)
        except GitdError as exc:
            progress_log.warning("could not remove image", image=tag, error=str(exc))

    def _fail(self, release: Release, progress: Progress, exc: Exception) -> None:
        if not isinstance(exc, GitdError):
            exc = GitdError(f"internal error ({type(exc).__name__}); see gitd's log")
        progress.warn(str(exc))
        current = self.store.get_app(release.app).current_release
        if current and current != release.version:
            progress.warn(f"v{current} keeps serving")
        self.store.update_release(release.app, release.version, status="failed", log=progress.text)
        progress.log.warning("release failed", error=str(exc))
        try:
            self.trim_history(release.app)  # failed pushes must not pile up either
        except Exception as trim_exc:  # noqa: BLE001 - never hide the failure itself
            progress.log.warning("trimming releases failed", error=str(trim_exc))

    # housekeeping

    def _prune_after_retirement(self, app: str, progress: Progress, deploying: int) -> None:
        """Called by the deploy itself when there was nothing to retire (it
        holds the app's lock), else by the background retirement, which
        must take the lock: a rollback or config change running meanwhile
        re-tags an old release's image, and pruning that release by image id
        would delete it under the deploy. Busy: the next deploy prunes."""
        if threading.get_ident() == deploying or self.try_lock is None:
            self._prune_quietly(app, progress)
            return
        try:
            with self.try_lock(app):
                self._prune_quietly(app, progress)
        except GitdError:
            progress.log.info("prune left to the next deploy: the app is busy")

    def _prune_quietly(self, app: str, progress: Progress) -> None:
        try:
            self.prune(app)
        except Exception as exc:  # in the background: the next deploy prunes again
            progress.log.warning("prune failed", error=str(exc))

    def prune(self, app: str) -> list[int]:
        """Drop images (and Nix GC roots) beyond the last `keep_releases`
        successful releases; those stay ready for rollback."""
        current = self.store.get_app(app).current_release
        releases = [r for r in self.store.releases(app) if r.status == "succeeded"]
        keep = {r.version for r in releases[: self.settings.keep_releases]} | {current}
        kept_images = {r.image_id for r in releases if r.version in keep}
        pruned = []
        for release in releases:
            if release.version in keep or release.status == "pruned":
                continue
            tag = release.image or image_tag(app, release.version)
            for service in release.components.values():  # their tags; shared images stay tagged
                self.engine.remove_image(service["image"])
            self.engine.remove_image(tag)
            if self.engine.has_image(tag):
                continue  # a container still draining in the background uses it: the next deploy prunes it
            if release.image_id not in kept_images:
                self.engine.remove_image(release.image_id)
            self._drop_gc_root(app, release.version)
            self.store.update_release(app, release.version, status="pruned")
            pruned.append(release.version)
        self.trim_history(app, keep)
        return pruned

    def trim_history(self, app: str, keep: set | None = None) -> None:
        """Release rows beyond `release_history` go, and the logs of those
        rollback cannot use are cut to their tail."""
        if keep is None:
            current = self.store.get_app(app).current_release
            succeeded = [r.version for r in self.store.releases(app) if r.status == "succeeded"]
            keep = set(succeeded[: self.settings.keep_releases]) | {current}
        self.store.trim_releases(app, {v for v in keep if v}, self.settings.release_history,
                                 TRIMMED_LOG_CHARS)

    def gc_root(self, app: str, version: int) -> Path:
        return self.settings.data_dir / "gcroots" / app / f"v{version}"

    def _drop_gc_root(self, app: str, version: int) -> None:
        root = self.gc_root(app, version)
        if root.exists() or root.is_symlink():
            root.unlink()

    def drop_app_files(self, app: str) -> None:
        shutil.rmtree(self.settings.data_dir / "gcroots" / app, ignore_errors=True)

    # helpers

    def _progress(self, sink, app: str, version: int) -> Progress:
        return Progress(sink, app, max_bytes=self.settings.max_log_bytes, release=f"v{version}")

    def _work_dir(self) -> Path:
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        return self.settings.work_dir

    def _image_port(self, image_id: str) -> int:
        exposed = (self.engine.image_attrs(image_id).get("Config") or {}).get("ExposedPorts") or {}
        tcp = [int(p.split("/")[0]) for p in exposed if p.endswith("/tcp")]
        return tcp[0] if len(tcp) == 1 else DEFAULT_PORT

    def _image_exists(self, release: Release) -> None:
        if not release.image_id or release.status == "pruned":
            raise NotFound(f"the image of v{release.version} was pruned; push again to rebuild")
        self.engine.image_attrs(release.image_id)


def _within(value, default, high):
    try:
        value = float(default if value is None else value)
    except (TypeError, ValueError):
        return default
    return value if 0 <= value <= high else default  # nan fails both comparisons


def process_types(procfile: dict) -> list[str]:
    """The process types a release runs: web (always: the image's own
    command when the Procfile has none) and the Procfile's others."""
    return ["web"] + [t for t in procfile if t not in ("web", "release")]


def formation(process_types, scale: dict, component: str | None = None) -> dict[str, int]:
    """Process type -> how many containers a deploy runs: web 1 unless
    scaled, the others as ps:scale set them (SERVICE.TYPE for an app.json
    service), those at 0 left out. The deploy and recovery at start both
    judge a release's containers by it."""
    prefix = f"{component}." if component else ""
    wanted = {"web": 1}
    wanted.update({t: int(scale[prefix + t]) for t in process_types if prefix + t in scale})
    return {t: n for t, n in wanted.items() if n > 0}


def release_formations(release: Release, scale: dict) -> dict[str | None, dict[str, int]]:
    """Component (None for an app without app.json services) -> its formation."""
    if release.components:
        return {name: formation(process_types(service.get("procfile") or {}), scale, name)
                for name, service in release.components.items()}
    return {None: formation(process_types(release.procfile), scale)}


def route_port(release: Release, component: str | None = None) -> int:
    """The port a release's web containers (of `component`) listen on and
    are routed to, as its deploy labelled them."""
    if component:
        return int(release.components[component]["port"])
    return _port_from(release.config.get("PORT"), release.port or DEFAULT_PORT)


def _port_from(value: str | None, default: int) -> int:
    """config:set checks PORT; a value stored before that check falls back."""
    try:
        return validate.port(value) if value else default
    except GitdError:
        return default


def _formation_text(formation: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(formation.items())) or "nothing to run"

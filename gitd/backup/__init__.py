"""`gitd backup` and `gitd restore`: the whole server in one archive, and
back (issue #26).

A backup holds the data dir as it is while gitd serves (the state database
as sqlite's online backup, never its files mid-write; repositories, host
key, certificates and ACME account, gitd.toml, deploy keys) under `data/`,
and each service's dump, taken as services:backup takes it, under
`services/<name>.dump`. What a start rebuilds is left out: builds in
progress (work/), Traefik's log, the record of a running gitd, services'
dated dumps (backups/).

A restore writes a new data dir only (nothing of the engine is touched) and
leaves a plan in it, restore/pending.json. The next `gitd serve` on that dir
brings everything back once it serves (`finish`): each service started on
a new volume with its dump loaded, then each app's live release, its image
rebuilt from its stored commit when the engine lacks it, deployed with its
config, domains and scale. It is done there, not by `gitd restore`, because
a deploy needs what only a serving gitd runs (Traefik, the app locks); what
it could not do is logged per app and kept in restore/report.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import structlog

from gitd import __version__, gitserve, serving
from gitd.backup import archive
from gitd.core.config import Settings
from gitd.core.errors import GitdError
from hooks.engine import LABEL_APP, LABEL_INSTANCE
from hooks.pipeline import image_repository

log = structlog.get_logger("gitd.backup")

DATA = "data/"
SERVICES = "services/"
VOLUMES = "volumes/"
VOLUME_MOUNT = "/gitd-volume"  # where a helper container mounts a volume to copy it
# what a start makes again (top-level names of the data dir)
LEFT_OUT = {"gitd.db", "gitd.db-wal", "gitd.db-shm", "gitd.db-journal", "work", "backups",
            "restore", serving.FILE, serving.FILE + ".partial"}
LEFT_OUT_PATHS = {"traefik/traefik.log"}
RESTORE_DIR = "restore"
PENDING = "pending.json"
REPORT = "report.json"


# backup

def backup(settings: Settings, dest: Path, say: Callable[[str], None],
           volumes: bool = False) -> dict:
    """Write the archive to `dest` (atomically, 0600), with the apps' named
    volumes when asked; returns its manifest."""
    from gitd.service import Gitd  # the engine's client and services' runtime

    if not settings.db_path.is_file():
        raise GitdError(f"{settings.data_dir} holds no gitd (no {settings.db_path.name})")
    dest = Path(dest).absolute()
    if not dest.parent.is_dir():
        raise GitdError(f"{dest.parent} is not a directory")
    if dest.is_dir():
        raise GitdError(f"{dest} is a directory: name the archive's file")
    if _inside(dest, settings.data_dir):
        raise GitdError("write the backup outside the data dir")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".gitd-backup-") as tmp:
        os.chmod(tmp, 0o700)
        db_copy = Path(tmp) / "gitd.db"
        copy_database(settings.db_path, db_copy)
        sources = [archive.Source(DATA + "gitd.db", db_copy)]
        sources += data_sources(settings.data_dir)
        gitd = Gitd(settings)
        services = dump_services(gitd, Path(tmp), say)
        sources += [archive.Source(SERVICES + f"{name}.dump", path) for name, path in services]
        copied, left_out = copy_volumes(gitd, Path(tmp), say) if volumes else ([], {})
        sources += [archive.Source(VOLUMES + f"{name}.tar", path) for name, path in copied]
        manifest = archive.write(dest, sources, {
            "gitd_version": __version__, "created_at": time.time(),
            "services": sorted(name for name, _ in services),
            "volumes": sorted(name for name, _ in copied),
            "volumes_left_out": left_out})
    size = dest.stat().st_size
    say(f"wrote {dest} ({size} bytes: {len(manifest['files'])} entries, "
        f"{len(services)} service dump(s))")
    if left_out:
        say(f"{len(left_out)} volume(s) left out, on other swarm nodes: "
            f"{', '.join(sorted(left_out))}")
    return manifest


def copy_database(src: Path, dest: Path) -> None:
    """A consistent copy while gitd writes to it: sqlite's backup API."""
    source = sqlite3.connect(f"file:{urllib.parse.quote(str(src))}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    os.chmod(dest, 0o600)


def data_sources(data_dir: Path) -> list[archive.Source]:
    """The data dir's directories and regular files, minus LEFT_OUT; links,
    sockets and the like are not followed or kept (Nix's gc roots are links
    a rebuild makes again)."""
    sources = []
    for root, dirs, files in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in LEFT_OUT]
            files = [f for f in files if f not in LEFT_OUT]
        dirs[:] = sorted(d for d in dirs if not (Path(root) / d).is_symlink())
        for d in dirs:
            sources.append(archive.Source(DATA + (rel_root / d).as_posix(), Path(root) / d))
        for f in sorted(files):
            path = Path(root) / f
            rel = (rel_root / f).as_posix()
            if rel in LEFT_OUT_PATHS or path.is_symlink() or not path.is_file():
                continue
            sources.append(archive.Source(DATA + rel, path))
    return sources


def dump_services(gitd, tmp: Path, say) -> list[tuple[str, Path]]:
    """Each service's dump, as services:backup streams it, into `tmp`."""
    dumps = []
    for svc in gitd.store.list_services():
        path = tmp / f"{svc.name}.dump"
        say(f"dumping service {svc.name} ({svc.kind})")
        with open(path, "wb") as out:
            try:
                gitd.services.backup_stream(svc, out.write)
            except GitdError as exc:
                raise GitdError(f"service {svc.name} could not be dumped, so no backup was "
                                f"written: {exc}") from None
        dumps.append((svc.name, path))
    return dumps


def copy_volumes(gitd, tmp: Path, say) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """Each live app's named volumes as tar files (the engine's own copy of
    a directory), through a helper container of the app's image that is
    created, never started. On a swarm only this node's engine is reached:
    a volume on another node is left out and said (name -> why)."""
    copied, left_out, seen = [], {}, set()
    here = gitd.scheduler.node_name if gitd.scheduler_class.has_nodes else None
    placed = [a.name for a in gitd.store.list_apps() if gitd.store.app_node(a.name)]
    if here is None and placed:
        raise GitdError(f"--volumes: {', '.join(placed)} run(s) on swarm nodes, but these "
                        'settings say scheduler = "docker": back up with the settings gitd '
                        'serves with (scheduler = "swarm" in gitd.toml, or GITD_SCHEDULER=swarm)')
    for app in gitd.store.list_apps():
        release = gitd.store.current_release(app.name)
        node = (gitd.store.app_node(app.name) or here) if here else None
        for mount in gitd.store.get_mounts(app.name):
            if mount["type"] != "volume" or mount["source"] in seen:
                continue  # one volume mounted at two paths is copied once
            seen.add(mount["source"])
            if node != here:
                left_out[mount["source"]] = (
                    f"volume {mount['source']} of {app.name} is on swarm node {node}, which "
                    f"this node ({here}) cannot read: not in the archive; copy it on {node}")
                say(left_out[mount["source"]])
                continue
            if not gitd.engine.volume_exists(mount["source"]):
                continue
            if release is None:
                raise GitdError(f"{app.name} has volume {mount['source']} but no release to "
                                "copy it with")
            path = tmp / f"{mount['source']}.tar"
            say(f"copying volume {mount['source']} of {app.name}")
            with helper(gitd, release.image_id, mount["source"], read_only=True) as container:
                stream, _ = container.get_archive(VOLUME_MOUNT)
                with open(path, "wb") as out:
                    out.writelines(stream)
            copied.append((mount["source"], path))
    return copied, left_out


@contextlib.contextmanager
def helper(gitd, image_id: str, volume: str, read_only: bool):
    """A container (created, not started) with `volume` at VOLUME_MOUNT."""
    spec = {"image": image_id, "name": f"gitd-{gitd.settings.instance}-volume-{secrets.token_hex(4)}",
            "command": ["true"], "network_mode": "none",
            "labels": {LABEL_INSTANCE: gitd.settings.instance, "traefik.enable": "false"},
            "mounts": [{"type": "volume", "source": volume, "target": VOLUME_MOUNT,
                        "read_only": read_only, "no_copy": True}]}
    container = gitd.engine.create(spec)
    try:
        yield container
    finally:
        gitd.engine.remove(container)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False


# restore

def restore(settings: Settings, source: Path, say: Callable[[str], None]) -> dict:
    """Verify the whole archive, then write it as a new data dir with a plan
    for the next start. Refuses a data dir that holds anything."""
    data_dir = settings.data_dir.absolute()
    source = Path(source)
    if not source.is_file():
        raise GitdError(f"{source} is not a file")
    refuse_used(data_dir)
    parent = data_dir.parent
    if not parent.is_dir():
        raise GitdError(f"{parent} does not exist")
    manifest = archive.verify(source, free_bytes=shutil.disk_usage(parent).free)
    say(f"verified {source}: {len(manifest['files'])} entries, gitd "
        f"{manifest.get('gitd_version', '?')}, written "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(manifest.get('created_at', 0)))}")
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{data_dir.name}.restoring-"))
    try:
        archive.extract(source, lambda name: _target(tmp, name))
        plan = write_plan(tmp, manifest)
        refuse_used(data_dir)  # made meanwhile: keep what is there
        if data_dir.exists():
            data_dir.rmdir()
        tmp.rename(data_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(data_dir, 0o700)
    say(f"restored {data_dir}: {len(plan['apps'])} app(s), {len(plan['services'])} service(s)")
    for why in plan["volumes_left_out"].values():
        say(f"not in the backup: {why}")
    say(f"next: gitd serve --data-dir {data_dir}; once it serves it starts the services with "
        "their data and deploys each app's live release (rebuilt from its commit), and logs "
        f"per app what it could not (also in {data_dir / RESTORE_DIR / REPORT})")
    return plan


def refuse_used(data_dir: Path) -> None:
    if data_dir.is_symlink() or (data_dir.exists() and not data_dir.is_dir()):
        raise GitdError(f"{data_dir} is not a directory")
    if data_dir.exists() and any(data_dir.iterdir()):
        what = "holds a gitd" if (data_dir / "gitd.db").exists() else "is not empty"
        raise GitdError(f"{data_dir} {what}: restore into a new or empty directory; "
                        "nothing was changed")


def _target(tmp: Path, name: str) -> Path | None:
    if name.startswith(DATA):
        return tmp / name[len(DATA):]
    if name.startswith(SERVICES) and "/" not in name[len(SERVICES):]:
        return tmp / RESTORE_DIR / "services" / name[len(SERVICES):]
    if name.startswith(VOLUMES) and "/" not in name[len(VOLUMES):]:
        return tmp / RESTORE_DIR / "volumes" / name[len(VOLUMES):]
    raise GitdError(f"refused: {name} is neither data nor a service dump")


def write_plan(data_dir: Path, manifest: dict) -> dict:
    """What the next start brings back: the services dumped and every app
    with a live release (read from the restored database)."""
    from gitd.core.store import Store

    if not (data_dir / "gitd.db").is_file():
        raise GitdError("refused: the archive holds no state database")
    try:
        store = Store(data_dir / "gitd.db")
        apps = [a.name for a in store.list_apps() if a.current_release]
        services = [s.name for s in store.list_services()]
    except (sqlite3.Error, GitdError) as exc:
        raise GitdError(f"refused: the archive's state database cannot be read ({exc})") from None
    dumped = set(manifest.get("services") or [])
    plan = {"apps": apps, "services": services,
            "dumps": sorted(s for s in services if s in dumped),
            "volumes": sorted(manifest.get("volumes") or []),
            "volumes_left_out": dict(manifest.get("volumes_left_out") or {})}
    directory = data_dir / RESTORE_DIR
    directory.mkdir(exist_ok=True, mode=0o700)
    _write_json(directory / PENDING, plan)
    return plan


# at the next start

def pending(settings: Settings) -> dict | None:
    path = settings.data_dir / RESTORE_DIR / PENDING
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def finish(gitd) -> dict[str, str]:
    """Bring back what a restore left in the plan (run by `gitd serve` once
    it serves). Returns, per app and service, what was done or why not."""
    plan = pending(gitd.settings)
    if plan is None:
        return {}
    try:
        gitd.engine  # noqa: B018 - raises while Docker is unreachable
    except GitdError as exc:
        log.warning("restore waits for the next start: the engine is unreachable", error=str(exc))
        return {}
    directory = gitd.settings.data_dir / RESTORE_DIR
    report = directory / REPORT
    outcome: dict[str, str] = json.loads(report.read_text()) if report.exists() else {}
    # each item leaves the plan once done: a start after an interruption resumes
    while plan.get("services"):
        name = plan["services"][0]
        dump = directory / "services" / f"{name}.dump"
        _record(outcome, f"service {name}", _attempt(bring_back_service, gitd, name, dump, plan))
        plan["services"].pop(0)
        _save(directory, plan, outcome)
    while plan.get("apps"):
        name = plan["apps"][0]
        _record(outcome, f"app {name}", _attempt(bring_back_app, gitd, name))
        plan["apps"].pop(0)
        _save(directory, plan, outcome)
    (directory / PENDING).unlink()
    for copies in ("services", "volumes"):  # they hold data: not kept once loaded
        shutil.rmtree(directory / copies, ignore_errors=True)
    return outcome


def _record(outcome: dict, what: str, result: str) -> None:
    outcome[what] = result
    (log.info if result.startswith("restored") else log.warning)("restore", item=what,
                                                                 result=result)


def _save(directory: Path, plan: dict, outcome: dict) -> None:
    _write_json(directory / REPORT, outcome)
    _write_json(directory / PENDING, plan)


def _write_json(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1))
    partial.replace(path)


def _attempt(action, *args) -> str:
    try:
        return action(*args)
    except GitdError as exc:
        return f"not restored: {exc}"
    except Exception as exc:
        log.exception("restore failed")
        return f"not restored: {type(exc).__name__}: {exc}"


def bring_back_service(gitd, name: str, dump: Path, plan: dict) -> str:
    """Start the service on a new volume and load its dump. One already on
    the engine is kept as it is, unless this restore made it (a start cut
    short between the two)."""
    svc = gitd.store.get_service(name)
    emit = lambda line: log.info("restore", service=name, line=line)
    with gitd.locks.hold(f"service:{name}", gitd.settings.lock_wait):
        if not gitd.services.runtime.exists(svc):
            gitd.services.runtime.make(svc, emit)
            plan.setdefault("made", []).append(name)
            _write_json(gitd.settings.data_dir / RESTORE_DIR / PENDING, plan)
        elif name not in plan.get("made", []):
            return "kept: it already runs on this engine (the dump was not loaded)"
        if not dump.is_file():
            return "restored empty: the archive held no dump of it"
        gitd.services.restore(svc, _chunks(dump), emit)
    return "restored with its data"


def _chunks(path: Path):
    with open(path, "rb") as fh:
        while chunk := fh.read(archive.CHUNK):
            yield chunk


def bring_back_app(gitd, name: str) -> str:
    app_log = log.bind(app=name)
    sink = lambda line: app_log.info(line.rstrip())
    with gitd.app_lock(name):
        release = gitd.store.require_current_release(name)
        how = "its image was still here"
        if missing_images(gitd.engine, release):
            how = bring_back_image(gitd, release, sink)
        release = gitd.store.get_release(name, release.version)
        how += bring_back_volumes(gitd, release)
        gitd.pipeline.redeploy(name, sink, "Restored from a backup: deploying", trigger="restart")
    return f"restored at v{release.version} ({how})"


def missing_images(engine, release) -> list[str]:
    """The release's images this engine lacks: its own, or with app.json
    services, each service's."""
    if release.components:
        ids = [c.get("image_id") for c in release.components.values()]
    else:
        ids = [release.image_id]
    return [i or "" for i in ids if not i or not engine.has_image(i)]


def bring_back_image(gitd, release, sink) -> str:
    """The live release's image on this engine: rebuilt from its commit, or
    pulled again when it was deployed from an image. Says which."""
    from dulwich.errors import NotGitRepository
    from dulwich.repo import Repo

    if release.commit:
        with gitd.using_repo(release.app):
            try:
                repo = Repo(str(gitserve.repo_path(gitd.settings.repos_dir, release.app)))
            except NotGitRepository:
                raise GitdError(f"its repository is not in the backup, so v{release.version} "
                                "cannot be rebuilt: push again") from None
            gitd.pipeline.rebuild(release, repo, sink)
        return f"rebuilt from commit {release.commit[:8]}"
    ref = image_ref(gitd.store, release)
    if ref is None:
        raise GitdError(f"v{release.version}'s image is not on this engine and gitd knows "
                        "neither its commit nor where it was pulled from: deploy it again")
    image_id = gitd.engine.pull(ref, gitd.settings.build_timeout, sink)
    gitd.engine.tag(image_id, image_repository(release.app), f"v{release.version}")
    gitd.store.update_release(release.app, release.version, image_id=image_id)
    return f"pulled {ref} again"


def image_ref(store, release) -> str | None:
    """Where the image of `release` came from when it was deployed from an
    image (apps:deploy-image and the like): the ref its deployment pulled, for
    it or for the release whose image it reuses (config changes, rollbacks)."""
    sharing = {r.version for r in store.releases(release.app) if r.image_id == release.image_id}
    pulled = [d for d in store.deployments(release.app, limit=10_000)
              if d.trigger == "image" and d.image and d.release in sharing]
    return pulled[0].image if pulled else None


def bring_back_volumes(gitd, release) -> str:
    """Fill the app's named volumes from the archive's copies (a volume that
    already exists is kept as it is). Returns what to add to the outcome."""
    directory = gitd.settings.data_dir / RESTORE_DIR / "volumes"
    left_out = (pending(gitd.settings) or {}).get("volumes_left_out") or {}
    said = []
    for mount in gitd.store.get_mounts(release.app):
        copy = directory / f"{mount['source']}.tar"
        if mount["type"] == "volume" and mount["source"] in left_out:
            said.append(f"not in the backup: {left_out[mount['source']]}")
        if mount["type"] != "volume" or not copy.is_file():
            continue
        if gitd.engine.volume_exists(mount["source"]):
            said.append(f"volume {mount['source']} kept as it was on this engine")
            continue
        gitd.engine.ensure_volume(mount["source"], {LABEL_APP: release.app})
        with helper(gitd, release.image_id, mount["source"], read_only=False) as container, \
                open(copy, "rb") as fh:
            if not container.put_archive(os.path.dirname(VOLUME_MOUNT), fh):
                raise GitdError(f"volume {mount['source']} could not be filled")
        said.append(f"volume {mount['source']} restored")
        said += pin_here(gitd, release.app)
    return "".join(f"; {line}" for line in said)


def pin_here(gitd, app: str) -> list[str]:
    """On a swarm, an app whose volume was filled on this node runs here
    now: its recorded node is the old server's (another hostname)."""
    if not gitd.scheduler_class.has_nodes:
        return []
    here = gitd.scheduler.node_name
    if gitd.store.app_node(app) == here:
        return []
    gitd.store.set_app_node(app, here)
    return [f"its tasks run on node {here} now, where its volumes are"]

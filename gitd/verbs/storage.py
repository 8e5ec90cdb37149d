"""storage:mount, storage:unmount, storage:list: data that outlives containers.

A mount is a named volume of the app's own (created when missing) or, for
admins only, a host directory. Changing the mounts makes a new release that
records them; on a swarm a named volume lives on one node, where the app's
tasks that mount one then run.
"""

from __future__ import annotations

from gitd.core import validate
from gitd.core.errors import GitdError, NotFound, PermissionDenied
from gitd.verbs import Session
from hooks.engine import LABEL_APP


def volume_docker_name(instance: str, app: str, name: str) -> str:
    """Scoped to the app: another app (or its deployer) cannot name it."""
    return f"gitd-{instance}.{app}.{name}"


def display_source(instance: str, app: str, mount: dict) -> str:
    prefix = volume_docker_name(instance, app, "")
    if mount["type"] == "volume" and mount["source"].startswith(prefix):
        return mount["source"][len(prefix):]
    return mount["source"]


def resolve(s: Session, app: str, text: str) -> dict:
    source, target = validate.mount_spec(text)
    if source.startswith("/"):
        if not s.key.is_admin:
            raise PermissionDenied("only admins may mount host directories; "
                                   "use a named volume (NAME:/path)")
        return {"type": "bind", "source": validate.host_path(source, s.settings.data_dir,
                                                             s.settings.engine_url),
                "target": target}
    validate.volume_name(source)
    return {"type": "volume", "source": volume_docker_name(s.settings.instance, app, source),
            "target": target}


def make_volume(s: Session, app: str, volume: str) -> None:
    """Create the volume on this node. On a swarm a volume lives on one node:
    the app's tasks are pinned to the node holding its volumes (recorded on
    the app the first time; there the swarm makes a volume new to it)."""
    if not s.gitd.scheduler_class.has_nodes:
        s.gitd.engine.ensure_volume(volume, {LABEL_APP: app})
        return
    here = s.gitd.scheduler.node_name
    node = s.store.app_node(app)
    if node is None:
        s.store.set_app_node(app, here)
        s.progress(f"-----> {app} runs on node {here} from now on: its volumes live there")
    if (node or here) == here:
        s.gitd.engine.ensure_volume(volume, {LABEL_APP: app})


def _apply(s: Session, app: str, change, description: str) -> list[dict]:
    """Store the new mounts and release them; on failure put the old back."""
    with s.lock(app):
        old = s.store.get_mounts(app)
        new = change(list(old))
        s.store.set_mounts(app, new)
        current = s.store.current_release(app)
        if current is None:
            s.progress(f"-----> {description} on {app}: stored; the first push uses it")
            return new
        try:
            s.gitd.pipeline.release(app, current, current.config, kind="storage",
                                    description=description, by=s.key.name,
                                    sink=s.progress, mounts=new)
        except GitdError as exc:
            s.store.set_mounts(app, old)
            raise GitdError(f"{exc}\nmounts of {app} left as they were; "
                            f"v{current.version} keeps serving") from exc
    return new


def _rows(s: Session, app: str, mounts: list[dict]) -> list[dict]:
    return [{"source": display_source(s.settings.instance, app, m), "type": m["type"],
             "target": m["target"]} for m in mounts]


def mount(s: Session, app: str, spec: str) -> dict:
    """Mount `NAME:/path` (a volume of the app's own) or `/host/dir:/path`."""
    s.app(app)
    wanted = resolve(s, app, spec)

    def change(mounts: list[dict]) -> list[dict]:
        if any(m["target"] == wanted["target"] for m in mounts):
            raise GitdError(f"{app} already mounts something at {wanted['target']}: "
                            f"storage:unmount {app} {wanted['target']} first")
        if wanted["type"] == "volume":
            make_volume(s, app, wanted["source"])
        return mounts + [wanted]

    return {"app": app, "mounts": _rows(s, app, _apply(s, app, change, f"Mount {spec}"))}


def unmount(s: Session, app: str, target: str) -> dict:
    """Unmount a path; its volume and data are kept."""
    s.app(app)
    target = validate.mount_target(target)

    def change(mounts: list[dict]) -> list[dict]:
        kept = [m for m in mounts if m["target"] != target]
        if len(kept) == len(mounts):
            raise NotFound(f"{app} mounts nothing at {target}")
        return kept

    return {"app": app, "target": target,
            "mounts": _rows(s, app, _apply(s, app, change, f"Unmount {target}"))}


def list_mounts(s: Session, app: str) -> list[dict]:
    """The app's mounts; on a swarm each with the node holding it."""
    s.app(app)
    rows = _rows(s, app, s.store.get_mounts(app))
    node = s.store.app_node(app) if s.gitd.scheduler_class.has_nodes else None
    if node:  # a swarm: where the volumes are (host paths: on every node)
        rows = [dict(r, node=node if r["type"] == "volume" else "*") for r in rows]
    return rows

"""Releases: list, show, roll back.

Every push, config change and rollback is a numbered release: an image, a
config snapshot, a Procfile, a status and the full log of its deploy. A
rollback is a new release made from an old one's image and config: no
rebuild.
"""

from __future__ import annotations

from gitd.core import validate
from gitd.core.errors import Conflict, NotFound, UsageError
from gitd.verbs import Session, iso_time
from gitd.verbs.config import replace_config

DEFAULT_COUNT = 20


def summary(release, current: int | None) -> dict:
    return {
        "version": release.version,
        "current": release.version == current,
        "status": release.status,
        "kind": release.kind,
        "commit": release.commit,
        "buildpack": release.buildpack,
        "pushed_by": release.pushed_by,
        "description": release.description,
        "created_at": iso_time(release.created_at),
        "finished_at": iso_time(release.finished_at),
        "image": release.image,
    }


def list_releases(s: Session, app: str, count: int = DEFAULT_COUNT) -> list[dict]:
    """The newest `count` releases, newest first."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise UsageError("the count of releases must be a whole number")
    found = s.app(app)
    return [summary(r, found.current_release) for r in s.store.releases(app)[:max(count, 0)]]


def info(s: Session, app: str, version: int | str) -> dict:
    """One release: what it runs (config names, not values: they are
    secrets) and the full log of its build and deploy."""
    found = s.app(app)
    release = s.store.get_release(app, validate.release_version(str(version)))
    data = {**summary(release, found.current_release), "procfile": release.procfile,
            "config_keys": sorted(release.config), "port": release.port, "log": release.log}
    if release.components:  # app.json services: each one's image
        data["services"] = {
            name: {"image": c.get("image"), "image_id": c.get("image_id"), "tree": c.get("tree"),
                   "port": c.get("port"), "reused": bool(c.get("reused")),
                   "processes": c.get("procfile", {})}
            for name, c in sorted(release.components.items())}
    return data


def rollback_target(store, app: str, version: int | None):
    """The release to roll back to: `version`, or the newest succeeded one
    before the current release."""
    current = store.get_app(app).current_release
    if current is None:
        raise NotFound(f"{app} has no release yet: nothing to roll back")
    if version is None:
        older = [r for r in store.releases(app) if r.version < current and r.status == "succeeded"]
        if not older:
            raise NotFound(f"{app} has no earlier release that succeeded to roll back to")
        return older[0]
    release = store.get_release(app, version)
    if version == current:
        raise Conflict(f"v{version} is the current release already")
    if release.status not in ("succeeded", "pruned"):
        raise Conflict(f"v{version} {release.status}: only a release that succeeded can come back")
    return release


def rollback(s: Session, app: str, version: int | str | None = None) -> dict:
    """A new release from `version`'s image and config (default: the newest
    succeeded one before the current), deployed; the app's config becomes
    that release's."""
    s.require_admin()
    s.app(app)
    wanted = validate.release_version(str(version)) if version is not None else None
    with s.lock(app):
        base = rollback_target(s.store, app, wanted)
        s.gitd.pipeline.release(app, base, base.config, kind="rollback",
                                description=f"Rollback to v{base.version}", by=s.key.name,
                                sink=s.progress)
        replace_config(s.store, app, s.store.get_config(app), base.config)
        s.store.set_mounts(app, base.mounts)
    return {"app": app, "from": base.version, "release": s.store.get_app(app).current_release}

"""Resources: per-app container limits (memory, cpus, pids), like Dokku's
resource:limit.

They apply to the app's web and worker containers, its release command, its
one-off `run` containers and (memory only) its builds. A change redeploys
the current release so it applies at once; if that fails the change is undone.
"""

from __future__ import annotations

from gitd.core import resources
from gitd.core.errors import GitdError, UsageError
from gitd.verbs import Session


def show(s: Session, app: str) -> dict:
    """What is set, gitd's defaults, and what applies."""
    settings = s.app(app).settings
    own = settings.get("resources") or {}
    applied = resources.effective(s.settings, settings)
    return {
        "app": app,
        "set": own,
        "defaults": resources.defaults(s.settings),
        "applied": {k: applied.get(k, "unlimited") for k in resources.KEYS},
    }


def set_limits(s: Session, app: str, values: dict[str, str]) -> dict:
    """Set some of memory (512m), cpus (1.5), pids (512); the others stay."""
    s.require_admin()
    found = s.app(app)
    if not values:
        raise UsageError("name at least one of memory=, cpus=, pids=")
    checked = {}
    for key, value in values.items():
        if not isinstance(value, str):
            raise UsageError(f"the value of {str(key)[:40]!r} is not text")
        checked[key] = resources.normalise(key, value)
    current = found.settings.get("resources") or {}
    text = " ".join(f"{k}={v}" for k, v in sorted(checked.items()))
    return _change(s, app, {**current, **checked}, text)


def unset(s: Session, app: str, keys: list[str]) -> dict:
    """Back to gitd's defaults for `keys`."""
    s.require_admin()
    found = s.app(app)
    if not keys:
        raise UsageError(f"name at least one of {', '.join(resources.KEYS)}")
    for key in keys:
        if key not in resources.KEYS:
            raise UsageError(f"unknown resource {key!r} (known: {', '.join(resources.KEYS)})")
    current = dict(found.settings.get("resources") or {})
    for key in keys:
        current.pop(key, None)
    return _change(s, app, current, "unset " + " ".join(keys))


def _change(s: Session, app: str, new: dict[str, str], what: str) -> dict:
    """Store `new` and redeploy; `outcome`: unchanged, stored (applied from
    the first deploy) or deployed."""
    with s.lock(app):
        before = s.store.get_app(app).settings.get("resources") or {}
        done = {"app": app, "change": what, "set": new, "outcome": "unchanged"}
        if new == before:
            return {**done, "set": before}
        s.store.update_app_settings(app, resources=new or None)
        if s.store.current_release(app) is None:
            return {**done, "outcome": "stored"}
        try:
            s.gitd.pipeline.redeploy(app, s.progress, f"Applying resources {what}:")
        except GitdError as exc:
            s.store.update_app_settings(app, resources=before or None)
            raise GitdError(f"{exc}\nresources of {app} left as they were") from exc
        return {**done, "outcome": "deployed"}

"""Preview apps (issue #25): turn them on or off for an app, list them,
remove one. Deploying and removing them with a push is gitd.previews'."""

from __future__ import annotations

import time

from gitd.core import previews as rules
from gitd.core.errors import NotFound, UsageError
from gitd.verbs import Session, iso_time


def enable(s: Session, app: str, ttl: str | None = None, max_count: str | int | None = None) -> dict:
    """Pushes of branches other than the deploy branch deploy previews.
    ttl/max given replace the stored ones; the others stay."""
    s.require_admin()
    found = s.app(app)
    _not_a_preview(app)
    own = dict(found.settings.get("previews") or {})
    own["enabled"] = True
    if ttl is not None:
        own["ttl"] = rules.ttl_seconds(ttl)
    if max_count is not None:
        own["max"] = rules.max_count(max_count)
    with s.lock(app):
        s.store.update_app_settings(app, previews=own)
    return show_policy(s, app)


def disable(s: Session, app: str) -> dict:
    """Off, whatever app.json says; the app's previews are removed."""
    s.require_admin()
    found = s.app(app)
    _not_a_preview(app)
    own = dict(found.settings.get("previews") or {})
    own["enabled"] = False
    with s.lock(app):
        s.store.update_app_settings(app, previews=own)
        removed = s.gitd.previews.destroy_all(app, s.progress)
    return {**show_policy(s, app), "removed": removed}


def show_policy(s: Session, app: str) -> dict:
    policy = s.gitd.previews.policy(app)
    if policy is None:
        return {"app": app, "enabled": False}
    return {"app": app, "enabled": True, "ttl_seconds": policy["ttl"], "max": policy["max"],
            "exclude": policy["exclude"], "env_keys": sorted(policy["env"]),
            "services": policy["services"]}


def list_previews(s: Session, app: str) -> dict:
    """The app's previews, with URL, commit and age."""
    s.app(app)
    _not_a_preview(app)
    policy = show_policy(s, app)
    now = time.time()
    rows = []
    for preview in s.store.previews(app):
        current = s.store.current_release(preview.name)
        ttl = policy.get("ttl_seconds")
        rows.append({
            "name": preview.name, "branch": preview.branch,
            "url": s.settings.host_url(f"{preview.name}.{s.settings.domain}"),
            "commit": preview.commit, "release": current.version if current else None,
            "created_at": iso_time(preview.created_at), "updated_at": iso_time(preview.updated_at),
            "age_seconds": int(now - preview.created_at),
            "expires_at": iso_time(preview.updated_at + ttl) if ttl else None})
    return {**policy, "previews": rows}


def destroy(s: Session, app: str, branch: str) -> dict:
    """The preview of `branch` (its branch stays in the repository)."""
    s.app(app)
    _not_a_preview(app)
    with s.lock(app):
        found = s.store.preview_of_branch(app, branch)
        if found is None:
            raise NotFound(f"{app} has no preview of branch {rules.shown(branch)} "
                           f"(see: previews {app})")
        s.gitd.previews.destroy(found.name, s.progress)
    return {"app": app, "branch": branch, "removed": found.name}


def _not_a_preview(app: str) -> None:
    if rules.split_name(app):
        raise UsageError(f"{app} is a preview app: previews are made of the app it previews")

"""Checks: how a deploy decides a new container is ready, and how long the
old ones drain."""

from __future__ import annotations

from gitd.core import validate
from gitd.core.errors import UsageError
from gitd.verbs import Session
from hooks import checks

DEPLOY_KEYS = ("drain", "stop_timeout")
MAX_DRAIN = 3600
MAX_STOP_TIMEOUT = 3600


def show(s: Session, app: str) -> dict:
    """The check that applies, where its values come from, and the drain."""
    found = s.app(app)
    release = s.store.current_release(app)
    check = checks.resolve(found.settings, release.app_json if release else None,
                           s.settings.deploy_timeout)
    return {
        "app": app,
        "check": checks.as_dict(check),
        "from_app_json": checks.from_app_json(release.app_json) if release else {},
        "set": found.settings.get("checks", {}),
        "drain": found.settings.get("drain", s.settings.drain_seconds),
        "stop_timeout": found.settings.get("stop_timeout", s.settings.stop_timeout),
    }


def set_values(s: Session, app: str, values: dict[str, str]) -> dict:
    """Set check values (path, timeout, attempts, wait) and deploy values
    (drain, stop_timeout), all checked before any is stored. Returns those
    set, typed. Applies from the next deploy."""
    s.require_admin()
    found = s.app(app)
    if not values:
        raise UsageError("name at least one KEY=VALUE")
    deploy_values = {k: _deploy_value(k, v) for k, v in values.items() if k in DEPLOY_KEYS}
    parsed = checks.parse_values({k: v for k, v in values.items() if k not in DEPLOY_KEYS})
    current = found.settings.get("checks", {})
    s.store.update_app_settings(app, checks={**current, **parsed}, **deploy_values)
    return {"app": app, "set": {**parsed, **deploy_values}}


def _deploy_value(key: str, raw: str):
    if key == "drain":
        return validate.seconds(raw, "drain", 0, MAX_DRAIN)
    return validate.whole_number(raw, "stop_timeout", 0, MAX_STOP_TIMEOUT)


def disable(s: Session, app: str) -> dict:
    """New containers get traffic as soon as they start: deploys may drop
    requests."""
    s.require_admin()
    s.app(app)
    s.store.update_app_settings(app, checks_disabled=True)
    return {"app": app, "checks": "disabled"}


def enable(s: Session, app: str) -> dict:
    s.require_admin()
    s.app(app)
    s.store.update_app_settings(app, checks_disabled=None)
    return {"app": app, "checks": "enabled"}

"""Config: an app's environment, shown, read, set and unset.

Config is given to the containers as their environment when they start; it
is never baked into an image. A change makes a new release (kind "config")
from the current release's image and deploys it; a failed deploy puts the
old values back so what is stored matches what runs.
"""

from __future__ import annotations

from typing import Callable

from gitd.core import validate
from gitd.core.errors import GitdError, NotFound, Taken, UsageError
from gitd.verbs import Session

RESERVED_PREFIX = "GITD_"
RESERVED_KEYS = ("DYNO",)


def check_key(key: str) -> str:
    if not isinstance(key, str):
        raise UsageError(f"invalid config key {key!r}: a config key is text")
    validate.config_key(key)
    if key.startswith(RESERVED_PREFIX) or key in RESERVED_KEYS:
        raise Taken(f"{key} is set by gitd itself and cannot be changed")
    return key


def check_value(key: str, value: str) -> str:
    """Values may hold anything but NUL; PORT must be a port (gitd routes to it)."""
    if not isinstance(value, str):
        raise UsageError(f"the value of {key} is not text")
    if "\0" in value:
        raise UsageError(f"the value of {key} holds a NUL byte")
    if key == "PORT":
        validate.port(value)
    return value


def replace_config(store, app: str, old: dict, new: dict) -> None:
    """Make the stored config `new` (it was `old`)."""
    store.set_config(app, new, unset=[k for k in old if k not in new])


def show(s: Session, app: str) -> dict[str, str]:
    s.require_admin()
    s.app(app)
    return s.store.get_config(app)


def pending(s: Session, app: str, config: dict) -> int | None:
    """The current release's version when it runs with other values than
    `config` (stored with --no-restart); else None."""
    current = s.store.current_release(app)
    return current.version if current and current.config != config else None


def get(s: Session, app: str, key: str) -> str:
    s.require_admin()
    s.app(app)
    validate.config_key(key)
    config = s.store.get_config(app)
    if key not in config:
        raise NotFound(f"{key} is not set on {app}")
    return config[key]


def set_vars(s: Session, app: str, values: dict[str, str], *, restart: bool = True) -> dict:
    s.require_admin()
    s.app(app)
    if not values:
        raise UsageError("name at least one KEY=VALUE")
    values = {check_key(k): check_value(k, v) for k, v in values.items()}
    return apply_config(s, app, lambda old: {**old, **values}, f"Set {', '.join(values)}",
                        restart=restart)


def unset(s: Session, app: str, keys: list[str], *, restart: bool = True) -> dict:
    s.require_admin()
    s.app(app)
    if not keys:
        raise UsageError("name at least one KEY")
    keys = [check_key(k) for k in keys]

    def change(old: dict) -> dict:
        missing = [k for k in keys if k not in old]
        if missing:
            raise NotFound(f"not set on {app}: {', '.join(missing)}; nothing changed")
        return {k: v for k, v in old.items() if k not in keys}

    return apply_config(s, app, change, f"Unset {', '.join(keys)}", restart=restart)


def patch(s: Session, app: str, changes: dict[str, str | None], *, restart: bool = True) -> dict:
    """Set and unset in one change (a JSON merge patch: a value sets its key,
    None unsets it); one release for all of it. Unsetting a key that is not
    set is refused, and then nothing changes."""
    s.require_admin()
    s.app(app)
    if not isinstance(changes, dict) or not changes:
        raise UsageError("name at least one KEY")
    values = {check_key(k): check_value(k, v) for k, v in changes.items() if v is not None}
    keys = [check_key(k) for k, v in changes.items() if v is None]

    def change(old: dict) -> dict:
        missing = [k for k in keys if k not in old]
        if missing:
            raise NotFound(f"not set on {app}: {', '.join(missing)}; nothing changed")
        return {**{k: v for k, v in old.items() if k not in keys}, **values}

    description = "; ".join(part for part in (values and f"Set {', '.join(values)}",
                                              keys and f"Unset {', '.join(keys)}") if part)
    return apply_config(s, app, change, description, restart=restart)


def apply_config(s: Session, app: str, change: Callable[[dict], dict], description: str,
                 restart: bool = True) -> dict:
    """Change the stored config under the app's lock and, unless told not
    to, release it. `change(old) -> new` may raise to refuse. Returns what
    happened: `outcome` is unchanged, stored (no release yet), pending (kept
    for the next deploy; `running` the version that runs) or released."""
    with s.lock(app):
        old = s.store.get_config(app)
        new = change(dict(old))
        done = {"app": app, "description": description, "outcome": "unchanged", "running": None}
        if new == old:
            return done
        replace_config(s.store, app, old, new)
        current = s.store.current_release(app)
        if current is None:
            return {**done, "outcome": "stored"}
        if not restart:
            return {**done, "outcome": "pending", "running": current.version}
        _release(s, current, old, new, description)
        return {**done, "outcome": "released", "running": s.store.get_app(app).current_release}


def _release(s: Session, current, old: dict, new: dict, description: str) -> None:
    """Deploy `new` as a config release; on failure store `old` again."""
    app = current.app
    try:
        s.gitd.pipeline.release(app, current, new, kind="config", description=description,
                                by=s.key.name, sink=s.progress)
    except Exception as exc:  # any failure puts the old state back
        replace_config(s.store, app, new, old)
        if not isinstance(exc, GitdError):
            raise
        raise GitdError(f"{exc}\nconfig of {app} left as it was; "
                        f"v{current.version} keeps serving") from exc

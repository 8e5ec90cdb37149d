"""ps, ps:scale, ps:restart, ps:stop, ps:start: an app's processes.

Process types come from the Procfile of the current release: `web` (always
there; the image's own command when the Procfile does not name it) is routed,
the others are not, and `release` runs once per release before the swap.
"""

from __future__ import annotations

from gitd.core import validate
from gitd.core.errors import GitdError, NotFound, UsageError
from gitd.verbs import Session
from hooks import components, dynos
from hooks.events import Progress
from hooks.engine import LABEL_ROLE, LABEL_SEQ

MAX_SCALE = 20
NOT_SCALABLE = ("release",)


# formation

def process_types(release) -> list[str]:
    """The types a release can run: web first, then its Procfile's others.
    With app.json services, `SERVICE.TYPE` for each service."""
    if release and release.components:
        return [f"{name}.{t}" for name, service in sorted(release.components.items())
                for t in _types_of(service.get("procfile") or {})]
    return _types_of(release.procfile if release else {})


def _types_of(procfile: dict) -> list[str]:
    return ["web", *sorted(t for t in procfile if t not in ("web", "release"))]


def formation(scale: dict, release) -> dict[str, int]:
    """How many of each type run: web defaults to 1, the others to 0."""
    return {t: int(scale.get(t, 1 if t.rpartition(".")[2] == "web" else 0))
            for t in process_types(release)}


def scale_name(name: str) -> str:
    """`TYPE`, or `SERVICE.TYPE` for an app.json service, validated."""
    service, dot, kind = name.rpartition(".")
    if dot and not components.COMPONENT_NAME.fullmatch(service):
        raise UsageError(f"invalid service name {service[:40]!r}")
    validate.process_type(kind)
    return kind


def check_scale(changes: dict, release) -> dict[str, int]:
    """{"web": 2, "worker": "1"} -> {"web": 2, "worker": 1}, checked against
    the release: known types only, counts (ints or digits) from 0 to MAX_SCALE."""
    known = process_types(release)
    checked: dict[str, int] = {}
    for name, count in changes.items():
        if not isinstance(name, str):
            raise UsageError(f"invalid process type {str(name)[:40]!r}")
        if scale_name(name) in NOT_SCALABLE:
            raise UsageError("`release` runs once per release; it cannot be scaled")
        if name not in known:
            where = f"the Procfile of v{release.version}" if release else "an app not deployed yet"
            raise NotFound(f"no process type {name!r} in {where} (known: {', '.join(known)})")
        checked[name] = validate.whole_number(count, f"the count for {name}", 0, MAX_SCALE)
    return checked


def formation_text(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


# containers (or swarm tasks): rows from the scheduler (hooks.dynos)

dyno = dynos.dyno


def _order(info: dict):
    kind, _, index = info["name"].partition(".")
    return (info["role"] != "service", kind != "web", kind, int(index) if index.isdigit() else 0)


def app_containers(s: Session, app: str) -> list[dict]:
    """The app's rows, each with its phase (hooks.dynos.phase)."""
    live_seq = s.store.get_app(app).live_seq
    rows = sorted(s.gitd.scheduler.dynos(app), key=_order)
    for info in rows:
        info["phase"] = dynos.phase(info, live_seq)
    return rows


def live_services(s: Session, app: str) -> list:
    """The service units of the app's live deploy, running or not: its
    containers, or its swarm services."""
    seq = s.store.get_app(app).live_seq
    if seq is None:
        return []
    return s.gitd.scheduler.units(app, **{LABEL_SEQ: str(seq), LABEL_ROLE: "service"})


# verbs

def ps(s: Session, app: str) -> dict:
    """The app's formation and every container (or swarm task) it has."""
    record = s.app(app)
    counts = formation(record.scale, s.store.current_release(app))
    return {"app": app, "release": record.current_release, "formation": counts,
            "stopped": bool(record.settings.get("stopped")),
            "containers": app_containers(s, app)}


def show_formation(s: Session, app: str) -> dict[str, int]:
    s.require_admin()
    record = s.app(app)
    return formation(record.scale, s.store.current_release(app))


def scale(s: Session, app: str, changes: dict) -> dict:
    """Set counts ({TYPE: COUNT}) and redeploy the current release with them;
    any failure puts the old counts back."""
    s.require_admin()
    s.app(app)
    if not changes:
        raise UsageError("name at least one TYPE=COUNT")
    changes = check_scale(changes, s.store.current_release(app))
    with s.lock(app):
        old = s.store.get_app(app).scale
        s.store.set_scale(app, {**old, **changes})
        current = s.store.current_release(app)
        if current is not None:
            _redeploy_scaled(s, app, old, changes)
        return {"app": app, "changes": changes, "deployed": current is not None,
                "formation": formation(s.store.get_app(app).scale, current)}


def _redeploy_scaled(s: Session, app: str, old: dict, changes: dict) -> None:
    try:
        s.gitd.pipeline.redeploy(app, s.progress, f"Scaling to {formation_text(changes)}:")
    except Exception as exc:  # any failure puts the old state back
        s.store.set_scale(app, old)
        if not isinstance(exc, GitdError):
            raise
        raise GitdError(f"{exc}\nscale of {app} left as it was") from exc


def restart(s: Session, app: str) -> dict:
    """New containers replace the old (zero downtime); config stored with
    --no-restart is released first."""
    s.require_admin()
    s.app(app)
    with s.lock(app):
        current = s.store.require_current_release(app)
        pending = s.store.get_config(app)
        if pending != current.config:
            s.gitd.pipeline.release(app, current, pending, kind="config",
                                    description="Apply config set with --no-restart",
                                    by=s.key.name, sink=s.progress)
            return {"app": app, "config_applied": True}
        s.gitd.pipeline.redeploy(app, s.progress, "Restarting")
        return {"app": app, "config_applied": False}


def stop(s: Session, app: str) -> dict:
    s.require_admin()
    record = s.app(app)
    timeout = int(record.settings.get("stop_timeout", s.settings.stop_timeout))
    with s.lock(app):
        units = live_services(s, app)
        s.store.update_app_settings(app, stopped=True)
        return {"app": app, "stopped": s.gitd.scheduler.stop_units(units, timeout)}


def start(s: Session, app: str) -> dict:
    """Start the live release's stopped containers and wait until they are
    served; with none left, deploy the current release afresh."""
    s.require_admin()
    s.app(app)
    with s.lock(app):
        s.store.require_current_release(app)
        units = live_services(s, app)
        if not units:
            s.gitd.pipeline.redeploy(app, s.progress, "Starting")
            return {"app": app, "started": 0, "redeployed": True}
        started = s.gitd.scheduler.start_units(units)
        s.store.update_app_settings(app, stopped=None)
        s.progress(f"-----> Started {app}: {started} container(s)")
        s.gitd.pipeline.serve_started(app, units, Progress(s.progress, app))
        return {"app": app, "started": started, "redeployed": False}

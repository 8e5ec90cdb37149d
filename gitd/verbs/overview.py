"""Overview: what the dashboard shows, gathered from the other verbs with
the caller's access (each verb checks it again)."""

from __future__ import annotations

from collections import Counter

from gitd.core import certs
from gitd.core.errors import GitdError, PermissionDenied
from gitd.verbs import Session, apps, config, deployments, logs, releases
from hooks import health

RECENT_DEPLOYS = 10
RECENT_LOG_LINES = 50
FINISHED = ("succeeded", "failed", "cancelled")  # a deployment's statuses once it ended


def app_summary(s: Session, name: str) -> dict:
    """One app as the apps page lists it: apps:info, its process counts and
    its last deployment."""
    info = apps.info(s, name)
    running = Counter(c["process"] for c in info["containers"] if c["state"] == "running")
    last = deployments.list_for_app(s, name, limit=1)
    return {**info, "running": dict(running), "last_deployment": last[0] if last else None}


def apps_overview(s: Session) -> list[dict]:
    """Every app the caller may see, as the apps page lists it: what
    app_summary says of one, read from the store in a few queries and from
    one listing of the engine's containers (a few queries and a listing per
    app took 2.5 ms each on a quiet machine)."""
    visible = [a["name"] for a in apps.list_apps(s)]
    rows = s.store.overview()
    names = [name for name in visible if name in rows]
    containers = s.gitd.scheduler.dynos_of(names)
    busy = s.gitd.locks.busy()
    return [_listed(s, rows[name], containers[name], name in busy) for name in names]


def _listed(s: Session, row: dict, containers: list[dict], deploying: bool) -> dict:
    app, hosts = row["app"], row["hosts"]
    last = row["last_deployment"]
    return {
        "name": app.name, "release": app.current_release, "commit": row["commit"],
        "state": health.app_state(containers, app.live_seq, bool(app.settings.get("stopped"))),
        "deploying": deploying, "scale": app.scale or {"web": 1},
        "running": dict(Counter(c["type"] for c in containers if c["state"] == "running")),
        "urls": [s.settings.host_url(h) for h in hosts],
        "certificate_warnings": certs.warnings(s.settings, app.name, hosts),
        "services": {name: {"kind": svc.kind, "env_var": env_var,
                            "last_backup_ok": svc.last_backup_ok,
                            "last_backup_message": svc.last_backup_message}
                     for name, (svc, env_var) in row["services"].items()},
        "last_deployment": deployments.to_dict(last, with_log=False) if last else None,
    }


def app_page(s: Session, name: str, reveal: bool = False) -> dict:
    """Everything the app's page shows; config values only for an admin who
    asked to see them (names alone otherwise: they are secrets)."""
    summary = app_summary(s, name)
    page = {"app": summary, "is_admin": bool(s.key.is_admin),
            "releases": releases.list_releases(s, name),
            "deployments": deployments.list_for_app(s, name, limit=RECENT_DEPLOYS),
            "config": None, "revealed": False, "logs": [], "logs_error": None}
    page["running"] = running_deployment(s, page["deployments"])
    if s.key.is_admin:
        values = config.show(s, name)
        page["config"] = values if reveal else {k: None for k in values}
        page["revealed"] = reveal
    elif reveal:
        raise PermissionDenied()
    try:
        page["logs"] = logs.recent(s, name, RECENT_LOG_LINES)["lines"]
    except GitdError as exc:  # no containers yet: said on the page
        page["logs_error"] = exc.message
    return page


def running_deployment(s: Session, recent: list[dict]) -> dict | None:
    """The newest deployment that has not ended, with its log so far."""
    running = next((d for d in recent if d["status"] not in FINISHED), None)
    if running is None:
        return None
    return {**running, "log": deployments.log_so_far(s, running["id"])["log"] or ""}

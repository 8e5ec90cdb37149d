"""Apps: create, list, show, destroy, and who may reach them."""

from __future__ import annotations

from gitd.core import certs, validate
from gitd.core.errors import GitdError, UsageError
from gitd.verbs import Session, cron, deployments, git, iso_time, maintenance, notify
from hooks import health, remote


def known_host(settings) -> str:
    """The name clients reach this server by, when gitd knows one."""
    return "" if settings.domain in ("", "localhost") else settings.domain


def git_url(settings, app: str) -> str:
    return f"ssh://git@{known_host(settings) or 'HOST'}:{settings.ssh_port}/{app}"


def create(s: Session, name: str, repo_url: str | None = None, branch: str | None = None,
           deploy_now: bool = False) -> dict:
    """A new app; with `repo_url` it follows that repository's `branch`
    (git:sync deploys it; `deploy_now`: a deployment of it starts at once).
    Checked before anything is made."""
    s.require_admin()
    if "--" in (name or ""):
        raise UsageError(f"invalid app name {name!r}: '--' is kept for preview apps (APP--BRANCH)")
    validate.plain_app_name(name)
    if branch is not None and repo_url is None:
        raise UsageError("a branch goes with a repository URL")
    branch = branch or "main"
    if repo_url is not None:
        remote.url_kind(repo_url)
        remote.check_ref(branch)
    # its default host <name>.<domain> must not be the API's
    validate.own_host(f"{name}.{s.settings.domain}", name, s.settings.domain,
                      s.settings.api_hostname)
    s.gitd.create_app(name)
    follows = deployment = None
    if repo_url is not None:
        follows = git.follow(s, name, repo_url, branch)
        if deploy_now:
            deployment = deployments.to_dict(git.sync_in_background(s, name))
    return {"name": name, "git_url": git_url(s.settings, name),
            "host_known": bool(known_host(s.settings)), "follows": follows,
            "deployment": deployment}


def list_apps(s: Session) -> list[dict]:
    """The apps the caller may see; a preview app says whose (`preview_of`)."""
    apps = s.store.list_apps()
    parents = {p.name: p.parent for p in s.store.previews()}
    if not s.key.is_admin:
        granted = set(s.store.grants_of_key(s.key.name))
        apps = [a for a in apps if a.name in granted or parents.get(a.name) in granted]
    return [{"name": a.name, "release": a.current_release, "preview_of": parents.get(a.name)}
            for a in apps]


def info(s: Session, name: str) -> dict:
    app = s.app(name)
    current = s.store.current_release(name)
    domains = s.store.domains(name)
    rows = s.gitd.scheduler.dynos(name)
    containers = [{"name": row["container"], "process": row["type"], "release": row["release"],
                   "state": row["state"], "health": row["health"]} for row in rows]
    return {
        "name": name,
        "created_at": iso_time(app.created_at),
        "release": current.version if current else None,
        "commit": current.commit if current else None,
        "image": current.image if current else None,
        "buildpack": current.buildpack if current else None,
        "domains": domains,
        "urls": [s.settings.host_url(h) for h in domains],
        "certificate_warnings": certs.warnings(s.settings, name, domains),
        "scale": app.scale or {"web": 1},
        "containers": containers,
        "state": health.app_state(rows, app.live_seq, bool(app.settings.get("stopped"))),
        "health_restarts": app.settings.get("health_restarts"),
        "git_url": git_url(s.settings, name),
        "granted_to": s.store.grants_of(name),
        "deploying": name in s.gitd.locks.busy(),
        "services": linked_services(s, name),
        "follows": follows_of(app),
        "notifications": notify.last_results(s.store, name),
        "maintenance": maintenance.state_of(app),
        "cron_failing": cron.failing(s.store, name),
    }


def follows_of(app) -> dict | None:
    """The repository the app follows, with no credential shown."""
    source = git.source_of(app)
    if not source.get("url"):
        return None
    return {"url": remote.display(source["url"]), "branch": source.get("branch", "main")}


def linked_services(s: Session, app: str) -> dict:
    """service -> its config var and last backup result."""
    linked = {}
    for service, env_var in s.store.links_of_app(app).items():
        svc = s.store.get_service(service)
        linked[service] = {"kind": svc.kind, "env_var": env_var,
                           "last_backup_ok": svc.last_backup_ok,
                           "last_backup_message": svc.last_backup_message}
    return linked


def destroy(s: Session, name: str, *, force: bool) -> dict:
    """Everything the app holds goes; the services linked to it stay (their
    data is not the app's to destroy): returned with who still links them."""
    s.require_admin()
    s.app(name)
    if not force:
        raise GitdError(f"this destroys {name} and everything it holds; add --force to confirm")
    linked = s.store.links_of_app(name)
    s.gitd.destroy_app(name, s.progress)
    git.forget(s.settings, name)
    return {"name": name, "services_left": {
        service: sorted(s.store.links_of_service(service)) for service in sorted(linked)}}


def grant(s: Session, app: str, key_name: str) -> dict:
    s.require_admin()
    s.app(app)
    key = s.store.get_key(key_name)
    s.store.grant(app, key.name)
    return {"app": app, "key": key.name, "key_is_admin": key.is_admin}


def revoke(s: Session, app: str, key_name: str) -> dict:
    s.require_admin()
    s.app(app)
    s.store.get_key(key_name)
    s.store.revoke(app, key_name)
    return {"app": app, "key": key_name}

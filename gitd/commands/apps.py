"""apps:create, apps:list, apps:info, apps:destroy."""

from __future__ import annotations

import time

from gitd import certs, validate
from gitd.commands import command, confirm_force, parser
from hooks import health


@command("apps:create", "apps:create NAME", "Create an app (and its git repository)")
def create(ctx, argv):
    p = parser("apps:create")
    p.add_argument("name")
    args = p.parse_args(argv)
    validate.app_name(args.name)
    ctx.gitd.create_app(args.name)
    ctx.out(f"-----> Created {args.name}")
    ctx.out(f"       git remote add paas {git_url(ctx.settings, args.name)}")
    ctx.out("       git push paas main")
    if not known_host(ctx.settings):
        ctx.out("       (HOST: this server's name or address; with `domain` set in gitd.toml "
                "gitd fills it in)")


def known_host(settings) -> str:
    """The name clients reach this server by, when gitd knows one."""
    return "" if settings.domain in ("", "localhost") else settings.domain


def git_url(settings, app: str) -> str:
    return f"ssh://git@{known_host(settings) or 'HOST'}:{settings.ssh_port}/{app}"


@command("apps:list", "apps:list [--json]", "List apps", admin=False)
def list_apps(ctx, argv):
    args = parser("apps:list", json_flag=True).parse_args(argv)
    apps = ctx.store.list_apps()
    if not ctx.key.is_admin:
        granted = set(ctx.store.grants_of_key(ctx.key.name))
        apps = [a for a in apps if a.name in granted]
    if args.json:
        ctx.json([{"name": a.name, "release": a.current_release} for a in apps])
        return
    if not apps:
        ctx.out("no apps yet: apps:create NAME")
        return
    # one write: each crosses to the SSH session's event loop and back
    ctx.out("\n".join(f"{a.name}" + (f"  v{a.current_release}" if a.current_release
                                      else "  (not deployed)") for a in apps))


def app_info(ctx, name: str) -> dict:
    app = ctx.store.get_app(name)
    current = ctx.store.current_release(name)
    domains = ctx.store.domains(name)
    rows = ctx.gitd.scheduler.dynos(name)
    containers = [{"name": row["container"], "process": row["type"], "release": row["release"],
                   "state": row["state"], "health": row["health"]} for row in rows]
    return {
        "name": name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(app.created_at)),
        "release": current.version if current else None,
        "commit": current.commit if current else None,
        "image": current.image if current else None,
        "buildpack": current.buildpack if current else None,
        "domains": domains,
        "urls": [ctx.settings.host_url(h) for h in domains],
        "certificate_warnings": certs.warnings(ctx.settings, name, domains),
        "scale": app.scale or {"web": 1},
        "containers": containers,
        "state": health.app_state(rows, app.live_seq, bool(app.settings.get("stopped"))),
        "health_restarts": app.settings.get("health_restarts"),
        "git_url": git_url(ctx.settings, name),
        "granted_to": ctx.store.grants_of(name),
        "deploying": name in ctx.gitd.locks.busy(),
        "services": linked_services(ctx, name),
    }


def linked_services(ctx, app: str) -> dict:
    """service -> its config var and last backup result, for apps:info."""
    linked = {}
    for service, env_var in ctx.store.links_of_app(app).items():
        svc = ctx.store.get_service(service)
        linked[service] = {"kind": svc.kind, "env_var": env_var,
                           "last_backup_ok": svc.last_backup_ok,
                           "last_backup_message": svc.last_backup_message}
    return linked


@command("apps:info", "apps:info NAME [--json]", "Show an app: release, URLs, containers",
         admin=False)
def info(ctx, argv):
    p = parser("apps:info", json_flag=True)
    p.add_argument("name")
    args = p.parse_args(argv)
    ctx.app(args.name)
    data = app_info(ctx, args.name)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {data['name']}")
    ctx.out(f"release:    {('v' + str(data['release'])) if data['release'] else 'none (push to deploy)'}")
    if data["commit"]:
        ctx.out(f"commit:     {data['commit']}")
        ctx.out(f"buildpack:  {data['buildpack']}")
        ctx.out(f"image:      {data['image']}")
    ctx.out(f"urls:       {' '.join(data['urls']) or '-'}")
    ctx.out(f"state:      {data['state']}")
    restarts = data["health_restarts"]
    if restarts:
        ctx.out(f"restarted:  {restarts['count']} time(s) for failing health checks "
                f"(last {restarts['container']} at {restarts['at']})")
    for warning in data["certificate_warnings"]:
        ctx.out(f" !     {warning}")
    ctx.out(f"deploying:  {'yes' if data['deploying'] else 'no'}")
    ctx.out(f"git:        {data['git_url']}")
    ctx.out(f"granted to: {' '.join(data['granted_to']) or '-'} (and admin keys)")
    for service, link in data["services"].items():
        backup = {True: "last backup ok", False: "LAST BACKUP FAILED", None: "no backup yet"}
        ctx.out(f"service:    {service} ({link['kind']}, {link['env_var']}; "
                f"{backup[link['last_backup_ok']]})")
        if link["last_backup_ok"] is False:
            ctx.err(f" !     the last backup of {service} failed: {link['last_backup_message']}")
    ctx.out("containers:")
    for c in data["containers"] or []:
        ctx.out(f"  {c['process']}  v{c['release']}  {c['state']}  {c['name']}")
    if not data["containers"]:
        ctx.out("  none")


@command("apps:destroy", "apps:destroy NAME --force",
         "Destroy an app: containers, images, routes, repository, releases, volumes")
def destroy(ctx, argv):
    p = parser("apps:destroy")
    p.add_argument("name")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    ctx.app(args.name)
    confirm_force(args, args.name)
    linked = ctx.store.links_of_app(args.name)
    ctx.gitd.destroy_app(args.name, ctx.out)
    ctx.out(f"-----> Destroyed {args.name}")
    for line in services_left_running(ctx.store, linked):
        ctx.out(line)


def services_left_running(store, linked: dict[str, str]) -> list[str]:
    """Services outlive the apps linked to them: their data is not the app's
    to destroy. Say which keep running, and how to remove one."""
    if not linked:
        return []
    lines = ["       Unlinked, still running with their data:"]
    for service in sorted(linked):
        others = sorted(store.links_of_service(service))
        still = f"; still linked to {', '.join(others)}" if others else ""
        lines.append(f"         {service}{still}")
    lines.append("       Remove one with: services:destroy NAME --force (backup first: "
                 "services:backup NAME > FILE)")
    return lines


def _app_and_key(name: str, argv: list[str]):
    p = parser(name)
    p.add_argument("app")
    p.add_argument("key")
    return p.parse_args(argv)


@command("apps:grant", "apps:grant APP KEYNAME", "Let a deployer key push to and read an app",
         help="""
The key may then git push to APP and run apps:info, releases, ps, logs and
domains on it; not config or run. Admin keys reach every app already.""")
def grant(ctx, argv):
    args = _app_and_key("apps:grant", argv)
    ctx.app(args.app)
    key = ctx.store.get_key(args.key)
    ctx.store.grant(args.app, key.name)
    note = " (an admin key: it reaches every app anyway)" if key.is_admin else ""
    ctx.out(f"-----> {key.name} may push to and read {args.app}{note}")


@command("apps:revoke", "apps:revoke APP KEYNAME", "Take a key's access to an app away")
def revoke(ctx, argv):
    args = _app_and_key("apps:revoke", argv)
    ctx.app(args.app)
    ctx.store.get_key(args.key)
    ctx.store.revoke(args.app, args.key)
    ctx.out(f"-----> {args.key} no longer reaches {args.app}")

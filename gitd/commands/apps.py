"""apps:create, apps:list, apps:info, apps:destroy, apps:grant, apps:revoke:
the SSH face of gitd.verbs.apps."""

from __future__ import annotations

from gitd.commands.base import command, parser
from gitd.core.errors import UsageError
from gitd.verbs import apps


@command("apps:create", "apps:create NAME [--repo URL [--branch BRANCH]]",
         "Create an app (and its git repository)", help="""
--repo: the app follows a repository elsewhere: git:sync NAME deploys its
branch (default main), and so does a push webhook (git:webhook NAME).""")
def create(ctx, argv):
    p = parser("apps:create")
    p.add_argument("name")
    p.add_argument("--repo")
    p.add_argument("--branch")
    args = p.parse_args(argv)
    if args.branch and not args.repo:
        raise UsageError("--branch goes with --repo")
    created = apps.create(ctx, args.name, repo_url=args.repo, branch=args.branch)
    ctx.out(f"-----> Created {created['name']}")
    ctx.out(f"       git remote add paas {created['git_url']}")
    if created["follows"]:
        ctx.out(f"       follows {created['follows']['url']} {created['follows']['branch']}: "
                f"git:sync {created['name']} deploys it")
    ctx.out("       git push paas main")
    if not created["host_known"]:
        ctx.out("       (HOST: this server's name or address; with `domain` set in gitd.toml "
                "gitd fills it in)")


@command("apps:list", "apps:list [--json]", "List apps", admin=False)
def list_apps(ctx, argv):
    args = parser("apps:list", json_flag=True).parse_args(argv)
    rows = apps.list_apps(ctx)
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out("no apps yet: apps:create NAME")
        return
    # one write: each crosses to the SSH session's event loop and back
    ctx.out("\n".join(f"{a['name']}" + (f"  v{a['release']}" if a["release"]
                                          else "  (not deployed)")
                       + (f"  (preview of {a['preview_of']})" if a.get("preview_of") else "")
                       for a in rows))


@command("apps:info", "apps:info NAME [--json]", "Show an app: release, URLs, containers",
         admin=False)
def info(ctx, argv):
    p = parser("apps:info", json_flag=True)
    p.add_argument("name")
    args = p.parse_args(argv)
    data = apps.info(ctx, args.name)
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
    if data["maintenance"]["on"]:
        ctx.out(f"maintenance: on since {data['maintenance']['since']} (maintenance:off APP)")
    restarts = data["health_restarts"]
    if restarts:
        ctx.out(f"restarted:  {restarts['count']} time(s) for failing health checks "
                f"(last {restarts['container']} at {restarts['at']})")
    for warning in data["certificate_warnings"]:
        ctx.out(f" !     {warning}")
    ctx.out(f"deploying:  {'yes' if data['deploying'] else 'no'}")
    ctx.out(f"git:        {data['git_url']}")
    if data["follows"]:
        ctx.out(f"follows:    {data['follows']['url']} {data['follows']['branch']}")
    ctx.out(f"granted to: {' '.join(data['granted_to']) or '-'} (and admin keys)")
    for service, link in data["services"].items():
        backup = {True: "last backup ok", False: "LAST BACKUP FAILED", None: "no backup yet"}
        ctx.out(f"service:    {service} ({link['kind']}, {link['env_var']}; "
                f"{backup[link['last_backup_ok']]})")
        if link["last_backup_ok"] is False:
            ctx.err(f" !     the last backup of {service} failed: {link['last_backup_message']}")
    for job in data["cron_failing"]:
        ctx.err(f" !     the last run of cron job {job} failed: cron:logs {data['name']} {job}")
    for sub in data["notifications"]:
        last = sub["last"]
        result = "no delivery yet" if last is None else \
            f"last {last['event']} at {last['at']}: {last['error'] or 'HTTP ' + str(last['status'])}"
        ctx.out(f"notify:     {sub['id']} {sub['url']} ({result})")
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
    destroyed = apps.destroy(ctx, args.name, force=args.force)
    ctx.out(f"-----> Destroyed {args.name}")
    for line in services_left_running(destroyed["services_left"]):
        ctx.out(line)


def services_left_running(left: dict[str, list[str]]) -> list[str]:
    """Services outlive the apps linked to them: say which keep running, and
    how to remove one."""
    if not left:
        return []
    lines = ["       Unlinked, still running with their data:"]
    for service, others in left.items():
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
    granted = apps.grant(ctx, args.app, args.key)
    note = " (an admin key: it reaches every app anyway)" if granted["key_is_admin"] else ""
    ctx.out(f"-----> {granted['key']} may push to and read {args.app}{note}")


@command("apps:revoke", "apps:revoke APP KEYNAME", "Take a key's access to an app away")
def revoke(ctx, argv):
    args = _app_and_key("apps:revoke", argv)
    apps.revoke(ctx, args.app, args.key)
    ctx.out(f"-----> {args.key} no longer reaches {args.app}")

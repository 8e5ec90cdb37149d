"""services:*: Postgres and Redis beside the apps, linked through config.

A service runs in its own container with its data on a named volume and its
own Docker network; linking it to an app puts its URL in the app's config
(a new release, like config:set) and puts the app's containers on that
network: only linked apps reach it. Backups stream over the SSH channel.
"""

from __future__ import annotations

import secrets
import time

from gitd import services as kinds
from gitd import validate
from gitd.commands import command, iso_time, parser, print_rows
from gitd.commands.config import apply_config
from gitd.commands.run import OneOff
from gitd.errors import GitdError, NotFound, UsageError
from gitd.services import cron
from gitd.services.base import container_name, network_name
from hooks.engine import LABEL_INSTANCE, LABEL_ROLE, LABEL_SERVICE

CHUNK = 256 * 1024
MAX_KEEP = 365
MAX_LOG_LINES = 10_000


def _service(ctx, name: str):
    validate.service_name(name)
    return ctx.store.get_service(name)


def _lock(ctx, name: str):
    """One backup, restore or change of a service at a time. The wait is
    reported on stderr: stdout may be carrying a dump."""
    return ctx.gitd.locks.hold(f"service:{name}", ctx.settings.lock_wait,
                               on_wait=lambda: ctx.err(f"-----> Waiting for work on {name} to finish"))


@command("services:create", "services:create postgres|redis NAME [--version V]",
         "Create a Postgres or Redis service", help="""
Starts the service's image (setting service_images; default postgres:16-alpine,
redis:7-alpine) with its data on a named volume and its own network, and
waits until it is healthy. Link it to an app with services:link NAME APP.""")
def create(ctx, argv):
    p = parser("services:create")
    p.add_argument("kind")
    p.add_argument("name")
    p.add_argument("--version")
    args = p.parse_args(argv)
    kind = kinds.kind(args.kind)
    validate.service_name(args.name)
    if args.version is not None:
        validate.service_version(args.version)
    if ctx.store.service_exists(args.name):
        raise GitdError(f"a service named {args.name!r} already exists")
    with _lock(ctx, args.name):
        svc = ctx.gitd.services.create(kind.name, args.name, args.version, ctx.out)
    ctx.out(f"-----> Created {kind.name} service {svc.name} ({svc.image})")
    ctx.out(f"       link it: services:link {svc.name} APP "
            f"(the app gets {kind.env_prefix}_URL)")


@command("services:list", "services:list [--json]", "List services")
def list_services(ctx, argv):
    args = parser("services:list", json_flag=True).parse_args(argv)
    rows = [{"name": s.name, "kind": s.kind, "version": s.version,
             "linked": sorted(ctx.store.links_of_service(s.name)),
             "last_backup_ok": s.last_backup_ok} for s in ctx.store.list_services()]
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out("no services yet: services:create postgres NAME")
        return
    table = [["NAME", "KIND", "VERSION", "LINKED"]]
    table += [[r["name"], r["kind"], r["version"], ",".join(r["linked"]) or "-"] for r in rows]
    print_rows(ctx, table)


def service_info(ctx, svc) -> dict:
    gitd = ctx.gitd
    kind = kinds.kind(svc.kind)
    container = gitd.services.container(svc, required=False)
    state, health, size, port = "missing", None, None, None
    if container is not None:
        state = container.status
        health = (container.attrs.get("State", {}).get("Health") or {}).get("Status")
        port = gitd.engine.host_port(container, kind.port)
        if state == "running":
            status, out = gitd.engine.exec(container, ["du", "-sk", kind.data_path])
            if status == 0 and out.split()[:1] and out.split()[0].isdigit():
                size = int(out.split()[0]) * 1024
    return {
        "name": svc.name, "kind": svc.kind, "version": svc.version, "image": svc.image,
        "created_at": iso_time(svc.created_at), "state": state, "health": health,
        "size_bytes": size, "volume": svc.volume,
        "network": network_name(ctx.settings.instance, svc.name),
        "host": container_name(ctx.settings.instance, svc.name), "port": kind.port,
        "exposed": f"127.0.0.1:{port}" if port else None,
        "linked": ctx.store.links_of_service(svc.name),
        "backup_schedule": svc.schedule, "backup_keep": svc.keep if svc.schedule else None,
        "last_backup": {"at": iso_time(svc.last_backup_at), "ok": svc.last_backup_ok,
                        "message": svc.last_backup_message} if svc.last_backup_at else None,
    }


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


@command("services:info", "services:info NAME [--json]",
         "Show a service: version, size, links, last backup")
def info(ctx, argv):
    p = parser("services:info", json_flag=True)
    p.add_argument("name")
    args = p.parse_args(argv)
    data = service_info(ctx, _service(ctx, args.name))
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {data['name']} ({data['kind']} {data['version']})")
    ctx.out(f"image:      {data['image']}")
    ctx.out(f"state:      {data['state']}" + (f" ({data['health']})" if data["health"] else ""))
    ctx.out(f"size:       {_size(data['size_bytes'])} (volume {data['volume']})")
    ctx.out(f"host:       {data['host']}:{data['port']} (network {data['network']})")
    ctx.out(f"exposed:    {data['exposed'] or 'no'}")
    links = ", ".join(f"{a} ({v})" for a, v in data["linked"].items())
    ctx.out(f"linked:     {links or '-'}")
    schedule = data["backup_schedule"]
    ctx.out(f"schedule:   {schedule + ' (keep ' + str(data['backup_keep']) + ')' if schedule else '-'}")
    last = data["last_backup"]
    if last is None:
        ctx.out("backup:     never")
    else:
        result = "ok" if last["ok"] else "FAILED"
        ctx.out(f"backup:     {last['at']} {result}: {last['message']}")
    if last and not last["ok"]:
        ctx.err(f" !     the last backup of {data['name']} failed: {last['message']}")


def _link_env_var(ctx, svc, app: str) -> str:
    kind = kinds.kind(svc.kind)
    taken = set(ctx.store.get_config(app)) | set(ctx.store.links_of_app(app).values())
    var = kind.env_var(svc.name, taken)
    if var in taken:
        raise GitdError(f"{app} already has {var} set: unset it first")
    return var


@command("services:link", "services:link NAME APP",
         "Give an app the service's URL (DATABASE_URL / REDIS_URL) and access", help="""
Puts the URL in the app's config (a new release, deployed like config:set)
and the app's containers on the service's network. A second service of the
same kind linked to one app gets DATABASE_<NAME>_URL (REDIS_<NAME>_URL).""")
def link(ctx, argv):
    p = parser("services:link")
    p.add_argument("name")
    p.add_argument("app")
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    ctx.app(args.app)
    if args.app in ctx.store.links_of_service(svc.name):
        raise GitdError(f"{svc.name} is already linked to {args.app}")
    url = ctx.gitd.services.url(svc)
    chosen = {}

    def change(old: dict) -> dict:
        var = _link_env_var(ctx, svc, args.app)
        chosen["var"] = var
        ctx.store.add_link(svc.name, args.app, var)
        return {**old, var: url}

    try:
        apply_config(ctx, args.app, change, f"Link {svc.name}")
    except BaseException:
        if "var" in chosen:
            ctx.store.remove_link(svc.name, args.app)
        raise
    ctx.out(f"-----> Linked {svc.name} to {args.app} as {chosen['var']}")


@command("services:unlink", "services:unlink NAME APP",
         "Take the service's URL and access away from an app")
def unlink(ctx, argv):
    p = parser("services:unlink")
    p.add_argument("name")
    p.add_argument("app")
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    ctx.app(args.app)
    links = ctx.store.links_of_service(svc.name)
    if args.app not in links:
        raise NotFound(f"{svc.name} is not linked to {args.app}")
    var = links[args.app]
    removed = {}

    def change(old: dict) -> dict:
        ctx.store.remove_link(svc.name, args.app)
        removed["done"] = True
        return {k: v for k, v in old.items() if k != var}

    try:
        apply_config(ctx, args.app, change, f"Unlink {svc.name}")
    except BaseException:
        if removed:
            ctx.store.add_link(svc.name, args.app, var)
        raise
    ctx.out(f"-----> Unlinked {svc.name} from {args.app} ({var} removed)")


@command("services:expose", "services:expose NAME [PORT] [--off]",
         "Publish a service's port on 127.0.0.1 (for an SSH tunnel)", help="""
PORT (1024-65535) on the host's 127.0.0.1, or a free one when left out;
--off unpublishes it. The service's container is recreated (a few seconds
without it); its data stays on its volume.""")
def expose(ctx, argv):
    p = parser("services:expose")
    p.add_argument("name")
    p.add_argument("port", nargs="?")
    p.add_argument("--off", action="store_true")
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    if args.off and args.port:
        raise UsageError("give a PORT or --off, not both")
    port = None if args.off else (validate.host_port(args.port) if args.port else 0)
    with _lock(ctx, svc.name):
        ctx.store.update_service(svc.name, exposed_port=port)
        try:
            ctx.gitd.services.recreate(ctx.store.get_service(svc.name), ctx.out)
        except BaseException:
            ctx.store.update_service(svc.name, exposed_port=svc.exposed_port)
            ctx.gitd.services.recreate(svc, ctx.out)
            raise
    data = service_info(ctx, ctx.store.get_service(svc.name))
    ctx.out(f"-----> {svc.name} " + (f"listens on {data['exposed']}" if data["exposed"]
                                      else "is reachable by linked apps only"))


@command("services:logs", "services:logs NAME [-n LINES] [-f]", "Show a service's log")
def logs(ctx, argv):
    p = parser("services:logs")
    p.add_argument("name")
    p.add_argument("-n", "--num", type=int, default=100, dest="lines")
    p.add_argument("-f", "--follow", action="store_true")
    args = p.parse_args(argv)
    if not 0 <= args.lines <= MAX_LOG_LINES:
        raise UsageError(f"-n must be from 0 to {MAX_LOG_LINES}")
    container = ctx.gitd.services.container(_service(ctx, args.name))
    if not args.follow:
        raw = container.logs(stdout=True, stderr=True, tail=args.lines) if args.lines else b""
        if raw:
            ctx.bridge.write(raw)
        return
    stream = container.logs(stdout=True, stderr=True, tail=args.lines, stream=True, follow=True)
    try:
        for chunk in stream:
            if ctx.bridge.closed():
                return
            ctx.bridge.write(chunk)
    finally:
        stream.close()


@command("services:connect", "services:connect NAME",
         "Open psql / redis-cli on a service (ssh -t for a terminal)", pty=True, help="""
The client runs in a one-off container on the service's network. Without
ssh -t, stdin is passed on: echo 'select 1' | ssh paas services:connect db""")
def connect(ctx, argv):
    p = parser("services:connect")
    p.add_argument("name")
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    kind = kinds.kind(svc.kind)
    host = container_name(ctx.settings.instance, svc.name)
    token = secrets.token_hex(3)
    spec = {
        "image": svc.image, "name": f"{host}-connect-{token}",
        "command": kind.client_argv(svc, host), "environment": kind.client_env(svc),
        "labels": {LABEL_INSTANCE: ctx.settings.instance, LABEL_SERVICE: svc.name,
                   LABEL_ROLE: "oneoff", "traefik.enable": "false"},
        "networks": [network_name(ctx.settings.instance, svc.name)],
        "init": True, "tty": ctx.has_pty, "stdin_open": True,
    }
    container = ctx.gitd.engine.create(spec)
    try:
        return OneOff(ctx, container, ctx.has_pty).run()
    finally:
        ctx.gitd.engine.remove(container)


@command("services:destroy", "services:destroy NAME --force",
         "Remove a service and its data (a final backup is kept)")
def destroy(ctx, argv):
    p = parser("services:destroy")
    p.add_argument("name")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    if not args.force:
        raise GitdError(f"this destroys {svc.name} and its data (a final backup is kept); "
                        "add --force to confirm")
    with _lock(ctx, svc.name):
        ctx.gitd.services.destroy(svc, ctx.out)
    ctx.out(f"-----> Destroyed {svc.name}")


@command("services:backup", "services:backup NAME > FILE",
         "Stream a dump of a service to stdout", help="""
Postgres: pg_dump's custom format (pg_restore reads it); Redis: an RDB file.
    ssh paas services:backup shopdb > shop.dump""")
def backup(ctx, argv):
    p = parser("services:backup")
    p.add_argument("name")
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    with _lock(ctx, svc.name):
        ctx.gitd.services.backup_stream(svc, ctx.bridge.write)


@command("services:restore", "services:restore NAME < FILE",
         "Load a dump from stdin, replacing the service's data atomically", help="""
The dump is loaded beside the live data (Postgres: a fresh database) and
switched to only once it loaded cleanly: a corrupt or failed dump leaves the
old data as it was. Open connections to the old database are closed.""")
def restore(ctx, argv):
    p = parser("services:restore")
    p.add_argument("name")
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    chunks = iter(lambda: ctx.bridge.recv(CHUNK), b"")
    with _lock(ctx, svc.name):
        ctx.gitd.services.restore(svc, chunks, lambda line: ctx.err(f"       {line}"))
    ctx.err(f"-----> Restored {svc.name}")


@command("services:backup-schedule", 'services:backup-schedule NAME "CRON" [--keep N] | --off',
         "Back a service up on a schedule, keeping the last N dumps", help=f"""
CRON: five fields (minute hour day month weekday, UTC), e.g. "0 3 * * *".
Dumps go to <data dir>/backups/NAME/, the newest N (default 7, at most
{MAX_KEEP}) are kept. A failed backup shows in services:info, in apps:info of
the linked apps and in `gitd doctor`.""")
def backup_schedule(ctx, argv):
    p = parser("services:backup-schedule")
    p.add_argument("name")
    # ssh joins its arguments with spaces: "0 3 * * *" may arrive as 5 words
    p.add_argument("cron", nargs="*")
    p.add_argument("--keep", type=int, default=7)
    p.add_argument("--off", action="store_true")
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    if args.off:
        ctx.store.update_service(svc.name, schedule=None)
        ctx.out(f"-----> {svc.name}: no scheduled backups (dumps kept)")
        return
    if not args.cron:
        raise UsageError('name a schedule, e.g. "0 3 * * *", or --off')
    if not 1 <= args.keep <= MAX_KEEP:
        raise UsageError(f"--keep must be from 1 to {MAX_KEEP}")
    schedule = cron.parse(" ".join(args.cron))
    ctx.store.update_service(svc.name, schedule=schedule.text, keep=args.keep,
                             schedule_since=time.time())
    nxt = schedule.next_after(time.time())
    ctx.out(f"-----> {svc.name}: backups at \"{schedule.text}\" (UTC), keeping {args.keep}; "
            f"next {iso_time(nxt)}")


@command("services:upgrade", "services:upgrade NAME --version V",
         "Move a service to another version: dump, recreate, restore", help="""
The new version starts on a fresh volume and the dump is restored into it;
only then does it replace the old container. If anything fails, the old
version keeps running with its data.""")
def upgrade(ctx, argv):
    p = parser("services:upgrade")
    p.add_argument("name")
    p.add_argument("--version", required=True)
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    validate.service_version(args.version)
    with _lock(ctx, svc.name):
        ctx.gitd.services.upgrade(svc, args.version, ctx.out)
    ctx.out(f"-----> {svc.name} runs {args.version}")

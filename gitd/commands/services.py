"""services:*: Postgres and Redis beside the apps, linked through config.

A service runs in its own container with its data on a named volume and its
own Docker network; linking it to an app puts its URL in the app's config
(a new release, like config:set) and puts the app's containers on that
network: only linked apps reach it. Backups stream over the SSH channel.

On a swarm (scheduler = "swarm") a service is a swarm service pinned to the
node holding its volume (--node, or this manager's), on an overlay network
(gitd/services/runtime.py).
"""

from __future__ import annotations

import secrets
import time

from gitd import services as kinds
from gitd.core import validate
from gitd.commands import command, iso_time, parser, print_rows
from gitd.commands.config import apply_config
from gitd.verbs.nodes import find_node, manager_client
from gitd.commands.run import OneOff
from gitd.core.errors import GitdError, NotFound, UsageError
from gitd.services import cron
from gitd.services.base import container_name, network_name, version_matches
from hooks import nodes as swarm_nodes
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


@command("services:create", "services:create postgres|redis NAME [--version V] [--node NODE]",
         "Create a Postgres or Redis service", help="""
Starts the service's image (setting service_images; default postgres:16-alpine,
redis:7-alpine) with its data on a named volume and its own network, and
waits until it is healthy. Link it to an app with services:link NAME APP.
On a swarm (scheduler = swarm) it stays on one node, where its volume is:
NODE (a hostname or id from `nodes`), or this manager's node without --node.""")
def create(ctx, argv):
    p = parser("services:create")
    p.add_argument("kind")
    p.add_argument("name")
    p.add_argument("--version")
    p.add_argument("--node")
    args = p.parse_args(argv)
    kind = kinds.kind(args.kind)
    validate.service_name(args.name)
    if args.version is not None:
        validate.service_version(args.version)
    if args.node is not None:
        validate.node_name(args.node)
        if ctx.settings.scheduler != "swarm":
            raise GitdError(NODE_WITHOUT_SWARM)
    if ctx.store.service_exists(args.name):
        raise GitdError(f"a service named {args.name!r} already exists")
    node = service_node(ctx, args.node) if ctx.settings.scheduler == "swarm" else None
    with _lock(ctx, args.name):
        svc = ctx.gitd.services.create(kind.name, args.name, args.version, ctx.out,
                                       node=node and node["name"])
    ctx.out(f"-----> Created {kind.name} service {svc.name} ({svc.image})"
            + (f" on node {svc.node}" if svc.node else ""))
    _say_version(ctx, svc)
    if node and args.node is None:
        ctx.out("       pinned to this manager's node (services:create ... --node NODE "
                "picks another)")
    ctx.out(f"       link it: services:link {svc.name} APP "
            f"(the app gets {kind.env_prefix}_URL)")


def _say_version(ctx, svc) -> None:
    """The version the new server says it is; a warning when it is not the one asked."""
    try:
        reported = ctx.gitd.services.server_version(svc, ctx.gitd.services.running(svc))
    except GitdError:  # on another node of the swarm: not asked
        return
    if reported is None:
        return
    ctx.out(f"       it runs {svc.kind} {reported}")
    if not version_matches(svc.version, reported):
        ctx.err(f" !     asked for {svc.kind} {svc.version}, but the image {svc.image} "
                f"runs {reported}")


NODE_WITHOUT_SWARM = ('--node places a service on a swarm node, and gitd runs with scheduler = '
                      '"docker" (one host): leave --node out')


def placement_node(nodes: list[dict], requested: str | None, manager_id: str) -> dict:
    """The node a new service stays on: `requested` (a hostname or id), else
    this manager's. It is pinned by hostname, so that must name one node, and
    the node must take tasks now."""
    if requested is None:
        mine = [n for n in nodes if n["id"] == manager_id]
        if not mine:
            raise GitdError("this manager is not among the swarm's nodes: name one with --node")
        node = mine[0]
    else:
        node = find_node(nodes, requested)
    if sum(n["name"] == node["name"] for n in nodes) > 1:
        raise GitdError(f"more than one node is named {node['name']}, and a service is pinned "
                        "to its node by hostname: give the nodes distinct hostnames")
    if node["status"] != "ready" or node["availability"] != "active":
        raise GitdError(f"node {node['name']} is {node['status']}/{node['availability']}: a "
                        "service can start only on a ready, active node (nodes lists them)")
    return node


def service_node(ctx, requested: str | None) -> dict:
    client = manager_client(ctx)
    manager_id = swarm_nodes.swarm_info(client).get("NodeID") or ""
    return placement_node(swarm_nodes.list_nodes(client), requested, manager_id)


@command("services:list", "services:list [--json]", "List services")
def list_services(ctx, argv):
    args = parser("services:list", json_flag=True).parse_args(argv)
    rows = [{"name": s.name, "kind": s.kind, "version": s.version,
             "linked": sorted(ctx.store.links_of_service(s.name)),
             "last_backup_ok": s.last_backup_ok, "node": s.node}
            for s in ctx.store.list_services()]
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out("no services yet: services:create postgres NAME")
        return
    swarm = ctx.settings.scheduler == "swarm"
    table = [["NAME", "KIND", "VERSION", "LINKED"] + (["NODE"] if swarm else [])]
    table += [[r["name"], r["kind"], r["version"], ",".join(r["linked"]) or "-"]
              + ([r["node"] or "-"] if swarm else []) for r in rows]
    print_rows(ctx, table)


def service_info(ctx, svc) -> dict:
    gitd = ctx.gitd
    kind = kinds.kind(svc.kind)
    status = gitd.services.status(svc)
    state, container, port, size = status["state"], status["container"], status["exposed"], None
    reported = None
    if container is not None and state == "running":  # on another node: no size
        code, out = gitd.engine.exec(container, ["du", "-sk", kind.data_path])
        if code == 0 and out.split()[:1] and out.split()[0].isdigit():
            size = int(out.split()[0]) * 1024
        reported = gitd.services.server_version(svc, container)
    return {
        "name": svc.name, "kind": svc.kind, "version": svc.version, "image": svc.image,
        "server_version": reported,
        "created_at": iso_time(svc.created_at), "state": state, "health": status["health"],
        "size_bytes": size, "volume": svc.volume,
        "node": status["node"], "pinned_node": svc.node,
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
    ctx.out(f"=== {data['name']} ({data['kind']} {data['server_version'] or data['version']})")
    ctx.out(f"image:      {data['image']}")
    ctx.out(f"version:    {_version_line(data)}")
    ctx.out(f"state:      {data['state']}" + (f" ({data['health']})" if data["health"] else ""))
    ctx.out(f"size:       {_size(data['size_bytes'])} (volume {data['volume']})")
    ctx.out(f"host:       {data['host']}:{data['port']} (network {data['network']})")
    if ctx.settings.scheduler == "swarm":
        ctx.out(f"node:       {_node_line(ctx, data)}")
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


def _version_line(data: dict) -> str:
    """What the server says it is, beside the version asked when they differ."""
    asked, reported = data["version"], data["server_version"]
    if reported is None:
        return f"{asked} (as asked: the server cannot be asked now)"
    if version_matches(asked, reported):
        return reported
    return f"{reported} (asked for {asked}: the image runs {reported})"


def _node_line(ctx, data: dict) -> str:
    pinned = data["pinned_node"] or "-"
    line = pinned + (" (this manager)" if pinned == ctx.gitd.scheduler.node_name else "")
    if data["node"] and data["node"] != data["pinned_node"]:
        line += f"; its task is on {data['node']}"
    return line + ": it runs only there, with its volume"


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
    stream = ctx.gitd.services.logs(_service(ctx, args.name), args.lines, args.follow)
    try:
        for chunk in stream:
            if ctx.bridge.closed():
                return
            ctx.bridge.write(chunk)
    finally:
        if hasattr(stream, "close"):
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
only then, once its server says it is the version asked, does it replace the
old container. If anything fails, the old version keeps running with its
data. An image setting without {version} (service_images) cannot change
version: the upgrade is refused.""")
def upgrade(ctx, argv):
    p = parser("services:upgrade")
    p.add_argument("name")
    p.add_argument("--version", required=True)
    args = p.parse_args(argv)
    svc = _service(ctx, args.name)
    validate.service_version(args.version)
    with _lock(ctx, svc.name):
        reported = ctx.gitd.services.upgrade(svc, args.version, ctx.out)
    ctx.out(f"-----> {svc.name} runs {svc.kind} {reported} (the server's own word)")

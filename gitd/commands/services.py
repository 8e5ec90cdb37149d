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

from contextlib import closing

from gitd.commands.base import command, parser, print_rows
from gitd.commands.config import say_applied
from gitd.commands.run import OneOff
from gitd.core.errors import UsageError
from gitd.services.base import version_matches
from gitd.verbs import services as verbs
from gitd.verbs.services import MAX_KEEP

CHUNK = 256 * 1024


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
    made = verbs.create(ctx, args.kind, args.name, args.version, args.node)
    ctx.out(f"-----> Created {made['kind']} service {made['name']} ({made['image']})"
            + (f" on node {made['node']}" if made["node"] else ""))
    _say_version(ctx, made)
    if made["node_defaulted"]:
        ctx.out("       pinned to this manager's node (services:create ... --node NODE "
                "picks another)")
    ctx.out(f"       link it: services:link {made['name']} APP "
            f"(the app gets {made['env_var']})")


def _say_version(ctx, made: dict) -> None:
    """The version the new server says it is; a warning when it is not the one asked."""
    reported = made["server_version"]
    if reported is None:
        return
    ctx.out(f"       it runs {made['kind']} {reported}")
    if not version_matches(made["version"], reported):
        ctx.err(f" !     asked for {made['kind']} {made['version']}, but the image {made['image']} "
                f"runs {reported}")


@command("services:list", "services:list [--json]", "List services")
def list_services(ctx, argv):
    args = parser("services:list", json_flag=True).parse_args(argv)
    rows = verbs.list_services(ctx)
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out("no services yet: services:create postgres NAME")
        return
    swarm = ctx.gitd.scheduler_class.has_nodes
    table = [["NAME", "KIND", "VERSION", "LINKED"] + (["NODE"] if swarm else [])]
    table += [[r["name"], r["kind"], r["version"], ",".join(r["linked"]) or "-"]
              + ([r["node"] or "-"] if swarm else []) for r in rows]
    print_rows(ctx, table)


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
    data = verbs.info(ctx, args.name)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {data['name']} ({data['kind']} {data['server_version'] or data['version']})")
    ctx.out(f"image:      {data['image']}")
    ctx.out(f"version:    {_version_line(data)}")
    ctx.out(f"state:      {data['state']}" + (f" ({data['health']})" if data["health"] else ""))
    ctx.out(f"size:       {_size(data['size_bytes'])} (volume {data['volume']})")
    ctx.out(f"host:       {data['host']}:{data['port']} (network {data['network']})")
    if ctx.gitd.scheduler_class.has_nodes:
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
    done = verbs.link(ctx, args.name, args.app)
    say_applied(ctx, done["config"])
    ctx.out(f"-----> Linked {done['service']} to {done['app']} as {done['env_var']}")


@command("services:unlink", "services:unlink NAME APP",
         "Take the service's URL and access away from an app")
def unlink(ctx, argv):
    p = parser("services:unlink")
    p.add_argument("name")
    p.add_argument("app")
    args = p.parse_args(argv)
    done = verbs.unlink(ctx, args.name, args.app)
    say_applied(ctx, done["config"])
    ctx.out(f"-----> Unlinked {done['service']} from {done['app']} ({done['env_var']} removed)")


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
    if args.off and args.port:
        raise UsageError("give a PORT or --off, not both")
    done = verbs.expose(ctx, args.name, None if args.off else (args.port or 0))
    ctx.out(f"-----> {done['name']} " + (f"listens on {done['exposed']}" if done["exposed"]
                                         else "is reachable by linked apps only"))


@command("services:logs", "services:logs NAME [-n LINES] [-f]", "Show a service's log")
def logs(ctx, argv):
    p = parser("services:logs")
    p.add_argument("name")
    p.add_argument("-n", "--num", type=int, default=100, dest="lines")
    p.add_argument("-f", "--follow", action="store_true")
    args = p.parse_args(argv)
    stream = verbs.logs(ctx, args.name, args.lines, args.follow)
    with closing(stream):
        for chunk in stream:
            if ctx.bridge.closed():
                return
            ctx.bridge.write(chunk)


@command("services:connect", "services:connect NAME",
         "Open psql / redis-cli on a service (ssh -t for a terminal)", pty=True, help="""
The client runs in a one-off container on the service's network. Without
ssh -t, stdin is passed on: echo 'select 1' | ssh paas services:connect db""")
def connect(ctx, argv):
    p = parser("services:connect")
    p.add_argument("name")
    args = p.parse_args(argv)
    with verbs.connect(ctx, args.name, ctx.has_pty) as container:
        return OneOff(ctx, container, ctx.has_pty).run()


@command("services:destroy", "services:destroy NAME --force",
         "Remove a service and its data (a final backup is kept)")
def destroy(ctx, argv):
    p = parser("services:destroy")
    p.add_argument("name")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    done = verbs.destroy(ctx, args.name, force=args.force)
    ctx.out(f"-----> Destroyed {done['name']}")


@command("services:backup", "services:backup NAME > FILE",
         "Stream a dump of a service to stdout", help="""
Postgres: pg_dump's custom format (pg_restore reads it); Redis: an RDB file.
    ssh paas services:backup shopdb > shop.dump""")
def backup(ctx, argv):
    p = parser("services:backup")
    p.add_argument("name")
    args = p.parse_args(argv)
    # stdout carries the dump: anything else goes to stderr
    verbs.backup(ctx, args.name, lambda data: ctx.bridge.write(data), notify=ctx.err)


@command("services:restore", "services:restore NAME < FILE",
         "Load a dump from stdin, replacing the service's data atomically", help="""
The dump is loaded beside the live data (Postgres: a fresh database) and
switched to only once it loaded cleanly: a corrupt or failed dump leaves the
old data as it was. Open connections to the old database are closed.""")
def restore(ctx, argv):
    p = parser("services:restore")
    p.add_argument("name")
    args = p.parse_args(argv)
    chunks = iter(lambda: ctx.bridge.recv(CHUNK), b"")
    done = verbs.restore(ctx, args.name, chunks, progress=lambda line: ctx.err(f"       {line}"),
                         notify=ctx.err)
    ctx.err(f"-----> Restored {done['name']}")


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
    done = verbs.backup_schedule(ctx, args.name, None if args.off else " ".join(args.cron),
                                 args.keep)
    if done["schedule"] is None:
        ctx.out(f"-----> {done['name']}: no scheduled backups (dumps kept)")
        return
    ctx.out(f"-----> {done['name']}: backups at \"{done['schedule']}\" (UTC), keeping "
            f"{done['keep']}; next {done['next']}")


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
    done = verbs.upgrade(ctx, args.name, args.version)
    ctx.out(f"-----> {done['name']} runs {done['kind']} {done['server_version']} "
            "(the server's own word)")
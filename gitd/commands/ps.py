"""ps, ps:scale, ps:restart, ps:stop, ps:start: the SSH face of gitd.verbs.ps."""

from __future__ import annotations

from gitd.commands.base import app_parser, command, duration, print_rows
from gitd.core.errors import UsageError
from gitd.verbs import ps as verbs
from gitd.verbs.ps import MAX_SCALE, formation_text


def scale_pairs(pairs: list[str]) -> dict[str, str]:
    """`web=2 worker=1` -> {"web": "2", "worker": "1"}; the verb checks them."""
    changes: dict[str, str] = {}
    for pair in pairs:
        name, sep, count = pair.partition("=")
        if not sep:
            raise UsageError(f"expected TYPE=COUNT, got {pair!r}")
        changes[name] = count
    return changes


def _note(info: dict) -> str:
    """`(retiring, 12 restarts, last exit 3)`: what is odd about a row."""
    words = [info["role"]] if info["role"] != "service" else []
    if info.get("phase") in ("retiring", "deploying"):
        words.append(info["phase"])
    if info.get("restarts"):
        words.append(f"{info['restarts']} restart{'s' if info['restarts'] != 1 else ''}")
    if info.get("exit_code") is not None:
        words.append(f"last exit {info['exit_code']}")
    return f"({', '.join(words)})" if words else ""


def _row(info: dict) -> list[str]:
    state = info["state"] + (f" ({info['health']})" if info["health"] else "")
    since = f"up {duration(info['uptime'])}" if info["uptime"] is not None else ""
    note = _note(info)
    if "node" in info:  # on the swarm: where it runs
        return [info["name"], state, f"v{info['release']}", info["node"] or "-", since, note]
    return [info["name"], state, f"v{info['release']}", since, note]


# commands

@command("ps", "ps APP [--json]", "List an app's containers: type, state, release, uptime",
         admin=False, help="""
Shows every container gitd runs for the app: the live ones, old ones still
draining during a deploy (marked `retiring`; a deploy's new ones not live yet
are marked `deploying`), and one-off `run` containers. A process Docker
restarted shows how many times, and the exit status of its last run that
ended (`3 restarts, last exit 1`). On the swarm: a row per replica slot of
each service (its current task), with the node it runs on.""")
def ps(ctx, argv):
    args = app_parser("ps", json_flag=True).parse_args(argv)
    data = verbs.ps(ctx, args.app)
    if args.json:
        ctx.json(data)
        return
    head = f"v{data['release']}" if data["release"] else "not deployed"
    ctx.out(f"=== {args.app}  {head}  {formation_text(data['formation'])}"
            + ("  (stopped: ps:start to run it again)" if data["stopped"] else ""))
    print_rows(ctx, [_row(c) for c in data["containers"]])
    if not data["containers"]:
        ctx.out("no containers")


@command("ps:scale", "ps:scale APP [TYPE=COUNT ...] [--json]",
         "Show or set how many containers of each process type run", help=f"""
Types are `web` and those in the current release's Procfile (not `release`);
counts go from 0 to {MAX_SCALE}. web=0 takes the app offline. Setting a count
redeploys the current release with the new formation (zero downtime).
Without TYPE=COUNT, prints the formation.""")
def scale(ctx, argv):
    p = app_parser("ps:scale", json_flag=True)
    p.add_argument("pairs", nargs="*", metavar="TYPE=COUNT")
    args = p.parse_args(argv)
    if not args.pairs:
        counts = verbs.show_formation(ctx, args.app)
        if args.json:
            ctx.json(counts)
        else:
            ctx.out(formation_text(counts))
        return
    done = verbs.scale(ctx, args.app, scale_pairs(args.pairs))
    if not done["deployed"]:
        ctx.out(f"-----> Scale of {args.app}: {formation_text(done['changes'])} "
                "(from the first deploy)")


@command("ps:restart", "ps:restart APP", "Replace an app's containers with new ones", help="""
Zero downtime: new containers start beside the old and take over once
healthy. Config stored with --no-restart is applied (as a new release).""")
def restart(ctx, argv):
    args = app_parser("ps:restart").parse_args(argv)
    verbs.restart(ctx, args.app)


@command("ps:stop", "ps:stop APP", "Stop an app's containers (kept, for ps:start)", help="""
Sends SIGTERM (SIGKILL after the stop timeout) to every container of the
live release. They stay stopped until ps:start, ps:restart or a deploy.""")
def stop(ctx, argv):
    args = app_parser("ps:stop").parse_args(argv)
    stopped = verbs.stop(ctx, args.app)
    ctx.out(f"-----> Stopped {args.app}: {stopped['stopped']} container(s)")


@command("ps:start", "ps:start APP", "Start an app's stopped containers again", help="""
Starts the stopped containers of the live release and returns once they pass
their health check and Traefik routes them; when there are none (they were
removed), deploys the current release afresh.""")
def start(ctx, argv):
    args = app_parser("ps:start").parse_args(argv)
    verbs.start(ctx, args.app)

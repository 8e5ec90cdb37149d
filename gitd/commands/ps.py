"""ps, ps:scale, ps:restart, ps:stop, ps:start: an app's processes.

Process types come from the Procfile of the current release: `web` (always
there; the image's own command when the Procfile does not name it) is routed,
the others are not, and `release` runs once per release before the swap.
"""

from __future__ import annotations

from gitd.core import validate
from gitd.commands import app_parser, command, duration, parse_app, print_rows
from gitd.core.errors import GitdError, UsageError
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


def parse_scale(pairs: list[str], release) -> dict[str, int]:
    """`web=2 worker=1` -> {"web": 2, "worker": 1}, checked against the release."""
    known = process_types(release)
    changes: dict[str, int] = {}
    for pair in pairs:
        name, sep, count = pair.partition("=")
        if not sep:
            raise UsageError(f"expected TYPE=COUNT, got {pair!r}")
        if scale_name(name) in NOT_SCALABLE:
            raise UsageError("`release` runs once per release; it cannot be scaled")
        if name not in known:
            where = f"the Procfile of v{release.version}" if release else "an app not deployed yet"
            raise UsageError(f"no process type {name!r} in {where} (known: {', '.join(known)})")
        changes[name] = validate.whole_number(count, f"the count for {name}", 0, MAX_SCALE)
    return changes


def formation_text(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


# containers (or swarm tasks): rows from the scheduler (hooks.dynos)

dyno = dynos.dyno


def _order(info: dict):
    kind, _, index = info["name"].partition(".")
    return (info["role"] != "service", kind != "web", kind, int(index) if index.isdigit() else 0)


def app_containers(ctx, app: str) -> list[dict]:
    """The app's rows, each with its phase (hooks.dynos.phase)."""
    live_seq = ctx.store.get_app(app).live_seq
    rows = sorted(ctx.gitd.scheduler.dynos(app), key=_order)
    for info in rows:
        info["phase"] = dynos.phase(info, live_seq)
    return rows


def live_services(ctx, app: str) -> list:
    """The service units of the app's live deploy, running or not: its
    containers, or its swarm services."""
    seq = ctx.store.get_app(app).live_seq
    if seq is None:
        return []
    return ctx.gitd.scheduler.units(app, **{LABEL_SEQ: str(seq), LABEL_ROLE: "service"})


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
    p = app_parser("ps", json_flag=True)
    args = p.parse_args(argv)
    app = ctx.app(args.app)
    release = ctx.store.current_release(args.app)
    counts = formation(app.scale, release)
    containers = app_containers(ctx, args.app)
    stopped = bool(app.settings.get("stopped"))
    if args.json:
        ctx.json({"app": args.app, "release": app.current_release, "formation": counts,
                  "stopped": stopped, "containers": containers})
        return
    head = f"v{release.version}" if release else "not deployed"
    ctx.out(f"=== {args.app}  {head}  {formation_text(counts)}"
            + ("  (stopped: ps:start to run it again)" if stopped else ""))
    print_rows(ctx, [_row(c) for c in containers])
    if not containers:
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
    app = ctx.app(args.app)
    if not args.pairs:
        counts = formation(app.scale, ctx.store.current_release(args.app))
        if args.json:
            ctx.json(counts)
        else:
            ctx.out(formation_text(counts))
        return
    changes = parse_scale(args.pairs, ctx.store.current_release(args.app))
    with ctx.lock(args.app):
        old = ctx.store.get_app(args.app).scale
        ctx.store.set_scale(args.app, {**old, **changes})
        if ctx.store.current_release(args.app) is None:
            ctx.out(f"-----> Scale of {args.app}: {formation_text(changes)} (from the first deploy)")
            return
        try:
            ctx.gitd.pipeline.redeploy(args.app, ctx.progress_sink(),
                                       f"Scaling to {formation_text(changes)}:")
        except Exception as exc:  # any failure puts the old state back
            ctx.store.set_scale(args.app, old)
            if not isinstance(exc, GitdError):
                raise
            raise GitdError(f"{exc}\nscale of {args.app} left as it was") from exc


@command("ps:restart", "ps:restart APP", "Replace an app's containers with new ones", help="""
Zero downtime: new containers start beside the old and take over once
healthy. Config stored with --no-restart is applied (as a new release).""")
def restart(ctx, argv):
    p = app_parser("ps:restart")
    args = parse_app(ctx, p, argv)
    with ctx.lock(args.app):
        current = ctx.store.require_current_release(args.app)
        pending = ctx.store.get_config(args.app)
        if pending != current.config:
            ctx.gitd.pipeline.release(args.app, current, pending, kind="config",
                                      description="Apply config set with --no-restart",
                                      by=ctx.key.name, sink=ctx.progress_sink())
            return
        ctx.gitd.pipeline.redeploy(args.app, ctx.progress_sink(), "Restarting")


@command("ps:stop", "ps:stop APP", "Stop an app's containers (kept, for ps:start)", help="""
Sends SIGTERM (SIGKILL after the stop timeout) to every container of the
live release. They stay stopped until ps:start, ps:restart or a deploy.""")
def stop(ctx, argv):
    p = app_parser("ps:stop")
    args = p.parse_args(argv)
    app = ctx.app(args.app)
    timeout = int(app.settings.get("stop_timeout", ctx.settings.stop_timeout))
    with ctx.lock(args.app):
        units = live_services(ctx, args.app)
        ctx.store.update_app_settings(args.app, stopped=True)
        stopped = ctx.gitd.scheduler.stop_units(units, timeout)
        ctx.out(f"-----> Stopped {args.app}: {stopped} container(s)")


@command("ps:start", "ps:start APP", "Start an app's stopped containers again", help="""
Starts the stopped containers of the live release and returns once they pass
their health check and Traefik routes them; when there are none (they were
removed), deploys the current release afresh.""")
def start(ctx, argv):
    p = app_parser("ps:start")
    args = parse_app(ctx, p, argv)
    with ctx.lock(args.app):
        ctx.store.require_current_release(args.app)
        units = live_services(ctx, args.app)
        if not units:
            ctx.gitd.pipeline.redeploy(args.app, ctx.progress_sink(), "Starting")
            return
        started = ctx.gitd.scheduler.start_units(units)
        ctx.store.update_app_settings(args.app, stopped=None)
        ctx.out(f"-----> Started {args.app}: {started} container(s)")
        progress = Progress(ctx.progress_sink(), args.app)
        ctx.gitd.pipeline.serve_started(args.app, units, progress)

"""services:*: Postgres and Redis beside the apps, linked through config.

A service runs in its own container with its data on a named volume and its
own Docker network; linking it to an app puts its URL in the app's config
(a new release, like config:set) and puts the app's containers on that
network: only linked apps reach it. Backups stream to the caller.

On a swarm (scheduler = "swarm") a service is a swarm service pinned to the
node holding its volume (a node named, or this manager's), on an overlay
network (gitd/services/runtime.py).
"""

from __future__ import annotations

import secrets
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from gitd import services as kinds
from gitd.core import validate
from gitd.core import cron
from gitd.core.errors import Conflict, GitdError, NotFound, UsageError
from gitd.services.base import container_name, network_name
from gitd.verbs import Session, config, iso_time
from gitd.verbs.nodes import find_node, manager_client
from hooks import nodes as swarm_nodes
from hooks.specs import service_client_spec

MAX_KEEP = 365
MAX_LOG_LINES = 10_000
NODE_WITHOUT_SWARM = ('--node places a service on a swarm node, and gitd runs with scheduler = '
                      '"docker" (one host): leave --node out')


def service(s: Session, name: str):
    """An admin's view of a service, by a validated name."""
    s.require_admin()
    validate.service_name(name)
    return s.store.get_service(name)


def lock(s: Session, name: str, notify: Callable[[str], None] | None = None):
    """One backup, restore or change of a service at a time; the wait is
    reported through `notify` (a dump may be on the progress channel)."""
    say = notify or s.progress
    return s.gitd.locks.hold(f"service:{name}", s.settings.lock_wait,
                             on_wait=lambda: say(f"-----> Waiting for work on {name} to finish"))


# placement on a swarm

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


def service_node(s: Session, requested: str | None) -> dict:
    client = manager_client(s)
    manager_id = swarm_nodes.swarm_info(client).get("NodeID") or ""
    return placement_node(swarm_nodes.list_nodes(client), requested, manager_id)


# verbs

def create(s: Session, kind: str, name: str, version: str | None = None,
           node: str | None = None) -> dict:
    """Start a service and wait until it is healthy; on a swarm pinned to
    `node` (a hostname or id) or to this manager's node."""
    s.require_admin()
    kind = kinds.kind(kind)
    validate.service_name(name)
    if version is not None:
        validate.service_version(version)
    if node is not None:
        validate.node_name(node)
        if not s.gitd.scheduler_class.has_nodes:
            raise Conflict(NODE_WITHOUT_SWARM)
    if s.store.service_exists(name):
        raise Conflict(f"a service named {name!r} already exists")
    placed = service_node(s, node) if s.gitd.scheduler_class.has_nodes else None
    with lock(s, name):
        svc = s.gitd.services.create(kind.name, name, version, s.progress,
                                     node=placed and placed["name"])
    return {"name": svc.name, "kind": kind.name, "image": svc.image, "version": svc.version,
            "server_version": _reported_version(s, svc), "node": svc.node,
            "node_defaulted": bool(placed) and node is None,
            "env_var": f"{kind.env_prefix}_URL"}


def _reported_version(s: Session, svc) -> str | None:
    """The version the server says it is (None when it cannot be asked)."""
    try:
        return s.gitd.services.server_version(svc, s.gitd.services.running(svc))
    except GitdError:  # on another node of the swarm: not asked
        return None


def list_services(s: Session) -> list[dict]:
    s.require_admin()
    return [{"name": svc.name, "kind": svc.kind, "version": svc.version,
             "linked": sorted(s.store.links_of_service(svc.name)),
             "last_backup_ok": svc.last_backup_ok, "node": svc.node}
            for svc in s.store.list_services()]


def info(s: Session, name: str) -> dict:
    return service_info(s, service(s, name))


def service_info(s: Session, svc) -> dict:
    gitd = s.gitd
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
        "network": network_name(s.settings.instance, svc.name),
        "host": container_name(s.settings.instance, svc.name), "port": kind.port,
        "exposed": f"127.0.0.1:{port}" if port else None,
        "linked": s.store.links_of_service(svc.name),
        "backup_schedule": svc.schedule, "backup_keep": svc.keep if svc.schedule else None,
        "last_backup": {"at": iso_time(svc.last_backup_at), "ok": svc.last_backup_ok,
                        "message": svc.last_backup_message} if svc.last_backup_at else None,
    }


def link_env_var(s: Session, svc, app: str) -> str:
    """The config var an app gets for `svc`: refused when the app has it set."""
    kind = kinds.kind(svc.kind)
    taken = set(s.store.get_config(app)) | set(s.store.links_of_app(app).values())
    var = kind.env_var(svc.name, taken)
    if var in taken:
        raise GitdError(f"{app} already has {var} set: unset it first")
    return var


def link(s: Session, name: str, app: str) -> dict:
    """Put the service's URL in the app's config (a new release, deployed
    like config:set) and the app's containers on its network. `config`: what
    the config change did (gitd.verbs.config.apply_config)."""
    svc = service(s, name)
    s.app(app)
    if app in s.store.links_of_service(svc.name):
        raise Conflict(f"{svc.name} is already linked to {app}")
    url = s.gitd.services.url(svc)
    chosen = {}

    def change(old: dict) -> dict:
        var = link_env_var(s, svc, app)
        chosen["var"] = var
        s.store.add_link(svc.name, app, var)
        return {**old, var: url}

    try:
        applied = config.apply_config(s, app, change, f"Link {svc.name}")
    except BaseException:
        if "var" in chosen:
            s.store.remove_link(svc.name, app)
        raise
    return {"service": svc.name, "app": app, "env_var": chosen["var"], "config": applied}


def unlink(s: Session, name: str, app: str) -> dict:
    """Take the service's URL (its config var: a new release) and network
    away from the app."""
    svc = service(s, name)
    s.app(app)
    links = s.store.links_of_service(svc.name)
    if app not in links:
        raise NotFound(f"{svc.name} is not linked to {app}")
    var = links[app]
    removed = {}

    def change(old: dict) -> dict:
        s.store.remove_link(svc.name, app)
        removed["done"] = True
        return {k: v for k, v in old.items() if k != var}

    try:
        applied = config.apply_config(s, app, change, f"Unlink {svc.name}")
    except BaseException:
        if removed:
            s.store.add_link(svc.name, app, var)
        raise
    return {"service": svc.name, "app": app, "env_var": var, "config": applied}


def expose(s: Session, name: str, port: int | str | None) -> dict:
    """Publish the service's port on the host's 127.0.0.1: `port` (1024-65535),
    0 for a free one, None to unpublish. Its container is recreated."""
    svc = service(s, name)
    if port is not None and not (type(port) is int and port == 0):
        port = validate.host_port(port)
    with lock(s, svc.name):
        s.store.update_service(svc.name, exposed_port=port)
        try:
            s.gitd.services.recreate(s.store.get_service(svc.name), s.progress)
        except BaseException:
            s.store.update_service(svc.name, exposed_port=svc.exposed_port)
            s.gitd.services.recreate(svc, s.progress)
            raise
    return {"name": svc.name, "exposed": service_info(s, s.store.get_service(svc.name))["exposed"]}


def logs(s: Session, name: str, lines: int = 100, follow: bool = False) -> Iterator[bytes]:
    """The service's log as chunks of bytes; with `follow`, until closed."""
    if isinstance(lines, bool) or not isinstance(lines, int) or not 0 <= lines <= MAX_LOG_LINES:
        raise UsageError(f"-n must be from 0 to {MAX_LOG_LINES}")
    svc = service(s, name)
    stream = s.gitd.services.logs(svc, lines, follow)
    return stream if hasattr(stream, "close") else (chunk for chunk in stream)


@contextmanager
def connect(s: Session, name: str, tty: bool = False) -> Iterator[object]:
    """A one-off container running the service's client (psql, redis-cli) on
    its network, created and not started; removed on leaving the block."""
    svc = service(s, name)
    spec = service_client_spec(s.settings, kinds.kind(svc.kind), svc, secrets.token_hex(3), tty)
    container = s.gitd.engine.create(spec)
    try:
        yield container
    finally:
        s.gitd.engine.remove(container)


def destroy(s: Session, name: str, *, force: bool) -> dict:
    svc = service(s, name)
    if not force:
        raise GitdError(f"this destroys {svc.name} and its data (a final backup is kept); "
                        "add --force to confirm")
    with lock(s, svc.name):
        s.gitd.services.destroy(svc, s.progress)
    return {"name": svc.name}


def backup(s: Session, name: str, write: Callable[[bytes], None],
           notify: Callable[[str], None] | None = None) -> dict:
    """Stream a dump to `write` (Postgres: pg_dump's custom format; Redis: an
    RDB file); `notify` gets what would otherwise go between the dump's bytes."""
    svc = service(s, name)
    with lock(s, svc.name, notify):
        s.gitd.services.backup_stream(svc, write)
    return {"name": svc.name}


def restore(s: Session, name: str, chunks: Iterable[bytes],
            progress: Callable[[str], None] | None = None,
            notify: Callable[[str], None] | None = None) -> dict:
    """Load a dump (read by the front-end, in chunks) beside the live data and
    switch to it only once it loaded cleanly."""
    svc = service(s, name)
    with lock(s, svc.name, notify or progress):
        s.gitd.services.restore(svc, chunks, progress or s.progress)
    return {"name": svc.name}


def backup_schedule(s: Session, name: str, schedule: str | None, keep: int = 7) -> dict:
    """Back up on a cron schedule (UTC) keeping the newest `keep` dumps;
    schedule None: no scheduled backups (the dumps are kept)."""
    svc = service(s, name)
    if schedule is None:
        s.store.update_service(svc.name, schedule=None)
        return {"name": svc.name, "schedule": None, "keep": None, "next": None}
    if not schedule.strip():
        raise UsageError('name a schedule, e.g. "0 3 * * *", or --off')
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
        raise UsageError(f"--keep must be from 1 to {MAX_KEEP}")
    parsed = cron.parse(schedule)
    s.store.update_service(svc.name, schedule=parsed.text, keep=keep, schedule_since=time.time())
    return {"name": svc.name, "schedule": parsed.text, "keep": keep,
            "next": iso_time(parsed.next_after(time.time()))}


def upgrade(s: Session, name: str, version: str) -> dict:
    """Dump, start `version` on a fresh volume, restore, then switch; any
    failure leaves the old version running with its data."""
    svc = service(s, name)
    validate.service_version(version)
    with lock(s, svc.name):
        reported = s.gitd.services.upgrade(svc, version, s.progress)
    return {"name": svc.name, "kind": svc.kind, "server_version": reported}

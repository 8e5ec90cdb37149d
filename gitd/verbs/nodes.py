"""nodes, nodes:join-command, nodes:drain, nodes:activate: the swarm's machines.

Only with scheduler = "swarm", from a swarm manager. Docker is reached
through hooks/nodes.py; what to show and whether a change is allowed are
plain functions of plain data, unit-tested without an engine.
"""

from __future__ import annotations

from gitd.core import validate
from gitd.core.errors import GitdError, NotFound
from gitd.verbs import Session
from hooks import nodes as swarm_nodes

NOT_SWARM = ('nodes: gitd runs with scheduler = "docker"; set scheduler = "swarm" '
             "(gitd serve --scheduler swarm) on a swarm manager")
SWARM_PORTS = "2377/tcp to this manager; 7946/tcp+udp and 4789/udp between nodes"
LISTED_AT_MOST = 20
# after routes leave a node, before its tasks are stopped: the requests
# already sent there finish
DRAIN_SECONDS = 3.0


def manager_client(s: Session):
    """The Docker client, once sure gitd schedules on a swarm this engine manages."""
    if not s.gitd.scheduler_class.has_nodes:
        raise GitdError(NOT_SWARM)
    client = s.gitd.engine.client
    swarm = swarm_nodes.swarm_info(client)
    problem = swarm_nodes.manager_problem(swarm)
    if problem:
        raise GitdError(f"nodes: {problem}: {swarm_nodes.manager_fix(swarm)}")
    return client


# plain data -> what is shown, what is allowed


def with_tasks(nodes: list[dict], counts: dict[str, dict[str, int]]) -> list[dict]:
    """Each node with its running tasks (this gitd's and all) and its state."""
    out = []
    for node in nodes:
        count = counts.get(node["id"], {"gitd": 0, "all": 0})
        out.append(dict(node, state=f"{node['status']}/{node['availability']}",
                        tasks=count["gitd"], tasks_all=count["all"]))
    return sorted(out, key=lambda n: (n["role"] != "manager", n["name"], n["id"]))


def _known(nodes: list[dict]) -> str:
    shown = [f"{n['name']} ({n['id']})" for n in nodes[:LISTED_AT_MOST]]
    more = len(nodes) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def find_node(nodes: list[dict], name: str) -> dict:
    """The node whose id or hostname is `name` (validated); refuses unknown and ambiguous ones."""
    validate.node_name(name)
    by_id = [n for n in nodes if n["id"] == name]
    if by_id:
        return by_id[0]
    by_name = [n for n in nodes if n["name"] == name]
    if len(by_name) > 1:
        raise GitdError(f"{len(by_name)} nodes are named {name}: name one by its id "
                        f"({', '.join(n['id'] for n in by_name)})")
    if not by_name:
        raise NotFound(f"no node {name} in this swarm; its nodes: {_known(nodes)}")
    return by_name[0]


def drain_refusal(nodes: list[dict], target: dict) -> str | None:
    """Why draining `target` leaves apps nowhere to run, or None."""
    others = [n for n in nodes if n["id"] != target["id"]
              and n["status"] == "ready" and n["availability"] == "active"]
    if others:
        return None
    return (f"{target['name']} is the only ready, active node: drained, the swarm has nowhere "
            "to run this gitd's apps and they stop. Add a node first (nodes:join-command), "
            f"or add --force to drain it anyway (nodes:activate {target['name']} undoes it)")


def node_needs(settings, address: str) -> list[str]:
    """What a machine needs before it can run this gitd's tasks."""
    registry = settings.registry or f"127.0.0.1:{settings.registry_port}"
    lines = ["The new node needs:",
             "  - a Docker engine (apt-get install docker.io)",
             "  - a static busybox at /bin/busybox (apt-get install busybox-static): "
             "health checks bind-mount it",
             f"  - these ports open within the cluster: {SWARM_PORTS}",
             f"  - to pull from the registry {registry} (TLS, or in the engine's "
             "insecure-registries)",
             "  - its published app ports reachable from this manager (Traefik runs here)"]
    if not settings.registry:
        lines.append(f"gitd runs its own registry on {registry}: only this machine pulls from "
                     "it. Set registry = HOST:PORT to one every node reaches.")
    if address.startswith(("127.", "[::1]")):
        lines.append(f"This manager advertises {address}: only this machine reaches it. Other "
                     "machines need a swarm made with --advertise-addr <an address they reach>.")
    return lines


# verbs


def list_nodes(s: Session) -> list[dict]:
    """The swarm's nodes with their state and running tasks."""
    s.require_admin()
    client = manager_client(s)
    return with_tasks(swarm_nodes.list_nodes(client),
                      swarm_nodes.running_tasks(client, s.settings.instance))


def join_command(s: Session) -> dict:
    """`docker swarm join ...` for a new worker, and what that machine needs."""
    s.require_admin()
    client = manager_client(s)
    token = swarm_nodes.join_tokens(client).get("Worker")
    if not token:
        raise GitdError("nodes: the swarm gave no worker join token")
    address = swarm_nodes.manager_address(swarm_nodes.swarm_info(client))
    return {"command": f"docker swarm join --token {token} {address}", "address": address,
            "needs": node_needs(s.settings, address)}


def drain(s: Session, node: str, *, force: bool = False) -> dict:
    """Move tasks off a node (routes first); refused when no other node could
    take them, unless `force`."""
    return _set_availability(s, node, "drain", force)


def activate(s: Session, node: str) -> dict:
    return _set_availability(s, node, "active", False)


def _set_availability(s: Session, name: str, availability: str, force: bool) -> dict:
    s.require_admin()
    validate.node_name(name)
    client = manager_client(s)
    nodes = swarm_nodes.list_nodes(client)
    node = find_node(nodes, name)
    done = {"node": node["name"], "id": node["id"], "was": node["availability"],
            "availability": availability, "changed": node["availability"] != availability}
    if not done["changed"]:
        return done
    if availability == "drain" and not force:
        refusal = drain_refusal(nodes, node)
        if refusal:
            raise GitdError(refusal)
    scheduler = s.gitd.scheduler
    if availability == "drain":
        # nothing routed to the node's tasks before the swarm stops them
        moved = scheduler.take_out_of_routes(node["id"], wait=DRAIN_SECONDS)
        if moved:
            s.progress(f"-----> Traefik no longer sends requests to {node['name']} "
                       f"({moved} app(s) served from other nodes)")
    try:
        swarm_nodes.set_availability(client, node["id"], availability)
    except GitdError:
        scheduler.back_in_routes(node["id"])
        raise
    if availability != "drain":
        scheduler.back_in_routes(node["id"])
    return done

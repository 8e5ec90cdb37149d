"""nodes, nodes:join-command, nodes:drain, nodes:activate: the swarm's machines.

Only with scheduler = "swarm", from a swarm manager. Docker is reached
through hooks/nodes.py; what to show and whether a change is allowed are
plain functions of plain data, unit-tested without an engine.
"""

from __future__ import annotations

from gitd.core import validate
from gitd.commands import command, parser, print_rows
from gitd.core.errors import GitdError, NotFound
from hooks import nodes as swarm_nodes

NOT_SWARM = ('nodes: gitd runs with scheduler = "docker"; set scheduler = "swarm" '
             "(gitd serve --scheduler swarm) on a swarm manager")
SWARM_PORTS = "2377/tcp to this manager; 7946/tcp+udp and 4789/udp between nodes"
LISTED_AT_MOST = 20


def manager_client(ctx):
    """The Docker client, once sure gitd schedules on a swarm this engine manages."""
    if ctx.settings.scheduler != "swarm":
        raise GitdError(NOT_SWARM)
    client = ctx.gitd.engine.client
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


def table_rows(nodes: list[dict]) -> list[list[str]]:
    rows = [["NAME", "ROLE", "STATE", "LABELS", "TASKS"]]
    for n in nodes:
        role = n["role"] + (" (leader)" if n.get("leader") else "")
        labels = ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-"
        tasks = str(n["tasks"]) if n["tasks"] == n["tasks_all"] else \
            f"{n['tasks']} of {n['tasks_all']}"
        rows.append([n["name"], role, n["state"], labels, tasks])
    return rows


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


# commands


@command("nodes", "nodes [--json]", "List the swarm's nodes (scheduler = swarm)",
         help="""
Each node's name, role, state (status/availability: ready/active, down/drain...),
labels and running tasks: this gitd's, and all of them when others run there
("2 of 5"). --json adds each node's id and address.""")
def list_nodes(ctx, argv):
    args = parser("nodes", json_flag=True).parse_args(argv)
    client = manager_client(ctx)
    nodes = with_tasks(swarm_nodes.list_nodes(client),
                       swarm_nodes.running_tasks(client, ctx.settings.instance))
    if args.json:
        ctx.json(nodes)
        return
    print_rows(ctx, table_rows(nodes))


@command("nodes:join-command", "nodes:join-command",
         "What to run on a new machine to join the swarm as a worker",
         help="""
Prints `docker swarm join --token TOKEN ADDR:PORT` with the swarm's worker
token and this manager's address. The token lets a machine join: keep it
secret (docker swarm join-token --rotate worker replaces it).""")
def join_command(ctx, argv):
    parser("nodes:join-command").parse_args(argv)
    client = manager_client(ctx)
    token = swarm_nodes.join_tokens(client).get("Worker")
    if not token:
        raise GitdError("nodes: the swarm gave no worker join token")
    address = swarm_nodes.manager_address(swarm_nodes.swarm_info(client))
    ctx.out(f"docker swarm join --token {token} {address}")
    ctx.out("")
    for line in node_needs(ctx.settings, address):
        ctx.out(line)


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


# after routes leave a node, before its tasks are stopped: the requests
# already sent there finish
DRAIN_SECONDS = 3.0


def _set_availability(ctx, argv, name: str, availability: str, force_flag: bool) -> None:
    p = parser(name)
    p.add_argument("node", metavar="NODE")
    if force_flag:
        p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    validate.node_name(args.node)
    client = manager_client(ctx)
    nodes = swarm_nodes.list_nodes(client)
    node = find_node(nodes, args.node)
    if node["availability"] == availability:
        ctx.out(f"-----> {node['name']} is already {availability}")
        return
    if availability == "drain" and not getattr(args, "force", False):
        refusal = drain_refusal(nodes, node)
        if refusal:
            raise GitdError(refusal)
    scheduler = ctx.gitd.scheduler
    if availability == "drain":
        # nothing routed to the node's tasks before the swarm stops them
        moved = scheduler.take_out_of_routes(node["id"], wait=DRAIN_SECONDS)
        if moved:
            ctx.out(f"-----> Traefik no longer sends requests to {node['name']} "
                    f"({moved} app(s) served from other nodes)")
    try:
        swarm_nodes.set_availability(client, node["id"], availability)
    except GitdError:
        scheduler.back_in_routes(node["id"])
        raise
    if availability != "drain":
        scheduler.back_in_routes(node["id"])
    ctx.out(f"-----> {node['name']}: {availability} (was {node['availability']})")


@command("nodes:drain", "nodes:drain NODE [--force]",
         "Move tasks off a node and schedule none there",
         help="""
NODE is a node's hostname or id. The swarm moves its tasks to other nodes
(services with data pinned to it stop). Refused when no other node is ready
and active, unless --force. nodes:activate NODE brings it back.""")
def drain(ctx, argv):
    _set_availability(ctx, argv, "nodes:drain", "drain", force_flag=True)


@command("nodes:activate", "nodes:activate NODE",
         "Let the swarm schedule tasks on a node again",
         help="""
NODE is a node's hostname or id. Tasks already running elsewhere stay there
until they are next updated or rescheduled.""")
def activate(ctx, argv):
    _set_availability(ctx, argv, "nodes:activate", "active", force_flag=False)

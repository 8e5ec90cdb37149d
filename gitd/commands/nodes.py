"""nodes, nodes:join-command, nodes:drain, nodes:activate: the SSH face of
gitd.verbs.nodes (the swarm's machines)."""

from __future__ import annotations

from gitd.commands.base import command, parser, print_rows
from gitd.verbs import nodes as verbs


def table_rows(nodes: list[dict]) -> list[list[str]]:
    rows = [["NAME", "ROLE", "STATE", "LABELS", "TASKS"]]
    for n in nodes:
        role = n["role"] + (" (leader)" if n.get("leader") else "")
        labels = ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-"
        tasks = str(n["tasks"]) if n["tasks"] == n["tasks_all"] else \
            f"{n['tasks']} of {n['tasks_all']}"
        rows.append([n["name"], role, n["state"], labels, tasks])
    return rows


# commands

@command("nodes", "nodes [--json]", "List the swarm's nodes (scheduler = swarm)",
         help="""
Each node's name, role, state (status/availability: ready/active, down/drain...),
labels and running tasks: this gitd's, and all of them when others run there
("2 of 5"). --json adds each node's id and address.""")
def list_nodes(ctx, argv):
    args = parser("nodes", json_flag=True).parse_args(argv)
    nodes = verbs.list_nodes(ctx)
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
    join = verbs.join_command(ctx)
    ctx.out(join["command"])
    ctx.out("")
    for line in join["needs"]:
        ctx.out(line)


def _availability_args(argv, name: str, force_flag: bool):
    p = parser(name)
    p.add_argument("node", metavar="NODE")
    if force_flag:
        p.add_argument("--force", action="store_true")
    return p.parse_args(argv)


def _say(ctx, done: dict) -> None:
    if done["changed"]:
        ctx.out(f"-----> {done['node']}: {done['availability']} (was {done['was']})")
    else:
        ctx.out(f"-----> {done['node']} is already {done['availability']}")


@command("nodes:drain", "nodes:drain NODE [--force]",
         "Move tasks off a node and schedule none there",
         help="""
NODE is a node's hostname or id. The swarm moves its tasks to other nodes
(services with data pinned to it stop). Refused when no other node is ready
and active, unless --force. nodes:activate NODE brings it back.""")
def drain(ctx, argv):
    args = _availability_args(argv, "nodes:drain", force_flag=True)
    _say(ctx, verbs.drain(ctx, args.node, force=args.force))


@command("nodes:activate", "nodes:activate NODE",
         "Let the swarm schedule tasks on a node again",
         help="""
NODE is a node's hostname or id. Tasks already running elsewhere stay there
until they are next updated or rescheduled.""")
def activate(ctx, argv):
    args = _availability_args(argv, "nodes:activate", force_flag=False)
    _say(ctx, verbs.activate(ctx, args.node))

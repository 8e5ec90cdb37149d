"""nodes commands without an engine: node names, the engine's answers turned
into plain data, the table and JSON, which node a name means, and when a
drain is refused."""

import json

import pytest

from gitd.core import validate
from gitd.commands import nodes as nodes_cmd
from gitd.verbs import nodes as nodes_verbs
from gitd.core.errors import GitdError, NotFound, UsageError
from hooks import nodes as swarm_nodes
from tests.fakes import MANAGER_ID, WORKER_ID, call, node_attrs


def task(node_id, service_id, state="running", desired="running"):
    return {"ID": f"t-{node_id}-{service_id}", "NodeID": node_id, "ServiceID": service_id,
            "DesiredState": desired, "Status": {"State": state}}


def plain(*attrs):
    return [swarm_nodes.node_data(a) for a in attrs]


# node names

@pytest.mark.parametrize("name", ["vm", "node-1", "web.example.com", "db_2", "A1", "x" * 64,
                                  MANAGER_ID])
def test_good_node_names(name):
    assert validate.node_name(name) == name


@pytest.mark.parametrize("name", ["", "x;rm", "x;rm -rf /", "-vm", "vm-", ".vm", "vm.", "a b",
                                  "x" * 65, "../etc", "vm\n", "vm\0", "né", "$(reboot)", "*",
                                  "vm/x", "--force", "１２"])
def test_bad_node_names_are_refused(name):
    with pytest.raises(UsageError, match="invalid node name"):
        validate.node_name(name)


def test_a_huge_node_name_is_not_echoed_whole():
    with pytest.raises(UsageError) as exc:
        validate.node_name("x" * 5000)
    assert len(exc.value.message) < 200


# the engine's answers as plain data

def test_node_data_reads_role_state_labels_and_leadership():
    node = swarm_nodes.node_data(node_attrs(MANAGER_ID, "vm", role="manager", leader=True,
                                            labels={"disk": "ssd"}))
    assert node == {"id": MANAGER_ID, "name": "vm", "role": "manager", "leader": True,
                    "status": "ready", "availability": "active", "address": "192.0.2.7",
                    "labels": {"disk": "ssd"}}
    worker = swarm_nodes.node_data({"ID": WORKER_ID})  # a node mid-join has little
    assert worker["status"] == "unknown" and worker["labels"] == {} and not worker["leader"]


def test_only_tasks_wanted_and_running_are_counted_and_this_gitds_apart():
    tasks = [task(MANAGER_ID, "mine"), task(MANAGER_ID, "mine"), task(MANAGER_ID, "theirs"),
             task(MANAGER_ID, "mine", state="starting"),
             task(MANAGER_ID, "mine", desired="shutdown"),
             task(WORKER_ID, "theirs")]
    assert swarm_nodes.count_tasks(tasks, {"mine"}) == {
        MANAGER_ID: {"gitd": 2, "all": 3}, WORKER_ID: {"gitd": 0, "all": 1}}


@pytest.mark.parametrize("swarm,problem", [
    ({"LocalNodeState": "active", "ControlAvailable": True}, None),
    ({"LocalNodeState": "active", "ControlAvailable": False}, "a swarm worker, not a manager"),
    ({"LocalNodeState": "inactive"}, "not in a swarm"),
    ({}, "not in a swarm"),
    ({"LocalNodeState": "error", "Error": "raft broke"}, "swarm state is error (raft broke)"),
    ({"LocalNodeState": "pending"}, "swarm state is pending"),
])
def test_manager_problem(swarm, problem):
    found = swarm_nodes.manager_problem(swarm)
    assert found == problem if problem is None else problem in found


def test_manager_fix():
    assert swarm_nodes.manager_fix({}) == "docker swarm init --advertise-addr <this host's address>"
    assert "docker node promote" in swarm_nodes.manager_fix(
        {"LocalNodeState": "active", "ControlAvailable": False})


def test_manager_address_is_this_managers_entry():
    swarm = {"NodeID": "me", "NodeAddr": "10.0.0.5",
             "RemoteManagers": [{"NodeID": "other", "Addr": "10.0.0.9:2377"},
                                {"NodeID": "me", "Addr": "10.0.0.5:2377"}]}
    assert swarm_nodes.manager_address(swarm) == "10.0.0.5:2377"
    assert swarm_nodes.manager_address({"NodeID": "me", "NodeAddr": "10.0.0.5"}) == \
        "10.0.0.5:2377"


# the table and the JSON

def listed():
    nodes = plain(node_attrs(WORKER_ID, "b-worker", availability="drain", state="down"),
                  node_attrs(MANAGER_ID, "vm", role="manager", leader=True,
                             labels={"zone": "a", "disk": "ssd"}))
    counts = {MANAGER_ID: {"gitd": 2, "all": 5}}
    return nodes_verbs.with_tasks(nodes, counts)


def test_table_shows_name_role_state_labels_and_running_tasks():
    rows = nodes_cmd.table_rows(listed())
    assert rows == [["NAME", "ROLE", "STATE", "LABELS", "TASKS"],
                    ["vm", "manager (leader)", "ready/active", "disk=ssd,zone=a", "2 of 5"],
                    ["b-worker", "worker", "down/drain", "-", "0"]]


def test_json_has_the_same_and_the_id_and_address():
    data = json.loads(json.dumps(listed()))
    assert [n["name"] for n in data] == ["vm", "b-worker"]
    assert data[0]["id"] == MANAGER_ID and data[0]["address"] == "192.0.2.7"
    assert {k: data[0][k] for k in ("role", "status", "availability", "state", "tasks",
                                    "tasks_all", "labels")} == {
        "role": "manager", "status": "ready", "availability": "active", "state": "ready/active",
        "tasks": 2, "tasks_all": 5, "labels": {"zone": "a", "disk": "ssd"}}


# which node a name means

def test_a_node_is_found_by_hostname_or_id():
    nodes = plain(node_attrs(MANAGER_ID, "vm", role="manager"), node_attrs(WORKER_ID, "w1"))
    assert nodes_verbs.find_node(nodes, "w1")["id"] == WORKER_ID
    assert nodes_verbs.find_node(nodes, MANAGER_ID)["name"] == "vm"


def test_unknown_node_lists_the_known_ones():
    nodes = plain(node_attrs(MANAGER_ID, "vm", role="manager"), node_attrs(WORKER_ID, "w1"))
    with pytest.raises(NotFound, match=f"no node nosuch in this swarm; its nodes: vm "
                                       f"\\({MANAGER_ID}\\), w1 \\({WORKER_ID}\\)"):
        nodes_verbs.find_node(nodes, "nosuch")


def test_a_long_list_of_known_nodes_is_cut():
    nodes = plain(*[node_attrs(f"id{i:023d}", f"n{i}") for i in range(30)])
    with pytest.raises(NotFound, match="and 10 more$"):
        nodes_verbs.find_node(nodes, "nosuch")


def test_a_hostname_two_nodes_share_is_refused_naming_their_ids():
    nodes = plain(node_attrs(MANAGER_ID, "twin", role="manager"), node_attrs(WORKER_ID, "twin"))
    with pytest.raises(GitdError, match=f"2 nodes are named twin: name one by its id "
                                        f"\\({MANAGER_ID}, {WORKER_ID}\\)"):
        nodes_verbs.find_node(nodes, "twin")
    assert nodes_verbs.find_node(nodes, WORKER_ID)["role"] == "worker"


def test_find_node_validates_first():
    with pytest.raises(UsageError, match="invalid node name"):
        nodes_verbs.find_node([], "x;rm")


# when a drain is refused

def test_draining_the_only_active_node_is_refused():
    nodes = plain(node_attrs(MANAGER_ID, "vm", role="manager"))
    assert "only ready, active node" in nodes_verbs.drain_refusal(nodes, nodes[0])
    assert "--force" in nodes_verbs.drain_refusal(nodes, nodes[0])


@pytest.mark.parametrize("other,refused", [
    ({"state": "ready", "availability": "active"}, False),
    ({"state": "down", "availability": "active"}, True),
    ({"state": "ready", "availability": "pause"}, True),
    ({"state": "ready", "availability": "drain"}, True),
])
def test_a_drain_needs_another_ready_active_node(other, refused):
    nodes = plain(node_attrs(MANAGER_ID, "vm", role="manager"),
                  node_attrs(WORKER_ID, "w1", **other))
    assert (nodes_verbs.drain_refusal(nodes, nodes[0]) is not None) == refused


def test_set_availability_refuses_an_unknown_availability():
    with pytest.raises(ValueError):
        swarm_nodes.set_availability(None, WORKER_ID, "gone")


# what a new node needs

def test_node_needs_names_the_registry_and_warns_of_loopback():
    from gitd.core.config import Settings

    own = "\n".join(nodes_verbs.node_needs(Settings(registry_port=5123), "127.0.0.1:2377"))
    assert "/bin/busybox" in own and "docker.io" in own and "7946/tcp+udp" in own
    assert "registry 127.0.0.1:5123" in own and "only this machine pulls from it" in own
    assert "advertises 127.0.0.1:2377: only this machine reaches it" in own
    theirs = "\n".join(nodes_verbs.node_needs(Settings(registry="registry.example.com:443"),
                                             "10.0.0.5:2377"))
    assert "registry registry.example.com:443" in theirs
    assert "only this machine" not in theirs


# the commands, before any engine

@pytest.mark.parametrize("argv", [["nodes"], ["nodes", "--json"], ["nodes:join-command"],
                                  ["nodes:drain", "vm"], ["nodes:activate", "vm"]])
def test_with_the_docker_scheduler_every_nodes_command_says_so(fake, argv):  # noqa: F811
    with pytest.raises(GitdError) as exc:
        call(fake, *argv)
    assert exc.value.message == nodes_verbs.NOT_SWARM
    assert 'scheduler = "docker"; set scheduler = "swarm" (gitd serve --scheduler swarm)' \
        in nodes_verbs.NOT_SWARM


@pytest.mark.parametrize("argv", [["nodes"], ["nodes:join-command"], ["nodes:drain", "vm"],
                                  ["nodes:activate", "vm"]])
def test_nodes_commands_are_admin_only(fake, argv):  # noqa: F811
    with pytest.raises(GitdError, match="permission denied"):
        call(fake, *argv, key="dev")


@pytest.mark.parametrize("argv", [["nodes:drain", "x;rm"], ["nodes:activate", "-x"],
                                  ["nodes:drain"], ["nodes:drain", "a", "b"], ["nodes", "extra"],
                                  ["nodes:activate", "vm", "--force"]])
def test_bad_arguments_are_refused_before_any_engine(fake, argv):  # noqa: F811
    with pytest.raises(UsageError):
        call(fake, *argv)

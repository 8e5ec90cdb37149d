"""nodes, nodes:join-command, nodes:drain, nodes:activate and doctor's swarm
lines against this machine's real single-node swarm, plus a second node: a
Docker-in-Docker worker (Debian's docker.io in gitd-ci/dind) that joins,
is listed, drained and removed.

This machine's own node is never drained: other sessions run swarm tests on
it at the same time. The DinD worker joins paused, so no one's tasks land on
it, and leaves at the end of its test whatever happened.
"""

import json
import re
import subprocess
import time
import uuid

import docker
import pytest

from gitd.verbs.nodes import NOT_SWARM
from tests.conftest import require
from tests.e2e.cluster import DIND_CAPS
from tests.e2e.harness import gitd_command, make_key

pytestmark = pytest.mark.e2e

DIND_IMAGE = "gitd-ci/dind:latest"


def ok(server, *args, key=None):
    result = server.ssh(*args, key=key)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def refused(server, *args, match, key=None):
    result = server.ssh(*args, key=key)
    assert result.returncode != 0, (args, result.stdout)
    assert result.stderr.startswith(" !     "), result.stderr
    assert match in result.stderr, (args, result.stderr)
    return result.stderr


def this_node(client) -> dict:
    node_id = client.info()["Swarm"]["NodeID"]
    return client.api.inspect_node(node_id)


def listed(server) -> dict[str, dict]:
    return {n["id"]: n for n in json.loads(ok(server, "nodes", "--json"))}


def test_nodes_lists_this_machine_as_a_ready_active_manager(swarm_gitd, swarm):
    me = this_node(swarm)
    name = me["Description"]["Hostname"]
    rows = [line.split() for line in ok(swarm_gitd, "nodes").splitlines()]
    assert rows[0] == ["NAME", "ROLE", "STATE", "LABELS", "TASKS"]
    mine = [r for r in rows[1:] if r[0] == name]
    assert len(mine) == 1 and mine[0][1] == "manager" and mine[0][3] == "ready/active", rows

    node = listed(swarm_gitd)[me["ID"]]
    assert (node["name"], node["role"], node["status"], node["availability"]) == \
        (name, "manager", "ready", "active")
    assert isinstance(node["tasks"], int) and node["tasks"] <= node["tasks_all"]


def test_join_command_prints_the_worker_token_and_this_managers_address(swarm_gitd, swarm):
    out = ok(swarm_gitd, "nodes:join-command")
    token = swarm.api.inspect_swarm()["JoinTokens"]["Worker"]
    address = next(m["Addr"] for m in swarm.info()["Swarm"]["RemoteManagers"]
                   if m["NodeID"] == swarm.info()["Swarm"]["NodeID"])
    assert out.splitlines()[0] == f"docker swarm join --token {token} {address}"
    assert re.fullmatch(r"SWMTKN-1-[0-9a-z-]+", token)
    assert "/bin/busybox" in out and "docker.io" in out and "registry" in out


def test_draining_the_only_active_node_is_refused_and_changes_nothing(swarm_gitd, swarm):
    me = this_node(swarm)
    name = me["Description"]["Hostname"]
    refused(swarm_gitd, "nodes:drain", name, match="is the only ready, active node")
    refused(swarm_gitd, "nodes:drain", me["ID"], match="add --force to drain it anyway")
    after = this_node(swarm)
    assert after["Spec"]["Availability"] == "active"
    # (the spec, not the version: the swarm itself rewrites a node's status
    # and network attachments)
    assert after["Spec"] == me["Spec"]
    # activating an active node says so and changes nothing either
    assert "is already active" in ok(swarm_gitd, "nodes:activate", name)
    assert this_node(swarm)["Spec"] == me["Spec"]


@pytest.mark.parametrize("args,match", [
    (("nodes:drain", "x;rm"), "invalid node name"),
    (("nodes:drain", "x" * 500), "invalid node name"),
    (("nodes:activate", "../etc"), "invalid node name"),
    (("nodes:drain", "$(reboot)"), "invalid node name"),
    (("nodes:drain",), "required: NODE"),
    (("nodes:drain", "a", "b"), "unrecognized arguments"),
    (("nodes", "--json", "--all"), "unrecognized arguments"),
])
def test_bad_node_arguments_are_refused(swarm_gitd, swarm, args, match):
    spec = this_node(swarm)["Spec"]
    refused(swarm_gitd, *args, match=match)
    assert this_node(swarm)["Spec"] == spec


def test_an_unknown_node_is_refused_listing_the_known_ones(swarm_gitd, swarm):
    me = this_node(swarm)
    nosuch = f"nosuch-{uuid.uuid4().hex[:8]}"
    for verb in ("nodes:drain", "nodes:activate"):
        err = refused(swarm_gitd, verb, nosuch, match=f"no node {nosuch} in this swarm")
        assert f"{me['Description']['Hostname']} ({me['ID']})" in err


def test_a_deployer_key_may_not_touch_nodes(swarm_gitd, tmp_path):
    name = f"dev-{uuid.uuid4().hex[:8]}"
    dev = make_key(tmp_path, name)
    result = swarm_gitd.ssh("keys:add", name, input=(tmp_path / f"{name}.pub").read_text())
    assert result.returncode == 0, result.stderr
    try:
        for args in (("nodes",), ("nodes", "--json"), ("nodes:join-command",),
                     ("nodes:drain", "x"), ("nodes:activate", "x")):
            refused(swarm_gitd, *args, key=dev, match="permission denied")
    finally:
        ok(swarm_gitd, "keys:remove", name)


def test_with_the_docker_scheduler_nodes_says_how_to_switch(gitd):
    for args in (("nodes",), ("nodes:join-command",), ("nodes:drain", "vm")):
        err = refused(gitd, *args, match=NOT_SWARM)
        assert err.strip() == f"!     {NOT_SWARM}"


def doctor(server) -> str:
    """Its output: other lines may FAIL here (gitd's ports are in use), the swarm's are read."""
    result = subprocess.run(gitd_command("doctor", "--data-dir", str(server.data_dir),
                                         "--scheduler", "swarm"),
                            capture_output=True, text=True, timeout=120)
    return result.stdout


def test_doctor_checks_the_swarm(swarm_gitd, swarm):
    out = doctor(swarm_gitd)
    assert "ok   swarm manager: this engine manages the swarm (advertised on 127.0.0.1:2377" \
        in out, out
    assert re.search(r"^(ok|warn) +swarm nodes: \d+ of \d+ ready", out, re.M), out


# a second node: Docker-in-Docker


def wait_until(check, what: str, tries: int = 120, pause: float = 0.5):
    for _ in range(tries):
        result = check()
        if result:
            return result
        time.sleep(pause)
    pytest.fail(f"gave up waiting for {what}")


@pytest.fixture
def dind_node(swarm):
    """A worker node in a container of its own, joined paused (no task of
    anyone's is scheduled on it), removed from the swarm afterwards.

    The manager advertises 127.0.0.1:2377, which inside the container is the
    container itself: socat there relays it to the host (the container's
    gateway), the one path from the node to this manager."""
    try:
        swarm.images.get(DIND_IMAGE)
    except docker.errors.ImageNotFound:
        require(False, f"{DIND_IMAGE} is not built")
    name = f"gitd-node-{uuid.uuid4().hex[:8]}"
    container = swarm.containers.run(
        DIND_IMAGE, ["dockerd", "--storage-driver", "vfs"], name=name, hostname=name,
        detach=True, cap_add=DIND_CAPS, labels={"gitd.test": "dind-node"},
        security_opt=["seccomp=unconfined", "apparmor=unconfined"])
    node_id = None
    try:
        wait_until(lambda: container.exec_run(["docker", "info"]).exit_code == 0,
                   "the node's dockerd")
        container.reload()
        gateway = container.attrs["NetworkSettings"]["Gateway"]
        container.exec_run(["socat", "TCP-LISTEN:2377,bind=127.0.0.1,fork,reuseaddr",
                            f"TCP:{gateway}:2377"], detach=True)
        token = swarm.api.inspect_swarm()["JoinTokens"]["Worker"]
        joined = container.exec_run(["timeout", "60", "docker", "swarm", "join",
                                     "--availability", "pause", "--token", token,
                                     "127.0.0.1:2377"])
        assert joined.exit_code == 0, joined.output
        node_id = container.exec_run(["docker", "info", "-f", "{{.Swarm.NodeID}}"]) \
            .output.decode().strip()
        yield {"id": node_id, "name": name}
    finally:
        container.exec_run(["docker", "swarm", "leave", "--force"])
        # by id: its own, or the one a join that failed half-way left under its unique name
        ids = {node_id} if node_id else \
            {n["ID"] for n in swarm.api.nodes() if n["Description"]["Hostname"] == name}
        for stale in ids:
            try:
                swarm.api.remove_node(stale, force=True)
            except docker.errors.NotFound:
                pass
        container.remove(force=True, v=True)


def test_a_second_node_joins_is_listed_and_drained(swarm_gitd, swarm, dind_node):
    def ready():
        node = listed(swarm_gitd).get(dind_node["id"])
        return node if node and node["status"] == "ready" else None

    node = wait_until(ready, "the new node listed by `nodes`, ready")
    assert (node["name"], node["role"], node["availability"], node["tasks_all"]) == \
        (dind_node["name"], "worker", "pause", 0)
    row = next(line.split() for line in ok(swarm_gitd, "nodes").splitlines()
               if line.startswith(dind_node["name"] + " "))
    assert row == [dind_node["name"], "worker", "ready/pause", "-", "0"]

    # a paused node runs nothing new: this machine's node is still the only active one
    me = this_node(swarm)
    refused(swarm_gitd, "nodes:drain", me["ID"], match="is the only ready, active node")
    assert this_node(swarm)["Spec"]["Availability"] == "active"

    out = ok(swarm_gitd, "nodes:drain", dind_node["name"])
    assert f"-----> {dind_node['name']}: drain (was pause)" in out
    assert swarm.api.inspect_node(dind_node["id"])["Spec"]["Availability"] == "drain"
    assert listed(swarm_gitd)[dind_node["id"]]["state"] == "ready/drain"
    assert "is already drain" in ok(swarm_gitd, "nodes:drain", dind_node["id"])

    out = doctor(swarm_gitd)
    assert f"taking no new tasks: {dind_node['name']} (drain)" in out, out

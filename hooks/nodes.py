"""Swarm nodes: the few Docker calls behind `nodes` and `gitd doctor`, and
the pure functions that turn the engine's answers into plain data.

Only the functions taking a `client` talk to Docker; they raise GitdError.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import docker
import requests

from gitd.core.errors import GitdError
from hooks.engine import LABEL_INSTANCE

AVAILABILITIES = ("active", "pause", "drain")
SWARM_PORT = 2377


@contextmanager
def _docker(what: str):
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        detail = getattr(exc, "explanation", None) or str(exc)
        raise GitdError(f"{what}: {' '.join(str(detail).split())[:300]}") from None


# Docker calls


def swarm_info(client) -> dict:
    """The `Swarm` section of `docker info`."""
    with _docker("cannot read the engine's swarm state"):
        return client.info().get("Swarm") or {}


def list_nodes(client) -> list[dict]:
    with _docker("cannot list the swarm's nodes"):
        return [node_data(attrs) for attrs in client.api.nodes()]


def running_tasks(client, instance: str) -> dict[str, dict[str, int]]:
    """Per node id: {"gitd": running tasks of this instance's services, "all": all of them}."""
    with _docker("cannot list the swarm's tasks"):
        services = client.api.services(filters={"label": f"{LABEL_INSTANCE}={instance}"})
        tasks = client.api.tasks(filters={"desired-state": "running"})
    return count_tasks(tasks, {s["ID"] for s in services})


def set_availability(client, node_id: str, availability: str) -> None:
    """Change one node's availability, keeping the rest of its spec."""
    if availability not in AVAILABILITIES:
        raise ValueError(availability)
    for attempt in range(5):
        # the swarm itself rewrites a node (its status, a new network
        # attachment): an update against an older version is refused
        try:
            with _docker("cannot update the node"):
                attrs = client.api.inspect_node(node_id)
                spec = dict(attrs["Spec"], Availability=availability)
                client.api.update_node(node_id, attrs["Version"]["Index"], spec)
            return
        except GitdError as exc:
            if "out of sequence" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.2)


def join_tokens(client) -> dict:
    with _docker("cannot read the swarm's join tokens"):
        return client.api.inspect_swarm().get("JoinTokens") or {}


# plain data


def manager_problem(swarm: dict) -> str | None:
    """Why this engine cannot manage the swarm, or None when it can."""
    state = swarm.get("LocalNodeState") or "inactive"
    if state == "active" and swarm.get("ControlAvailable"):
        return None
    if state == "active":
        return "this Docker engine is a swarm worker, not a manager"
    if state == "inactive":
        return "this Docker engine is not in a swarm"
    error = swarm.get("Error") or ""
    return f"this Docker engine's swarm state is {state}" + (f" ({error})" if error else "")


def manager_fix(swarm: dict) -> str:
    state = swarm.get("LocalNodeState") or "inactive"
    if state == "inactive":
        return "docker swarm init --advertise-addr <this host's address>"
    if state == "active":
        return "run gitd on a manager (or `docker node promote` this node from one)"
    if state == "locked":
        return "docker swarm unlock"
    return "docker info shows why; the swarm's managers must be reachable from this host"


def manager_address(swarm: dict) -> str:
    """host:port the new nodes join: this manager's entry in RemoteManagers."""
    for manager in swarm.get("RemoteManagers") or []:
        if manager.get("NodeID") == swarm.get("NodeID") and manager.get("Addr"):
            return manager["Addr"]
    return f"{swarm.get('NodeAddr') or '<manager address>'}:{SWARM_PORT}"


def node_data(attrs: dict) -> dict:
    """A node as `docker node inspect` gives it -> the fields gitd shows."""
    spec, status = attrs.get("Spec") or {}, attrs.get("Status") or {}
    manager = attrs.get("ManagerStatus") or {}
    return {
        "id": attrs.get("ID", ""),
        "name": (attrs.get("Description") or {}).get("Hostname", ""),
        "role": spec.get("Role", ""),
        "leader": bool(manager.get("Leader")),
        "status": status.get("State", "unknown"),
        "availability": spec.get("Availability", "unknown"),
        "address": status.get("Addr", ""),
        "labels": dict(spec.get("Labels") or {}),
    }


def count_tasks(tasks: list[dict], service_ids: set[str]) -> dict[str, dict[str, int]]:
    """Tasks wanted running that are running, per node: this gitd's and all."""
    counts: dict[str, dict[str, int]] = {}
    for task in tasks:
        if task.get("DesiredState") != "running" or \
                (task.get("Status") or {}).get("State") != "running":
            continue
        node = counts.setdefault(task.get("NodeID", ""), {"gitd": 0, "all": 0})
        node["all"] += 1
        node["gitd"] += task.get("ServiceID") in service_ids
    return counts

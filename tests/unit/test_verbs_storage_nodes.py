"""The storage and nodes verbs called directly: the data they return, the
access they check, bad input refused with nothing changed."""

from types import SimpleNamespace

import pytest

from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.verbs import Session
from gitd.verbs import nodes as nodes_verbs
from gitd.verbs import storage as storage_verbs
from hooks import nodes as swarm_nodes
from tests.fakes import FakeGitd, deployed


class Engine:
    def __init__(self):
        self.volumes, self.client = [], object()

    def ensure_volume(self, name, labels):
        self.volumes.append(name)


class Gitd(FakeGitd):
    """FakeGitd with an engine that records volumes and a pipeline that takes mounts."""

    def __init__(self, db, settings):
        super().__init__(db, settings)
        self._engine = Engine()
        self.released = []
        self.pipeline.release = self._release

    @property
    def engine(self):
        return self._engine

    def _release(self, app, base, config, kind, description, by, sink, mounts):
        self.released.append((app, kind, description, mounts))


@pytest.fixture
def gitd(fake):  # noqa: F811 - the fixture imported above
    return Gitd(fake.store, fake.settings)


def session(gitd, key="admin"):
    return Session(gitd, gitd.store.get_key(key))


# storage

def test_mount_list_and_unmount_return_the_mounts(gitd):
    deployed(gitd.store)
    done = storage_verbs.mount(session(gitd), "hello", "data:/data")
    assert done == {"app": "hello", "mounts": [{"source": "data", "type": "volume",
                                                "target": "/data"}]}
    assert gitd.engine.volumes == ["gitd-t1234567.hello.data"]
    assert gitd.released[-1][:3] == ("hello", "storage", "Mount data:/data")
    assert storage_verbs.list_mounts(session(gitd), "hello") == done["mounts"]
    undone = storage_verbs.unmount(session(gitd), "hello", "/data")
    assert undone == {"app": "hello", "target": "/data", "mounts": []}
    with pytest.raises(NotFound, match="mounts nothing at /data"):
        storage_verbs.unmount(session(gitd), "hello", "/data")


def test_a_deployer_mounts_volumes_on_granted_apps_only_and_never_host_dirs(gitd, tmp_path):
    deployed(gitd.store)
    dev = session(gitd, "dev")
    for verb, arg in ((storage_verbs.mount, "data:/data"), (storage_verbs.unmount, "/data")):
        with pytest.raises(PermissionDenied):
            verb(dev, "hello", arg)
    with pytest.raises(PermissionDenied):
        storage_verbs.list_mounts(dev, "hello")
    gitd.store.grant("hello", "dev")
    host = tmp_path / "srv"
    host.mkdir()
    with pytest.raises(PermissionDenied, match="only admins may mount host directories"):
        storage_verbs.mount(dev, "hello", f"{host}:/srv")
    assert gitd.store.get_mounts("hello") == [] and gitd.released == []
    assert storage_verbs.mount(dev, "hello", "data:/data")["mounts"][0]["source"] == "data"


@pytest.mark.parametrize("spec", ["data", "data:relative", "../x:/data", "a/b:/data",
                                  "/etc:/etc", "/var/run/docker.sock:/s", "data:/data\n",
                                  "x" * 5000 + ":/data", "data:/data:ro:rw"])
def test_hostile_mounts_are_refused_with_nothing_changed(gitd, spec):
    deployed(gitd.store)
    with pytest.raises(GitdError):
        storage_verbs.mount(session(gitd), "hello", spec)
    assert gitd.store.get_mounts("hello") == [] and gitd.released == []
    assert gitd.engine.volumes == []


def test_two_mounts_at_one_path_are_refused(gitd):
    deployed(gitd.store)
    storage_verbs.mount(session(gitd), "hello", "data:/data")
    with pytest.raises(GitdError, match="already mounts something at /data"):
        storage_verbs.mount(session(gitd), "hello", "other:/data")
    assert len(gitd.store.get_mounts("hello")) == 1


def test_a_failed_release_puts_the_old_mounts_back(gitd):
    deployed(gitd.store)

    def fail(*args, **kwargs):
        raise GitdError("the new container did not become healthy")
    gitd.pipeline.release = fail
    with pytest.raises(GitdError, match="mounts of hello left as they were"):
        storage_verbs.mount(session(gitd), "hello", "data:/data")
    assert gitd.store.get_mounts("hello") == []


# nodes

NODES = [{"id": "m1", "name": "vm", "role": "manager", "leader": True, "status": "ready",
          "availability": "active", "address": "192.0.2.7", "labels": {}},
         {"id": "w1", "name": "w1", "role": "worker", "leader": False, "status": "ready",
          "availability": "active", "address": "192.0.2.8", "labels": {}}]


@pytest.fixture
def swarm(gitd, monkeypatch):
    """A swarm manager of two nodes, as hooks.nodes reads it; records changes."""
    gitd.settings.scheduler = "swarm"
    nodes = [dict(n) for n in NODES]
    changes = []
    monkeypatch.setattr(swarm_nodes, "swarm_info", lambda client: {
        "LocalNodeState": "active", "ControlAvailable": True, "NodeID": "m1", "NodeAddr": "192.0.2.7"})
    monkeypatch.setattr(swarm_nodes, "list_nodes", lambda client: [dict(n) for n in nodes])
    monkeypatch.setattr(swarm_nodes, "running_tasks", lambda client, instance: {
        "m1": {"gitd": 2, "all": 3}})

    def set_availability(client, node_id, availability):
        changes.append((node_id, availability))
        next(n for n in nodes if n["id"] == node_id)["availability"] = availability
    monkeypatch.setattr(swarm_nodes, "set_availability", set_availability)
    gitd.scheduler = SimpleNamespace(
        take_out_of_routes=lambda node_id, wait: changes.append(("routes out", node_id)) or 1,
        back_in_routes=lambda node_id: changes.append(("routes in", node_id)))
    return SimpleNamespace(nodes=nodes, changes=changes)


def test_nodes_lists_each_node_with_its_tasks(gitd, swarm):
    listed = nodes_verbs.list_nodes(session(gitd))
    assert [(n["name"], n["state"], n["tasks"], n["tasks_all"]) for n in listed] == [
        ("vm", "ready/active", 2, 3), ("w1", "ready/active", 0, 0)]


def test_drain_takes_routes_out_first_and_activate_brings_them_back(gitd, swarm):
    done = nodes_verbs.drain(session(gitd), "w1")
    assert done == {"node": "w1", "id": "w1", "was": "active", "availability": "drain",
                    "changed": True}
    assert swarm.changes == [("routes out", "w1"), ("w1", "drain")]
    assert nodes_verbs.drain(session(gitd), "w1")["changed"] is False
    assert nodes_verbs.activate(session(gitd), "w1")["changed"] is True
    assert swarm.changes[-2:] == [("w1", "active"), ("routes in", "w1")]


def test_draining_the_last_active_node_needs_force(gitd, swarm):
    nodes_verbs.drain(session(gitd), "w1")
    with pytest.raises(GitdError, match="only ready, active node"):
        nodes_verbs.drain(session(gitd), "vm")
    assert [n["availability"] for n in swarm.nodes] == ["active", "drain"]
    assert nodes_verbs.drain(session(gitd), "vm", force=True)["availability"] == "drain"


def test_nodes_verbs_are_admin_only_and_refuse_bad_names_unchanged(gitd, swarm):
    for verb, args in ((nodes_verbs.list_nodes, ()), (nodes_verbs.join_command, ()),
                       (nodes_verbs.drain, ("w1",)), (nodes_verbs.activate, ("w1",))):
        with pytest.raises(PermissionDenied):
            verb(session(gitd, "dev"), *args)
    for name in ("x;rm", "-w1", "w1\n", "x" * 5000):
        with pytest.raises(UsageError):
            nodes_verbs.drain(session(gitd), name)
    with pytest.raises(NotFound):
        nodes_verbs.drain(session(gitd), "nosuch")
    assert swarm.changes == []


def test_nodes_verbs_need_the_swarm_scheduler(gitd):
    with pytest.raises(GitdError) as exc:
        nodes_verbs.list_nodes(session(gitd))
    assert exc.value.message == nodes_verbs.NOT_SWARM

"""Services and app storage on a swarm, without an engine: the swarm service
a service becomes (plain data), its names, the node it is pinned to, and
the store's record of nodes."""

import re
import sqlite3
from types import SimpleNamespace

import pytest

from gitd.core.config import Settings
from gitd.verbs.services import NODE_WITHOUT_SWARM, placement_node
from gitd.core.errors import GitdError, NotFound, UsageError
from gitd.services import kind
from gitd.services.base import (container_name, generation, network_name, relay_name,
                                swarm_service_name, volume_name)
from hooks.specs import relay_spec, service_spec
from gitd.core.store import Store
from hooks import nodes as swarm_nodes
from hooks import swarm
from hooks.checks import PROBE_PATH
from tests.fakes import MANAGER_ID, WORKER_ID, call, node_attrs

INSTANCE = "abcd1234"
IMAGE = "127.0.0.1:5000/gitd/service-postgres@sha256:" + "c" * 64
DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def svc(name="shop-db", kind_name="postgres", **extra):
    fields = dict(name=name, kind=kind_name, version="16", image="gitd-ci/postgres:latest",
                  password="pw{{x}}", volume=volume_name(INSTANCE, name), created_at=0.0,
                  exposed_port=None, node="vm")
    fields.update(extra)
    return SimpleNamespace(**fields)


def built(service=None, staging=False, node="vm"):
    service = service or svc()
    spec = service_spec(Settings(instance=INSTANCE), kind(service.kind), service)
    alias = None if staging else container_name(INSTANCE, service.name)
    name = swarm_service_name(INSTANCE, service.name, service.volume, staging)
    return swarm.data_service_spec(spec, IMAGE, name, node, alias)


# the swarm service

def test_a_service_is_one_replica_pinned_to_its_node_reached_by_its_host_name():
    spec = built()
    assert spec["name"] == "gitd-abcd1234-svc-shop-db"
    assert spec["mode"] == {"Replicated": {"Replicas": 1}}
    assert spec["endpoint_spec"] == {"Mode": "dnsrr"}  # no IPVS virtual IP, no ports
    assert spec["update_config"]["Order"] == "stop-first"  # never two tasks on one volume
    template = spec["task_template"]
    assert template["Placement"] == {"Constraints": ["node.hostname==vm"]}
    assert template["RestartPolicy"]["Condition"] == "any"
    assert template["Networks"] == [{"Target": "gitd-abcd1234-svc-shop-db",
                                     "Aliases": ["gitd-abcd1234-svc-shop-db"]}]
    container = template["ContainerSpec"]
    assert container["Image"] == IMAGE
    assert container["Hostname"] == "gitd-abcd1234-svc-shop-db"
    assert container["Healthcheck"]["Test"][:2] == ["CMD", "pg_isready"]
    assert container["StopSignal"] == "SIGINT" and container["StopGracePeriod"] == 30 * 10**9
    assert "Args" not in container  # the image's own command
    assert container["Mounts"] == [{
        "Type": "volume", "Source": "gitd-abcd1234-svc-shop-db-data",
        "Target": "/var/lib/postgresql/data", "ReadOnly": False,
        "VolumeOptions": {"Labels": {"gitd.instance": INSTANCE, "gitd.service": "shop-db",
                                     "gitd.service.kind": "postgres"}}}]
    assert spec["labels"]["gitd.service"] == "shop-db" and "gitd.role" not in spec["labels"]
    assert container["Labels"]["gitd.role"] == swarm.TASK_ROLE
    assert container["Labels"]["gitd.service"] == "shop-db"


def test_environment_has_no_dyno_and_keeps_template_braces():
    env = built()["task_template"]["ContainerSpec"]["Env"]
    assert 'POSTGRES_PASSWORD=pw{{"{{"}}x}}' in env
    assert not [e for e in env if e.startswith("DYNO=")]


def test_an_exposed_service_publishes_nothing_on_the_swarm():
    spec = built(svc(exposed_port=15432))
    assert spec["endpoint_spec"] == {"Mode": "dnsrr"}


def test_an_upgrade_stages_beside_it_without_the_host_name():
    service = svc(volume=volume_name(INSTANCE, "shop-db", 2))
    staged = built(service, staging=True, node="db-node")
    assert staged["name"] == "gitd-abcd1234-svc-shop-db-g2-upgrade"
    assert staged["task_template"]["Networks"] == [{"Target": "gitd-abcd1234-svc-shop-db",
                                                    "Aliases": []}]
    assert staged["task_template"]["Placement"]["Constraints"] == ["node.hostname==db-node"]
    assert built(service)["name"] == "gitd-abcd1234-svc-shop-db-g2"


def test_redis_runs_its_command():
    container = built(svc(name="cache", kind_name="redis"))["task_template"]["ContainerSpec"]
    assert container["Args"][0] == "redis-server"
    assert container["StopSignal"] == "SIGTERM"


def test_an_unmapped_setting_is_refused_not_dropped():
    spec = service_spec(Settings(instance=INSTANCE), kind("postgres"), svc())
    with pytest.raises(GitdError, match="cannot run shm_size"):
        swarm.data_service_spec({**spec, "shm_size": 1}, IMAGE, "n", "vm", None)


@pytest.mark.parametrize("service", ["a", "shop-db", "x" * 30, "a-" * 14 + "zz"])
def test_every_name_is_a_dns_label(service):
    for gen in (1, 2, 999):
        volume = volume_name(INSTANCE, service, gen)
        assert generation(volume) == gen
        for staging in (False, True):
            assert DNS_LABEL.fullmatch(swarm_service_name(INSTANCE, service, volume, staging))
    for name in (container_name(INSTANCE, service), network_name(INSTANCE, service),
                 relay_name(INSTANCE, service)):
        assert DNS_LABEL.fullmatch(name), name


def test_volume_names_are_what_docker_mode_made():
    assert volume_name(INSTANCE, "db") == "gitd-abcd1234-svc-db-data"
    assert volume_name(INSTANCE, "db", 3) == "gitd-abcd1234-svc-db-data-g3"


def test_current_task_is_the_newest_wanted_running():
    tasks = [{"ID": "old", "DesiredState": "shutdown", "Version": {"Index": 9}},
             {"ID": "a", "DesiredState": "running", "Version": {"Index": 5}},
             {"ID": "b", "DesiredState": "running", "Version": {"Index": 7}}]
    assert swarm.current_task(tasks)["ID"] == "b"
    assert swarm.current_task(tasks[:1]) is None
    assert swarm.current_task([]) is None


def test_reconcile_removes_an_upgrade_cut_short_and_services_of_no_service():
    from gitd.services.runtime import stale_units

    def unit(name, **labels):
        return swarm.SwarmUnit(id=name, name=name, labels=labels)

    units = [unit("gitd-abcd1234-svc-shop-db-g2", **{"gitd.service": "shop-db"}),
             unit("gitd-abcd1234-svc-shop-db-g3-upgrade", **{"gitd.service": "shop-db"}),
             unit("gitd-abcd1234-svc-gone", **{"gitd.service": "gone"}),
             unit("gitd-abcd1234_shop_web_s4", **{"gitd.app": "shop"})]
    live = [svc(volume=volume_name(INSTANCE, "shop-db", 2))]
    assert [u.name for u in stale_units(units, live, INSTANCE)] == [
        "gitd-abcd1234-svc-shop-db-g3-upgrade", "gitd-abcd1234-svc-gone"]


# app storage: tasks mounting a named volume run on its node

def test_a_named_volume_pins_an_app_a_host_directory_does_not():
    volume = {"mounts": [{"type": "bind", "source": "/bb", "target": PROBE_PATH},
                         {"type": "volume", "source": "gitd-x.shop.data", "target": "/data"}]}
    assert swarm.has_volume(volume)
    assert not swarm.has_volume({"mounts": volume["mounts"][:1]})
    assert not swarm.has_volume({})
    pinned = swarm.pinned_to({"constraints": ["node.role==worker"], **volume}, "vm")
    assert pinned["constraints"] == ["node.role==worker", "node.hostname==vm"]


def test_the_scheduler_pins_an_app_with_a_volume_to_its_recorded_node(tmp_path):
    engine = SimpleNamespace(client=SimpleNamespace(api=None))
    scheduler = swarm.SwarmScheduler(engine, Settings(data_dir=tmp_path, instance=INSTANCE),
                                     app_node={"shop": "db-node"}.get)
    scheduler._node_id, scheduler._node_names = MANAGER_ID, {MANAGER_ID: "vm"}
    mounts = [{"type": "volume", "source": "v", "target": "/data"}]
    shop = {"labels": {"gitd.app": "shop"}, "mounts": mounts}
    other = {"labels": {"gitd.app": "other"}, "mounts": mounts}
    plain = {"labels": {"gitd.app": "plain"}}
    assert [s["constraints"] for s in scheduler.pinned([shop, shop])] == [
        ["node.hostname==db-node"]] * 2
    # none recorded (mounted before the swarm): where docker mode made it, here
    assert scheduler.pinned([other])[0]["constraints"] == ["node.hostname==vm"]
    assert scheduler.pinned([plain]) == [plain]


# the node a service stays on

def nodes(*attrs):
    return [swarm_nodes.node_data(a) for a in attrs]


SWARM = nodes(node_attrs(MANAGER_ID, "vm", role="manager", leader=True),
              node_attrs(WORKER_ID, "db-node"))


def test_without_node_it_is_this_managers():
    assert placement_node(SWARM, None, MANAGER_ID)["name"] == "vm"
    with pytest.raises(GitdError, match="name one with --node"):
        placement_node(SWARM, None, "someone-else")


def test_a_node_by_hostname_or_id():
    assert placement_node(SWARM, "db-node", MANAGER_ID)["id"] == WORKER_ID
    assert placement_node(SWARM, WORKER_ID, MANAGER_ID)["name"] == "db-node"


def test_an_unknown_node_is_refused_listing_the_known_ones():
    with pytest.raises(NotFound, match=f"its nodes: vm \\({MANAGER_ID}\\), db-node"):
        placement_node(SWARM, "nosuchnode", MANAGER_ID)


@pytest.mark.parametrize("name", ["x;rm", "", "-rf", "a b", "x" * 65, "$(reboot)", "../x"])
def test_a_hostile_node_name_is_refused(name):
    with pytest.raises(UsageError, match="invalid node name"):
        placement_node(SWARM, name, MANAGER_ID)


def test_a_shared_hostname_is_refused_even_by_id():
    twins = SWARM + nodes(node_attrs("zz" * 12 + "z", "db-node"))
    with pytest.raises(GitdError, match="more than one node is named db-node"):
        placement_node(twins, WORKER_ID, MANAGER_ID)


@pytest.mark.parametrize("state, availability", [("down", "active"), ("ready", "drain"),
                                                 ("ready", "pause")])
def test_a_node_that_takes_no_tasks_is_refused(state, availability):
    resting = nodes(node_attrs(MANAGER_ID, "vm", role="manager"),
                    node_attrs(WORKER_ID, "db-node", state=state, availability=availability))
    with pytest.raises(GitdError, match=f"db-node is {state}/{availability}"):
        placement_node(resting, "db-node", MANAGER_ID)


def test_node_under_the_docker_scheduler_is_refused_before_anything(fake):  # noqa: F811
    with pytest.raises(GitdError) as refused:
        call(fake, "services:create", "postgres", "db", "--node", "vm")
    assert refused.value.message == NODE_WITHOUT_SWARM
    with pytest.raises(UsageError, match="invalid node name"):
        call(fake, "services:create", "postgres", "db", "--node", "x;rm")
    assert fake.store.list_services() == []


# expose on a swarm: a relay on 127.0.0.1

def test_the_relay_publishes_on_loopback_and_passes_on_to_the_host_name():
    spec = relay_spec(Settings(instance=INSTANCE), kind("redis"),
                      svc(name="cache", kind_name="redis", exposed_port=0), "/bin/busybox")
    assert spec["name"] == "gitd-abcd1234-svc-cache-expose"
    assert spec["ports"] == {"6379/tcp": ("127.0.0.1", None)}
    assert spec["networks"] == ["gitd-abcd1234-svc-cache"]
    assert spec["entrypoint"] == [PROBE_PATH, "nc", "-ll", "-p", "6379", "-e", PROBE_PATH,
                                  "nc", "gitd-abcd1234-svc-cache", "6379"]
    assert spec["mounts"] == [{"target": PROBE_PATH, "source": "/bin/busybox", "type": "bind",
                               "read_only": True}]
    assert spec["labels"]["gitd.service"] == "cache" and spec["labels"]["gitd.role"] == "relay"
    fixed = relay_spec(Settings(instance=INSTANCE), kind("postgres"), svc(exposed_port=15432),
                       "/bin/busybox")
    assert fixed["ports"] == {"5432/tcp": ("127.0.0.1", 15432)}


# the store

def test_services_and_apps_record_their_node(tmp_path):
    db = Store(tmp_path / "gitd.db")
    made = db.create_service(name="db", kind="postgres", version="16", image="i",
                                password="p", volume="v", node="db-node")
    assert made.node == "db-node" and db.get_service("db").node == "db-node"
    db.create_service(name="plain", kind="redis", version="7", image="i", password="p",
                         volume="v2")
    assert db.get_service("plain").node is None
    db.create_app("shop")
    assert db.app_node("shop") is None and db.get_app("shop").node is None
    db.set_app_node("shop", "vm")
    assert db.app_node("shop") == "vm" and db.get_app("shop").node == "vm"
    assert db.app_node("nosuch") is None
    db.delete_app("shop")
    assert db.app_node("shop") is None


def test_an_existing_database_gains_the_node_columns(tmp_path):
    path = tmp_path / "gitd.db"
    old = Store(path)
    old.create_app("old")
    old.create_service(name="db", kind="postgres", version="16", image="i", password="p",
                       volume="v")
    old.db.conn.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE services DROP COLUMN node")
    conn.execute("ALTER TABLE apps DROP COLUMN node")
    conn.commit()
    conn.close()
    db = Store(path)
    assert db.get_service("db").node is None and db.app_node("old") is None
    db.set_app_node("old", "vm")
    assert db.get_app("old").node == "vm"


def test_removing_a_release_task_leaves_the_live_deploys_route_file(tmp_path):
    """A postdeploy script runs as a release task carrying the live deploy's
    seq; its removal must not take the live routes with it."""
    engine = SimpleNamespace(client=SimpleNamespace(api=None))
    scheduler = swarm.SwarmScheduler(engine, Settings(data_dir=tmp_path, instance=INSTANCE))
    removed = []
    scheduler._remove_service = removed.append
    scheduler._wait_gone = lambda unit, timeout: None
    scheduler.routes.publish("shop", 4, [], {"http://10.0.0.2:5000"}, None)
    labels = {"gitd.instance": INSTANCE, "gitd.app": "shop", "gitd.seq": "4"}
    task = swarm.SwarmUnit("t1", "gitd-abcd1234_shop_release_s4", {
        **labels, "gitd.process": "release", "gitd.role": "release-task"}, 1, {})
    web = swarm.SwarmUnit("w1", "gitd-abcd1234_shop_web_s4", {
        **labels, "gitd.process": "web", "gitd.role": "service"}, 1, {})
    scheduler.remove([task])
    assert removed == [task] and scheduler.routes.files() == {"route-shop-s4.yml"}
    scheduler.remove([web])
    assert removed == [task, web] and scheduler.routes.files() == set()

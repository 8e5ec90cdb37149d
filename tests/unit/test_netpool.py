"""Subnets from network_pool (issue #21): the setting, the choice of a free
subnet, and the engine creating networks with them (a fake Docker client)."""

import re
from ipaddress import IPv4Network as Net

import docker.errors
import pytest

from gitd.core.config import load_settings
from gitd.core.errors import GitdError
from hooks import netpool
from hooks.engine import Engine

POOL = Net("10.200.0.0/16")


def test_network_pool_default_and_env(tmp_path):
    assert load_settings(tmp_path, environ={}).network_pool == "10.200.0.0/16"
    env = {"GITD_NETWORK_POOL": "172.28.0.0/20"}
    assert load_settings(tmp_path, environ=env).network_pool == "172.28.0.0/20"
    (tmp_path / "gitd.toml").write_text('network_pool = ""\n')  # Docker's default pools
    assert load_settings(tmp_path, environ={}).network_pool == ""


@pytest.mark.parametrize("value, message", [
    ("junk", "is not an IPv4 network"),
    ("10.200.1.0/16", "has host bits set"),
    ("fd00::/64", "is not an IPv4 network"),
    ("10.200.0.0/16;rm -rf /", "is not an IPv4 network"),
    ("10.200.0.0", "is too small"),  # a /32
    ("10.200.0.0/22", "is too small: it must hold at least 16 networks of /25 (a /21 or larger)"),
    ("127.0.0.0/8", "is not inside a private range"),
    ("169.254.0.0/16", "is not inside a private range"),
    ("0.0.0.0/0", "is not inside a private range"),
    ("8.8.0.0/16", "is not inside a private range"),
    ("0.0.0.0/8", "is not inside a private range"),
    ("224.0.0.0/4", "is not inside a private range"),
    ("10.0.0.0/7", "is not inside a private range"),  # spills out of 10/8
])
def test_hostile_network_pools_are_refused(tmp_path, value, message):
    with pytest.raises(GitdError, match="setting network_pool: .*" + re.escape(message)):
        load_settings(tmp_path, environ={"GITD_NETWORK_POOL": value})


def test_free_subnet_takes_the_lowest_free_one():
    assert netpool.free_subnet(POOL, []) == Net("10.200.0.0/25")
    taken = [Net("10.200.0.0/25"), Net("10.200.1.0/25")]
    assert netpool.free_subnet(POOL, taken) == Net("10.200.0.128/25")  # a freed one is reused


def test_free_subnet_skips_anything_overlapping_whatever_its_size():
    taken = [Net("10.200.0.0/24"),  # a bridge made by hand, bigger than a /25
             Net("10.200.1.64/26"),  # a smaller one inside the next /25
             Net("10.200.1.130/32"),  # a host route
             Net("192.168.0.0/16")]  # outside the pool: no matter
    assert netpool.free_subnet(POOL, taken) == Net("10.200.2.0/25")
    assert netpool.free_subnet(POOL, [Net("10.0.0.0/8")]) is None  # a VPN route over all of it


def test_free_subnet_when_the_pool_is_full_or_nearly():
    pool = Net("10.200.0.0/21")
    every = list(pool.subnets(new_prefix=25))
    assert netpool.free_subnet(pool, every) is None
    assert netpool.free_subnet(pool, every[:-1]) == every[-1]
    assert netpool.free_subnet(pool, every[1:]) == every[0]


def test_host_routes_read_proc_net_route(tmp_path):
    routes = tmp_path / "route"
    routes.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default: left out
        "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "wg0\t0000C80A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "odd\tZZZZ\n")
    assert netpool.host_routes(routes) == [Net("172.17.0.0/16"), Net("10.200.0.0/16")]
    assert netpool.host_routes(tmp_path / "missing") == []


def test_engine_subnets_read_every_network_ipv4_only():
    attrs = [{"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}},
             {"Name": "v6", "IPAM": {"Config": [{"Subnet": "fd00::/64"},
                                                {"Subnet": "10.200.0.0/25"}]}},
             {"Name": "host", "IPAM": {"Config": []}},
             {"Name": "none", "IPAM": None}]
    assert netpool.engine_subnets(attrs) == [Net("172.17.0.0/16"), Net("10.200.0.0/25")]


class FakeNetworks:
    """Enough of docker's networks API: refuses overlapping subnets as Docker does."""

    def __init__(self, existing=()):
        self.attrs = [dict(a) for a in existing]
        self.created = []
        self.sneak_in = []  # subnets another process takes just before our next create

    def get(self, name):
        for attrs in self.attrs:
            if attrs["Name"] == name:
                return attrs
        raise docker.errors.NotFound("no such network")

    def create(self, name, ipam=None, **options):
        subnet = Net(ipam["Config"][0]["Subnet"])
        for other in self.sneak_in:
            self.attrs.append({"Name": "other", "IPAM": {"Config": [{"Subnet": str(other)}]}})
        self.sneak_in = []
        for taken in netpool.engine_subnets(self.attrs):
            if taken.overlaps(subnet):
                raise docker.errors.APIError(
                    "409", explanation="Pool overlaps with other one on this address space")
        attrs = {"Name": name, "IPAM": {"Config": [{"Subnet": str(subnet)}]},
                 "Labels": options["labels"], "Driver": options["driver"]}
        self.attrs.append(attrs)
        self.created.append(attrs)
        return attrs


class FakeApi:
    def __init__(self, networks):
        self._networks = networks

    def networks(self):
        return self._networks.attrs


class FakeClient:
    def __init__(self, existing=()):
        self.networks = FakeNetworks(existing)
        self.api = FakeApi(self.networks)


def _engine(monkeypatch, existing=(), pool="10.200.0.0/21", routes=()):
    client = FakeClient(existing)
    monkeypatch.setattr(netpool, "host_routes", lambda: [Net(r) for r in routes])
    return Engine(client, "inst", pool), client.networks


def test_engine_gives_each_new_network_its_own_subnet(monkeypatch):
    engine, networks = _engine(monkeypatch, existing=[
        {"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}},
        {"Name": "by-hand", "IPAM": {"Config": [{"Subnet": "10.200.0.0/25"}]}}],
        routes=["10.200.0.128/25"])
    engine.ensure_network("gitd-inst-app-a", {"gitd.app": "a"})
    engine.ensure_network("gitd-inst-app-b", {"gitd.app": "b"})
    engine.ensure_network("gitd-inst-app-a")  # there already: left as it is
    subnets = [n["IPAM"]["Config"][0]["Subnet"] for n in networks.created]
    assert subnets == ["10.200.1.0/25", "10.200.1.128/25"]
    assert networks.created[0]["Labels"] == {"gitd.instance": "inst", "gitd.app": "a"}


def test_engine_keeps_a_network_made_from_the_defaults(monkeypatch):
    old = {"Name": "gitd-inst-app-a", "IPAM": {"Config": [{"Subnet": "172.18.0.0/16"}]}}
    engine, networks = _engine(monkeypatch, existing=[old])
    assert engine.ensure_network("gitd-inst-app-a") == old
    assert networks.created == []


def test_engine_picks_again_when_another_process_took_the_subnet(monkeypatch):
    engine, networks = _engine(monkeypatch)
    networks.sneak_in = [Net("10.200.0.0/25")]
    engine.ensure_network("gitd-inst-app-a")
    assert networks.created[0]["IPAM"]["Config"][0]["Subnet"] == "10.200.0.128/25"


def test_engine_skips_a_refused_subnet_the_engine_does_not_list_yet(monkeypatch):
    """Another gitd on the same engine holds 10.200.0.0/25 in a network Docker
    does not list yet: that subnet is refused each time, and picking the
    lowest free one again would pick it again."""
    engine, networks = _engine(monkeypatch)
    unlisted = Net("10.200.0.0/25")

    class Refusing(FakeNetworks):
        def create(self, name, ipam=None, **options):
            if Net(ipam["Config"][0]["Subnet"]).overlaps(unlisted):
                raise docker.errors.APIError(
                    "409", explanation="Pool overlaps with other one on this address space")
            return super().create(name, ipam=ipam, **options)

    engine.client.networks = refusing = Refusing()
    engine.client.api = FakeApi(refusing)
    engine.ensure_network("gitd-inst-app-a")
    assert refusing.created[0]["IPAM"]["Config"][0]["Subnet"] == "10.200.0.128/25"


def test_engine_names_the_setting_when_the_pool_is_exhausted(monkeypatch):
    full = [{"Name": f"n{i}", "IPAM": {"Config": [{"Subnet": str(s)}]}}
            for i, s in enumerate(Net("10.200.0.0/21").subnets(new_prefix=25))]
    engine, networks = _engine(monkeypatch, existing=full)
    with pytest.raises(GitdError, match=r"cannot create network gitd-inst-app-a: the network pool "
                                        r"10.200.0.0/21 \(setting network_pool\) has no free /25"):
        engine.ensure_network("gitd-inst-app-a")
    assert networks.created == []


def test_engine_without_a_pool_leaves_subnets_to_docker(monkeypatch):
    calls = []

    class Networks(FakeNetworks):
        def create(self, name, **options):
            calls.append(options)
            return {"Name": name}
    engine, _ = _engine(monkeypatch, pool="")
    engine.client.networks = Networks()
    engine.ensure_network("gitd-inst-app-a")
    assert "ipam" not in calls[0]


@pytest.mark.parametrize("name", ["bridge", "docker_gwbridge"])
def test_a_pool_over_the_engines_bridge_is_refused_at_start(monkeypatch, name):
    bridge = {"Name": name, "IPAM": {"Config": [{"Subnet": "10.200.4.0/24"}]}}
    engine, _ = _engine(monkeypatch, existing=[bridge])
    with pytest.raises(GitdError, match=rf"setting network_pool: 10.200.0.0/21 overlaps the "
                                        rf"engine's {name} network \(10.200.4.0/24\)"):
        engine.check_network_pool()
    other = {"Name": "someones", "IPAM": {"Config": [{"Subnet": "10.200.4.0/24"}]}}
    engine, _ = _engine(monkeypatch, existing=[other])
    engine.check_network_pool()  # any other network only takes its subnets out of the pool

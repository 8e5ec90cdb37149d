"""Many apps on one engine (issue #21): more networks than Docker's default
address pools hold (about 30), each app on a subnet of gitd's network pool,
apps still cut off from each other."""

import ipaddress
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import docker.types
import pytest

from hooks.specs import app_network
from tests.e2e.conftest import web_app
from tests.e2e.harness import make_repo, unique_app

pytestmark = pytest.mark.e2e

APPS = 40
POOL = "10.231.0.0/16"  # pools of these tests' own, apart from other tests' networks
FULL_POOL = "10.232.0.0/21"  # 16 /25s
PARALLEL = 4


def _subnet(docker_client, name: str) -> ipaddress.IPv4Network:
    config = docker_client.networks.get(name).attrs["IPAM"]["Config"]
    return ipaddress.IPv4Network(config[0]["Subnet"])


def _http_from(container, address: str, port: int = 5000) -> str:
    """What `container` gets for GET / from address:port over the network."""
    script = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} {port}; true"
    return container.exec_run(["sh", "-c", script]).output.decode(errors="replace")


def _address(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def test_more_apps_than_the_default_pools_hold_deploy_serve_and_stay_apart(
        own_gitd, docker_client, tmp_path):
    own_gitd.start(extra_env={"GITD_NETWORK_POOL": POOL})
    apps = [unique_app(f"s{i}") for i in range(APPS)]

    env = own_gitd.git_env()  # written once: the harness rewrites its ssh config on each call

    def deploy(app: str) -> str:
        repo = make_repo(tmp_path / app, web_app(f"page of {app}"))
        pushed = subprocess.run(["git", "push", own_gitd.remote(app), "main"], cwd=repo, env=env,
                                capture_output=True, text=True, timeout=300)
        assert pushed.returncode == 0, pushed.stderr
        return app

    for app in apps:
        created = own_gitd.ssh("apps:create", app)
        assert created.returncode == 0, created.stderr
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(deploy, apps))

    for app in apps:
        assert own_gitd.get(own_gitd.host(app)) == (200, f"page of {app}\n")
    networks = {app: app_network(own_gitd.instance, app) for app in apps}
    subnets = {app: _subnet(docker_client, networks[app]) for app in apps}
    assert len(set(subnets.values())) == APPS
    assert all(s.prefixlen == 25 and s.subnet_of(ipaddress.IPv4Network(POOL))
               for s in subnets.values()), subnets

    # each app reaches its own container over its network, never another app's
    first, last = apps[0], apps[-1]
    mine = own_gitd.live_containers(docker_client, first)[0]
    theirs = own_gitd.live_containers(docker_client, last)[0]
    assert f"page of {first}" in _http_from(mine, _address(mine, networks[first]))
    assert f"page of {last}" in _http_from(theirs, _address(theirs, networks[last]))
    assert f"page of {last}" not in _http_from(mine, _address(theirs, networks[last]))
    assert f"page of {first}" not in _http_from(theirs, _address(mine, networks[first]))

    # a destroyed app's subnet goes back to the pool and the next network gets it
    freed = subnets[apps[1]]
    destroyed = own_gitd.ssh("apps:destroy", apps[1], "--force")
    assert destroyed.returncode == 0, destroyed.stderr
    assert docker_client.networks.list(names=[networks[apps[1]]]) == []
    newcomer = unique_app("s-new")
    assert own_gitd.ssh("apps:create", newcomer).returncode == 0
    deploy(newcomer)
    assert _subnet(docker_client, app_network(own_gitd.instance, newcomer)) == freed
    assert own_gitd.get(own_gitd.host(newcomer)) == (200, f"page of {newcomer}\n")


def test_a_full_pool_fails_the_push_naming_the_setting_and_a_freed_subnet_is_used(
        own_gitd, docker_client, tmp_path):
    own_gitd.start(extra_env={"GITD_NETWORK_POOL": FULL_POOL})
    app = unique_app("full")
    assert own_gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / app, web_app("fits"))
    holders = []
    try:  # every subnet of the pool held by a network that is not gitd's
        for n, subnet in enumerate(ipaddress.IPv4Network(FULL_POOL).subnets(new_prefix=25)):
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))])
            holders.append(docker_client.networks.create(
                f"{own_gitd.instance}-holder-{n}", ipam=ipam, labels={"gitd.test": "netpool"}))
        refused = own_gitd.push(repo, app)
        assert refused.returncode != 0
        assert (f"the network pool {FULL_POOL} (setting network_pool) has no free /25 left"
                in refused.stderr), refused.stderr
        assert not docker_client.networks.list(names=[app_network(own_gitd.instance, app)])
        freed = _subnet(docker_client, holders[5].name)
        holders.pop(5).remove()
        pushed = own_gitd.push(repo, app)
        assert pushed.returncode == 0, pushed.stderr
        assert _subnet(docker_client, app_network(own_gitd.instance, app)) == freed
        assert own_gitd.get(own_gitd.host(app)) == (200, "fits\n")
    finally:
        for network in holders:
            network.remove()


def test_a_pool_over_the_engines_bridge_is_refused_at_start(own_gitd, docker_client):
    bridge = _subnet(docker_client, "bridge")
    pool = bridge if bridge.prefixlen <= 21 else bridge.supernet(new_prefix=21)
    with pytest.raises(RuntimeError, match=re.escape(
            f"setting network_pool: {pool} overlaps the engine's bridge network ({bridge})")):
        own_gitd.start(extra_env={"GITD_NETWORK_POOL": str(pool)})

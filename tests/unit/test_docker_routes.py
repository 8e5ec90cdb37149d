"""The docker scheduler's route files (hooks.docker_routes), without services."""

from __future__ import annotations

import json
import time

from gitd.core.config import Settings
from hooks import router, scheduler
from hooks.docker_routes import (FileRoutes, LabelRoutes, following, parse_route_file_name,
                                  route_file_name)
from hooks.scheduler import DockerScheduler
from hooks.specs import route_key_of, web_deploys
from tests.fakes import Container, Engine, Progress


def test_a_route_file_name_round_trips_even_with_dashes_and_a_component():
    for key, seq in (("shop", 7), ("my-shop-s2", 12), ("shop_api", 1)):
        name = route_file_name(key, seq)
        assert name.startswith("bridge-") and name.endswith(".yml")
        assert parse_route_file_name(name) == (key, seq)
    for other in ("route-shop-s1.yml", "bridge-shop.yml", "bridge-shop-s1.tmp", "bridge--sx.yml",
                  "certs.yml"):
        assert parse_route_file_name(other) is None


def test_the_route_key_of_a_container_names_its_component():
    assert route_key_of({"gitd.app": "shop"}) == "shop"
    assert route_key_of({"gitd.app": "shop", "gitd.component": "api"}) == "shop_api"


def test_the_deploys_of_web_units_only_and_of_a_number_seq():
    units = [Container("a", {"gitd.app": "shop", "gitd.seq": "3", "gitd.process": "web"}),
             Container("b", {"gitd.app": "shop", "gitd.seq": "3", "gitd.process": "web"}),
             Container("c", {"gitd.app": "shop", "gitd.component": "api", "gitd.seq": "4",
                             "gitd.process": "web"}),
             Container("d", {"gitd.app": "shop", "gitd.seq": "5", "gitd.process": "worker"}),
             Container("e", {"gitd.app": "shop", "gitd.seq": "x", "gitd.process": "web"})]
    assert web_deploys(units) == {("shop", 3), ("shop_api", 4)}



def _failed_deploy_units():
    return [Container("gitd-x.shop.frontend.web.1.s3", {"gitd.app": "shop", "gitd.component": "frontend",
                                                        "gitd.seq": "3", "gitd.process": "web"}),
            Container("gitd-x.shop.worker.1.s3", {"gitd.app": "shop", "gitd.seq": "3",
                                                  "gitd.process": "worker"})]


def test_a_failed_deploy_returns_only_once_traefik_dropped_the_web_containers_it_had_taken_in(
        tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    held = {"answers": 3}
    asked = []

    def get_json(url, timeout=2.0):
        asked.append(url)
        held["answers"] -= 1
        return {"serverStatus": {"http://172.18.0.5:3000": "UP"}} if held["answers"] >= 0 else None

    monkeypatch.setattr(router, "_get_json", get_json)
    progress = Progress()
    scheduler.confirm_unrouted(DockerScheduler(Engine([]), settings), settings,
                               _failed_deploy_units(), progress)
    assert held["answers"] < 0  # asked until Traefik no longer held it
    assert all("/api/http/services/shop_frontend-s3@" in url for url in asked)
    assert progress.lines and "no longer routes shop_frontend-s3" in progress.lines[0]
    assert progress.warnings == []


def test_a_failed_deploy_traefik_never_routed_costs_one_look(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    asked = []
    monkeypatch.setattr(router, "_get_json", lambda url, timeout=2.0: asked.append(url))
    progress = Progress()
    scheduler.confirm_unrouted(DockerScheduler(Engine([]), settings), settings,
                               _failed_deploy_units(), progress)
    assert sorted(u.rsplit("@", 1)[1] for u in asked) == ["file"]
    assert progress.lines == [] and progress.warnings == []


def test_a_route_traefik_keeps_is_warned_about_not_waited_on_forever(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    monkeypatch.setattr(router, "_get_json", lambda url, timeout=2.0: {"serverStatus": {}})
    progress = Progress()
    started = time.monotonic()
    scheduler.confirm_unrouted(DockerScheduler(Engine([]), settings), settings,
                               _failed_deploy_units(), progress, timeout=0.3)
    assert time.monotonic() - started < 2
    assert progress.warnings and "still routes shop_frontend-s3" in progress.warnings[0]


def test_a_route_file_carries_a_container_only_at_its_published_port_now(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    settings.dynamic_dir.mkdir(parents=True)
    web = Container("gitd-x.shop.web.1.s3", {"gitd.app": "shop", "gitd.seq": "3",
                                              "gitd.process": "web"},
                    attrs={"Config": {"Env": ["PORT=5000"]}, "NetworkSettings": {
                        "Ports": {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "4000"}]}}})
    routes = DockerScheduler(Engine([web]), settings).routes
    assert not routes.carries(web)  # no route file
    routes.publish("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:4000"}, None)
    assert routes.carries(web)
    web.attrs["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostPort"] = "4001"  # restarted elsewhere
    assert not routes.carries(web)
    web.labels["gitd.seq"] = "x"
    assert not routes.carries(web)


def test_ps_calls_a_starting_container_healthy_once_gitds_check_had_it_routed(tmp_path, monkeypatch):
    """Docker's first check of a routes_by_file container comes `health_interval`
    (30 s) after its start: until then gitd's run of the check is the one
    that counts, and ps, apps:info and the dashboard say so."""
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    settings.dynamic_dir.mkdir(parents=True)
    web = Container("gitd-x.shop.web.1.s3", {"gitd.app": "shop", "gitd.seq": "3",
                                              "gitd.process": "web", "gitd.role": "service"},
                    attrs={"Config": {"Env": ["PORT=5000"]}, "State": {"Health": {"Status": "starting"}},
                           "NetworkSettings": {"Ports": {"5000/tcp": [{"HostIp": "127.0.0.1",
                                                                       "HostPort": "4000"}]}}})
    docker = DockerScheduler(Engine([web]), settings)
    monkeypatch.setattr(docker._exits, "start", lambda: None)
    assert [r["health"] for r in docker.dynos("shop")] == ["starting"]  # not probed by gitd yet
    docker.routes.publish("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:4000"}, None)
    assert [r["health"] for r in docker.dynos("shop")] == ["healthy"]
    assert [r["health"] for r in docker.dynos_of(["shop"])["shop"]] == ["healthy"]
    web.attrs["RestartCount"] = 1  # crashed and started again since, at the same port
    assert [r["health"] for r in docker.dynos("shop")] == ["starting"]
    web.attrs["RestartCount"] = 0
    web.attrs["State"]["Health"]["Status"] = "unhealthy"  # Docker's own check failed since
    assert [r["health"] for r in docker.dynos("shop")] == ["unhealthy"]


def _web(name: str, seq: int, host_port: int, health: str = "starting", status: str = "running",
         port: int = 5000) -> Container:
    labels = {"gitd.app": "shop", "gitd.seq": str(seq), "gitd.process": "web",
              "gitd.role": "service", router.port_label("shop", seq): str(port)}
    return Container(name, labels, status, {
        "State": {"Status": status, "Health": {"Status": health}},
        "Config": {"Env": [f"PORT={port}"]},
        "NetworkSettings": {"Ports": {f"{port}/tcp": [{"HostIp": "127.0.0.1",
                                                       "HostPort": str(host_port)}]}}})


def _file_routes(tmp_path, containers) -> FileRoutes:
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    routes = DockerScheduler(Engine(containers), settings).routes
    assert isinstance(routes, FileRoutes)
    return routes


def _servers(routes, seq: int = 3) -> list[str]:
    config = json.loads((routes.dir / route_file_name("shop", seq)).read_text())
    return [s["url"] for s in config["http"]["services"][f"shop-s{seq}"]["loadBalancer"]["servers"]]


def test_a_managed_traefik_routes_by_files_that_stay_an_external_one_by_labels(tmp_path):
    managed = DockerScheduler(Engine([]), Settings(data_dir=tmp_path, traefik_api_port=1))
    assert isinstance(managed.routes, FileRoutes) and managed.routes_by_file
    assert managed.routes.providers == ("file",)
    external = DockerScheduler(Engine([]), Settings(data_dir=tmp_path, traefik="external"))
    assert type(external.routes) is LabelRoutes and not external.routes_by_file
    external.routes.publish("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:1"}, None)
    assert not list(tmp_path.rglob("bridge-*.yml"))  # the labels carry them
    managed.routes.publish("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:1"}, None)
    path = managed.routes.dir / route_file_name("shop", 3)
    time.sleep(0.2)
    assert path.exists()  # no hand-over: the file is the route
    managed.routes.unpublish("shop", 3)
    assert not path.exists()


def test_a_deploys_servers_follow_its_containers():
    a, b = _web("a", 3, 4000), _web("b", 3, 4001, health="healthy")
    listed = Engine([a, b]).listed()
    mine = {"http://127.0.0.1:4000"}
    # routed already and booting: stays; healthy by Docker: comes in
    assert following(mine, listed, "shop", 3) == {"http://127.0.0.1:4000",
                                                  "http://127.0.0.1:4001"}
    # a die, stop or kill seen since: leaves even before the listing says so, healthy or not
    assert following(mine, listed, "shop", 3, left={"a", "b"}) == set()
    # started again since it was routed: out until probed, or healthy by Docker
    assert following(mine, listed, "shop", 3, restarted={"a", "b"}) == {"http://127.0.0.1:4001"}
    # no health check (checks:disable): running is serving
    c = _web("c", 3, 4004)
    del c.attrs["State"]["Health"]
    assert following(set(), Engine([c]).listed(), "shop", 3) == {"http://127.0.0.1:4004"}
    # not routed yet and not healthy by Docker (a deploy still probing it): stays out
    assert following(set(), Engine([a]).listed(), "shop", 3) == set()
    for gone in (_web("a", 3, 4000, status="exited"), _web("a", 3, 4000, health="unhealthy")):
        assert following(mine, Engine([gone]).listed(), "shop", 3) == set()
    # a port other than the deploy's, or published beyond loopback: never a server
    odd = _web("c", 3, 4002, health="healthy", port=6000)
    odd.labels[router.port_label("shop", 3)] = "5000"
    wide = _web("d", 3, 4003, health="healthy")
    wide.attrs["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostIp"] = "0.0.0.0"
    assert following(set(), Engine([odd, wide]).listed(), "shop", 3) == set()


def test_the_follower_rewrites_only_files_that_are_there_and_not_through_a_symlink(tmp_path):
    a, b = _web("a", 3, 4000), _web("b", 3, 4001)
    routes = _file_routes(tmp_path, [a, b])
    routes.publish("shop", 3, router.as_routes(["shop.test"]),
                   {"http://127.0.0.1:4000", "http://127.0.0.1:4001"}, None)
    time.sleep(0.01)  # a look after the deploy wrote it
    assert routes.sync() == 0  # as the deploy wrote it
    routes.seen({"Action": "kill", "id": "b", "Actor": {"Attributes": {"signal": "15"}}})
    assert not routes.carries(b)  # out at the next look
    assert routes.sync() == 1 and _servers(routes) == ["http://127.0.0.1:4000"]
    routes.seen({"Action": "start", "id": "b"})  # started again
    assert routes.sync() == 0  # booting: out until probed
    b.attrs["State"]["Health"]["Status"] = "healthy"  # Docker's check passed
    assert routes.sync() == 1 and _servers(routes) == ["http://127.0.0.1:4000",
                                                       "http://127.0.0.1:4001"]
    a.status = "exited"
    assert routes.sync() == 1 and _servers(routes) == ["http://127.0.0.1:4001"]
    # a deploy with no file (not routed yet, or retired) gets none
    routes.engine.live.append(_web("c", 4, 4002, health="healthy"))
    routes.sync()
    assert not (routes.dir / route_file_name("shop", 4)).exists()
    # a file whose deploy has no container left (a stopped gitd's) goes
    routes.publish("shop", 9, router.as_routes(["shop.test"]), {"http://127.0.0.1:9"}, None)
    time.sleep(0.01)
    assert routes.sync() == 1 and not (routes.dir / route_file_name("shop", 9)).exists()
    # a symlink in the watched dir is not a route file gitd follows
    target = tmp_path / "elsewhere.json"
    target.write_text((routes.dir / route_file_name("shop", 3)).read_text())
    (routes.dir / route_file_name("shop", 3)).unlink()
    (routes.dir / route_file_name("shop", 3)).symlink_to(target)
    a.status = "running"
    assert routes.sync() == 0 and "4000" not in target.read_text()


def test_a_deploy_publishing_a_container_the_follower_had_dropped_routes_it_again(tmp_path):
    a = _web("a", 3, 4000)
    routes = _file_routes(tmp_path, [a])
    routes.publish("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:4000"}, None)
    time.sleep(0.01)
    routes.sync()
    routes.seen({"Action": "die", "id": "a"})  # crashed; the engine starts it again at the same port
    routes.seen({"Action": "start", "id": "a"})
    assert not routes.carries(a)  # the restart watch probes it
    assert routes.sync() == 1 and _servers(routes) == []
    assert routes.sync() == 0 and _servers(routes) == []  # booting: stays out
    # the restart watch probed it and publishes the deploy again
    routes.publish("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:4000"}, None)
    time.sleep(0.01)
    assert routes.sync() == 0 and _servers(routes) == ["http://127.0.0.1:4000"]
    assert routes.carries(a)


def test_a_signal_that_does_not_end_the_app_keeps_it_routed_and_one_with_no_check_comes_back(
        tmp_path):
    a = _web("a", 3, 4000, health="healthy")
    routes = _file_routes(tmp_path, [a])
    routes.publish("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:4000"}, None)
    time.sleep(0.01)
    routes.sync()
    routes.seen({"Action": "kill", "id": "a", "Actor": {"Attributes": {"signal": "1"}}})  # HUP
    assert routes.sync() == 0 and _servers(routes) == ["http://127.0.0.1:4000"]
    # stopping: out though Docker still calls it healthy
    routes.seen({"Action": "kill", "id": "a", "Actor": {"Attributes": {"signal": "15"}}})
    assert routes.sync() == 1 and _servers(routes) == []
    # checks:disable: no health check; started again, it serves as soon as it runs
    del a.attrs["State"]["Health"]
    routes.seen({"Action": "start", "id": "a"})
    assert routes.sync() == 1 and _servers(routes) == ["http://127.0.0.1:4000"]


def test_a_look_that_began_before_a_deploy_wrote_its_file_leaves_the_file_to_the_next(tmp_path):
    a = _web("a", 3, 4000)
    routes = _file_routes(tmp_path, [])  # the listing: before the deploy's container existed
    listed = routes.engine.listed

    def publish_meanwhile(*args, **kwargs):
        found = listed(*args, **kwargs)
        routes.engine.live.append(a)
        routes.publish("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:4000"}, None)
        return found

    routes.engine.listed = publish_meanwhile
    assert routes.sync() == 0 and _servers(routes) == ["http://127.0.0.1:4000"]
    routes.engine.listed = listed
    assert routes.sync() == 0 and _servers(routes) == ["http://127.0.0.1:4000"]

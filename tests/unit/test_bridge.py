"""Bridge routes of the docker scheduler (hooks.scheduler), without services."""

from __future__ import annotations

import json
import time

from gitd.core.config import Settings
from hooks import bridges, router, scheduler
from hooks.bridges import bridge_file_name, parse_bridge_name
from hooks.scheduler import DockerScheduler
from hooks.specs import route_key_of, web_deploys
from tests.fakes import Container, Engine, Progress


def test_a_bridge_file_name_round_trips_even_with_dashes_and_a_component():
    for key, seq in (("shop", 7), ("my-shop-s2", 12), ("shop_api", 1)):
        name = bridge_file_name(key, seq)
        assert name.startswith("bridge-") and name.endswith(".yml")
        assert parse_bridge_name(name) == (key, seq)
    for other in ("route-shop-s1.yml", "bridge-shop.yml", "bridge-shop-s1.tmp", "bridge--sx.yml",
                  "certs.yml"):
        assert parse_bridge_name(other) is None


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



def _bridge(tmp_path, monkeypatch, running: bool, routed: dict):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1, health_interval=0.5)
    settings.dynamic_dir.mkdir(parents=True)
    monkeypatch.setattr(router, "has_file_provider", lambda api: True)
    monkeypatch.setattr(router, "routed_servers", lambda *a, **k: routed)
    monkeypatch.setattr(bridges, "BRIDGE_WAIT", 1.0)  # and two checks 0.5 s apart
    docker = web = Container("gitd-x.shop.web.1.s3", {"gitd.app": "shop", "gitd.seq": "3", "gitd.process": "web"})
    docker = DockerScheduler(Engine([web] if running else []), settings)
    routes = router.as_routes(["shop.test"])
    docker.routes.publish("shop", 3, routes, {"http://127.0.0.1:4000"}, None)
    return settings.dynamic_dir / bridge_file_name("shop", 3)


def _gone_within(path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def test_a_bridge_routes_the_new_servers_and_goes_once_the_docker_provider_has_them(
        tmp_path, monkeypatch):
    path = _bridge(tmp_path, monkeypatch, running=True, routed={"http://127.0.0.1:4000": "UP"})
    assert _gone_within(path, 2)


def test_a_bridge_stays_while_the_docker_provider_has_not_taken_over(tmp_path, monkeypatch):
    path = _bridge(tmp_path, monkeypatch, running=True, routed={})
    config = json.loads(path.read_text())["http"]
    assert [s["url"] for s in config["services"]["shop-s3"]["loadBalancer"]["servers"]] == [
        "http://127.0.0.1:4000"]
    assert set(config["routers"]) == {"shop-s3"}
    time.sleep(1)
    assert path.exists()
    assert _gone_within(path, 3)  # takeover_wait: it does not outlive a deploy that never settles


def test_a_bridge_waits_for_two_of_dockers_checks_at_the_live_interval(tmp_path):
    """Docker checks a bridged deploy only every health_interval: its first
    check, which lets the docker provider route it, may come that late."""
    def wait(interval):
        return bridges.LabelRoutes(None, Settings(data_dir=tmp_path,
                                                  health_interval=interval)).takeover_wait
    assert wait(30) == bridges.BRIDGE_WAIT + 60
    assert wait(3600) == bridges.BRIDGE_WAIT + 7200
    assert wait(0) == bridges.BRIDGE_WAIT + 1


def test_a_bridge_goes_with_its_containers(tmp_path, monkeypatch):
    path = _bridge(tmp_path, monkeypatch, running=False, routed={})
    assert _gone_within(path, 1)


def _failed_deploy_units():
    return [Container("gitd-x.shop.frontend.web.1.s3", {"gitd.app": "shop", "gitd.component": "frontend",
                                                        "gitd.seq": "3", "gitd.process": "web"}),
            Container("gitd-x.shop.worker.1.s3", {"gitd.app": "shop", "gitd.seq": "3",
                                                  "gitd.process": "worker"})]


def test_a_failed_deploy_returns_only_once_traefik_dropped_the_web_containers_it_had_taken_in(
        tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    monkeypatch.setattr(router, "has_file_provider", lambda api: True)
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


def test_a_failed_deploy_traefik_never_routed_costs_one_look_per_provider(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    monkeypatch.setattr(router, "has_file_provider", lambda api: True)
    asked = []
    monkeypatch.setattr(router, "_get_json", lambda url, timeout=2.0: asked.append(url))
    progress = Progress()
    scheduler.confirm_unrouted(DockerScheduler(Engine([]), settings), settings,
                               _failed_deploy_units(), progress)
    assert sorted(u.rsplit("@", 1)[1] for u in asked) == ["docker", "file"]
    assert progress.lines == [] and progress.warnings == []


def test_a_route_traefik_keeps_is_warned_about_not_waited_on_forever(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    monkeypatch.setattr(router, "has_file_provider", lambda api: True)
    monkeypatch.setattr(router, "_get_json", lambda url, timeout=2.0: {"serverStatus": {}})
    progress = Progress()
    started = time.monotonic()
    scheduler.confirm_unrouted(DockerScheduler(Engine([]), settings), settings,
                               _failed_deploy_units(), progress, timeout=0.3)
    assert time.monotonic() - started < 2
    assert progress.warnings and "still routes shop_frontend-s3" in progress.warnings[0]


def test_bridges_staged_at_start_are_handed_over_from_one_look_at_traefik(tmp_path, monkeypatch):
    """Every staged bridge is decided from one listing of Traefik's routers
    and services (paged) and one engine listing per look, whatever their
    number: not requests per app while Traefik is still catching up."""
    import http.server
    import threading
    import urllib.parse

    asked = []
    up = {f"app{i}": i % 2 == 0 for i in range(6)}  # even apps: taken over by the docker provider

    class Traefik(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            asked.append(url.path)
            page = int(urllib.parse.parse_qs(url.query)["page"][0])
            if url.path.endswith("/routers"):
                rows = [{"name": f"{a}-s1@docker", "status": "enabled"} for a in up if up[a]]
            else:
                rows = [{"name": f"{a}-s1@docker", "serverStatus": {f"http://127.0.0.1:{4000 + i}": "UP"}}
                        for i, a in enumerate(up) if up[a]]
            body = json.dumps(rows if page == 1 else []).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Traefik)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(data_dir=tmp_path, instance="x", health_interval=0,
                            traefik_api_port=server.server_address[1])
        settings.dynamic_dir.mkdir(parents=True)
        monkeypatch.setattr(router, "has_file_provider", lambda api: True)
        monkeypatch.setattr(bridges, "STAGED_POLL", 0.05)
        monkeypatch.setattr(bridges, "BRIDGE_WAIT", 1.0)
        # the even apps run (Traefik routes them: taken over), the odd ones stopped (their bridge goes)
        web = [Container(f"gitd-x.{a}.web.1.s1", {"gitd.app": a, "gitd.seq": "1",
                                                 "gitd.process": "web"}) for a in up if up[a]]
        engine = Engine(web)
        listings = []
        listed = engine.listed
        engine.listed = lambda *a, **k: listings.append(a) or listed(*a, **k)
        docker = DockerScheduler(engine, settings)
        paths = [docker.routes._write_bridge(a, 1, router.as_routes([f"{a}.test"]),
                                             {f"http://127.0.0.1:{4000 + i}"}, None)
                 for i, a in enumerate(up)]
        started = time.monotonic()
        docker.routes._hand_over_all(paths)
        assert time.monotonic() - started < 1.0  # decided at the first look, not at BRIDGE_WAIT
        assert not any(p.exists() for p in paths)
        assert asked == ["/api/http/routers", "/api/http/services"] and len(listings) == 1
    finally:
        server.shutdown()


def test_a_bridge_carries_a_container_only_at_its_published_port_now(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    settings.dynamic_dir.mkdir(parents=True)
    monkeypatch.setattr(router, "has_file_provider", lambda api: True)
    web = Container("gitd-x.shop.web.1.s3", {"gitd.app": "shop", "gitd.seq": "3",
                                              "gitd.process": "web"},
                    attrs={"Config": {"Env": ["PORT=5000"]}, "NetworkSettings": {
                        "Ports": {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "4000"}]}}})
    routes = DockerScheduler(Engine([web]), settings).routes
    assert not routes.carries(web)  # no bridge
    routes._write_bridge("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:4000"}, None)
    assert routes.carries(web)
    web.attrs["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostPort"] = "4001"  # restarted elsewhere
    assert not routes.carries(web)
    web.labels["gitd.seq"] = "x"
    assert not routes.carries(web)


def test_ps_calls_a_starting_container_healthy_once_gitds_check_had_it_bridged(tmp_path, monkeypatch):
    """Docker's first check of a bridged container comes `health_interval`
    (30 s) after its start: until then gitd's run of the check is the one
    that counts, and ps, apps:info and the dashboard say so."""
    settings = Settings(data_dir=tmp_path, instance="x", traefik_api_port=1)
    settings.dynamic_dir.mkdir(parents=True)
    monkeypatch.setattr(router, "has_file_provider", lambda api: True)
    web = Container("gitd-x.shop.web.1.s3", {"gitd.app": "shop", "gitd.seq": "3",
                                              "gitd.process": "web", "gitd.role": "service"},
                    attrs={"Config": {"Env": ["PORT=5000"]}, "State": {"Health": {"Status": "starting"}},
                           "NetworkSettings": {"Ports": {"5000/tcp": [{"HostIp": "127.0.0.1",
                                                                       "HostPort": "4000"}]}}})
    docker = DockerScheduler(Engine([web]), settings)
    monkeypatch.setattr(docker._exits, "start", lambda: None)
    assert [r["health"] for r in docker.dynos("shop")] == ["starting"]  # not probed by gitd yet
    docker.routes._write_bridge("shop", 3, router.as_routes(["shop.test"]), {"http://127.0.0.1:4000"}, None)
    assert [r["health"] for r in docker.dynos("shop")] == ["healthy"]
    assert [r["health"] for r in docker.dynos_of(["shop"])["shop"]] == ["healthy"]
    web.attrs["RestartCount"] = 1  # crashed and started again since, at the same port
    assert [r["health"] for r in docker.dynos("shop")] == ["starting"]
    web.attrs["RestartCount"] = 0
    web.attrs["State"]["Health"]["Status"] = "unhealthy"  # Docker's own check failed since
    assert [r["health"] for r in docker.dynos("shop")] == ["unhealthy"]

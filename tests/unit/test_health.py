"""Health over an app's life (issue #29): probe intervals, what a failing
check says, the 503 routes, the state in words, the restart backoff."""

from __future__ import annotations

from hooks import checks, health, router
from hooks.health import MAX_BACKOFF, HealthWatcher
from tests.fakes import Engine

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 10001        0 1 1
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000 10001        0 2 1
   2: 0B00007F:98DF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 0
   1: garbage:ZZZZ 0 0A
"""


def test_listening_ports_are_read_from_proc_net_tcp_and_tcp6():
    # 0BB8 = 3000 (v4, LISTEN), 1F90 = 8080 established (not listening), 1F40 = 8000 (v6);
    # Docker's DNS server on 127.0.0.11 is not the app
    assert checks.parse_listening(PROC_NET_TCP) == {3000, 8000}
    assert checks.parse_listening("") == set()


def test_a_wrong_port_is_told_in_words_and_the_right_one_is_not():
    said = checks.wrong_port({3000}, 5000)
    assert said.startswith("nothing listens on PORT=5000; the app listens on 3000")
    assert "config:set PORT=3000" in said
    assert checks.wrong_port({5000, 3000}, 5000) is None
    assert checks.wrong_port(None, 5000) is None  # could not look: say nothing
    assert checks.wrong_port(set(), 5000) is None  # still booting
    assert "nor on any other port" in checks.wrong_port(set(), 5000, booting=True)


def test_an_answer_is_told_apart_from_no_answer():
    assert checks.answered("GET / -> HTTP/1.1 500 Internal Server Error")
    assert not checks.answered("GET / -> nc: can't connect to remote host (127.0.0.1): Connection refused")
    assert not checks.answered("GET / -> no answer on port 5000")


def test_the_live_interval_is_held_within_bounds():
    assert checks.live_interval(30) == 30.0
    assert checks.live_interval("0") == checks.FAST_INTERVAL
    assert checks.live_interval(1e12) == checks.MAX_INTERVAL
    for odd in ("nan", "word", None):
        assert checks.live_interval(odd) == 30.0
    assert checks.http_every(30) == 60 and checks.http_every(0) == 1
    spec = checks.docker_healthcheck(checks.HealthCheck(), 5000, checks.http_every(30))
    assert spec["interval"] == checks.SECOND // 2  # Docker's first probe routes a container
    assert '[ "$n" -lt 60 ]' in spec["test"][-1]


def test_docker_checks_a_container_gitd_probes_itself_only_every_health_interval():
    gated = checks.web_healthcheck(checks.HealthCheck(), 5000, 30, gated_by_gitd=True)
    assert gated["interval"] == 30 * checks.SECOND
    assert "nc -w" in gated["test"][-1] and "-lt" not in gated["test"][-1]  # HTTP every time
    assert gated["start_period"] == 60 * checks.SECOND
    ungated = checks.web_healthcheck(checks.HealthCheck(), 5000, 30, gated_by_gitd=False)
    assert ungated == checks.docker_healthcheck(checks.HealthCheck(), 5000, 60)
    assert checks.web_healthcheck(checks.HealthCheck(), 5000, "0", True)["interval"] == \
        checks.SECOND // 2  # held within bounds
    assert checks.web_healthcheck(checks.HealthCheck(), 5000, 1e9, True)["interval"] == \
        int(checks.MAX_INTERVAL) * checks.SECOND


def test_a_check_docker_runs_rarely_is_not_waited_for():
    from tests.fakes import Container

    def container(interval):
        return Container("c", {}, attrs={"Config": {"Healthcheck": {"Interval": interval}}})
    assert checks.runs_often(container(checks.SECOND // 2))
    assert checks.runs_often(container(None))
    assert not checks.runs_often(container(30 * checks.SECOND))


def _run_probe(script: str, tmp_path, answer: bytes | None):
    """The probe under a real busybox sh, against a loopback server that
    answers `answer` (None: nothing listens). Returns (status, output,
    requests the server saw)."""
    import socket
    import subprocess
    if answer is None:  # nothing listens on the port at all
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        port, requests, stop = server.getsockname()[1], [], server.close
    else:
        port, requests, stop = _answering(answer)
    local = (script.replace(checks.PROBE_PATH, "/bin/busybox")
             .replace(checks.PROBE_STATE, str(tmp_path / "state"))
             .replace(" 5000", f" {port}").replace("port 5000", f"port {port}"))
    try:
        done = subprocess.run(["/bin/busybox", "sh", "-c", local], capture_output=True,
                              text=True, timeout=20)
    finally:
        stop()
    return done.returncode, done.stdout.strip(), len(requests)


def test_a_live_probe_asks_over_http_only_every_nth_run(tmp_path):
    script = checks.probe_script(checks.HealthCheck(timeout=1), 5000, every=3)
    ok = b"HTTP/1.0 200 OK\r\n\r\nok"
    assert _run_probe(script, tmp_path, ok)[::2] == (0, 1)  # nothing passed yet: HTTP
    for _ in range(2):  # then connects only
        status, output, requests = _run_probe(script, tmp_path, ok)
        assert (status, requests) == (0, 0) and "accepts connections" in output
    assert _run_probe(script, tmp_path, ok)[::2] == (0, 1)  # the third: HTTP again
    # an app that answers 500 fails at its next HTTP check, and every run
    # after it asks again until one passes
    (tmp_path / "state").write_text("3")
    sick = b"HTTP/1.0 500 Sick\r\n\r\n"
    for _ in range(2):
        status, output, requests = _run_probe(script, tmp_path, sick)
        assert (status, requests) == (1, 1) and "500 Sick" in output
    # a port that stops listening fails at once, whatever the count
    (tmp_path / "state").write_text("1")
    assert _run_probe(script, tmp_path, None)[0] == 1


def test_the_503_routes_sit_just_below_every_deploy_of_their_path():
    routes = [router.HostRoute("shop.test"), router.HostRoute("x.test", "/api")]
    config = router.fallback_config({"shop": routes, "idle": []}, "web", "websecure")
    routers = config["http"]["routers"]
    assert set(routers) == {"gitd-fallback-shop", "gitd-fallback-shop-tls",
                            "gitd-fallback-shop-p1", "gitd-fallback-shop-p1-tls"}
    root, api = routers["gitd-fallback-shop"], routers["gitd-fallback-shop-p1"]
    assert root["rule"] == "Host(`shop.test`)" and root["priority"] == router.priority(1, "/") - 2
    assert router.priority(1, "/api") > api["priority"] > router.priority(10**6, "/")
    assert routers["gitd-fallback-shop-tls"]["tls"] == {}
    assert config["http"]["services"] == {"gitd-fallback": {"loadBalancer": {"servers": []}}}
    assert router.fallback_config({"idle": []}) == {}


def _row(state="running", health_status="healthy", seq=4, kind="web", role="service"):
    return {"name": f"{kind}.1", "type": kind, "role": role, "seq": seq, "state": state,
            "health": health_status}


def test_the_app_state_says_whether_it_serves():
    assert health.app_state([], None, False) == "not deployed"
    assert health.app_state([_row()], 4, True).startswith("stopped")
    assert health.app_state([_row()], 4, False) == "running"
    assert health.app_state([_row(health_status=None)], 4, False) == "running"
    assert health.app_state([_row(health_status="starting")], 4, False) == "starting"
    assert health.app_state([_row(health_status="unhealthy")], 4, False).startswith(
        "unhealthy: no healthy web process (web.1)")
    # an old deploy's healthy container draining does not make the live one serve
    assert health.app_state([_row(seq=3), _row(health_status="unhealthy")], 4, False).startswith(
        "unhealthy")
    assert health.app_state([_row(kind="worker")], 4, False).startswith("web scaled to 0")


class _Container:
    def __init__(self, name, status_of):
        self.name, self.status, self.labels = name, "running", {"gitd.app": "shop"}
        self.status_of = status_of

    @property
    def attrs(self):
        return {"State": {"Health": {"Status": self.status_of()}}}


def test_a_container_that_stays_unhealthy_is_restarted_with_a_doubling_capped_backoff():
    now = [0.0]
    state = {"health": "unhealthy"}
    restarted, recorded = [], []
    watcher = HealthWatcher(Engine([_Container("c1", lambda: state["health"])]), 60,
                            restarted.append, lambda app, name, n: recorded.append(n),
                            clock=lambda: now[0])
    times = []
    for second in range(0, 4000, 5):
        now[0] = float(second)
        if watcher.tick():
            times.append(second)
    # unhealthy 60 s, then waits of 120, 240, 480, then 900 (the cap)
    assert times[:5] == [60, 180, 420, 900, 1800], times
    assert all(b - a <= MAX_BACKOFF for a, b in zip(times, times[1:]))
    assert recorded == list(range(1, len(times) + 1))
    # healthy for long enough: a new failure starts over at the short wait
    state["health"] = "healthy"
    for second in range(4000, 4000 + int(MAX_BACKOFF) + 10, 5):
        now[0] = float(second)
        assert watcher.tick() == []
    state["health"] = "unhealthy"
    start = now[0] + 5
    while not watcher.tick():
        now[0] += 5
    assert now[0] - start <= 65


def test_a_failed_restart_is_tried_again_and_not_recorded():
    now = [0.0]
    recorded = []

    def refuse(container):
        raise RuntimeError("busy")

    watcher = HealthWatcher(Engine([_Container("c1", lambda: "unhealthy")]), 10, refuse,
                            lambda *a: recorded.append(a), clock=lambda: now[0])
    for second in range(0, 100, 5):
        now[0] = float(second)
        assert watcher.tick() == []
    assert recorded == []


def test_an_image_port_that_is_not_ascii_digits_is_no_port():
    """`ENV PORT=²` in an image: str.isdigit() says yes and int() says no."""
    class Container:
        def __init__(self, env):
            self.attrs = {"Config": {"Env": env}}

    assert checks.env_port(Container(["PORT=5000"])) == 5000
    for odd in ("PORT=²", "PORT=١٢", "PORT=", "PORT=-1", "PORT=5 0"):
        assert checks.env_port(Container([odd])) is None


def test_the_watcher_looks_at_every_app_with_one_listing_and_fetches_only_what_it_restarts():
    """Issue #21: each look inspected every app's web container (40 requests
    a look at 40 apps, beside every push); the listing says state and health."""
    from tests.fakes import app_container

    class ListingOnly(Engine):
        def containers(self, app=None, **labels):
            raise AssertionError("every container inspected")

        def container(self, name):
            self.fetched.append(name)
            return super().container(name)

        def listed(self, app=None, **labels):
            return [Listed(c.name, c.name, c.labels, c.status,
                           c.attrs["State"]["Health"]["Status"]) for c in self.live]

    from hooks.engine import Listed
    crowd = [app_container(f"app{n}", 1, 1) for n in range(50)]
    sick = app_container("sick", 1, 1, health="unhealthy")
    engine = ListingOnly([*crowd, sick, app_container("gone", 1, 1, health="unhealthy",
                                                      status="exited")])
    now, restarted = [0.0], []
    engine.fetched = []
    watcher = HealthWatcher(engine, 10, restarted.append, lambda *a: None, clock=lambda: now[0])
    for second in range(0, 30, 5):
        now[0] = float(second)
        watcher.tick()
    assert restarted == [sick] and engine.fetched == [sick.name]


def test_a_listing_row_gives_name_state_and_health():
    from hooks.engine import Listed, listed_health

    row = {"Id": "abc", "Names": ["/gitd-t.shop.web.1.s3"], "State": "running",
           "Status": "Up 3 seconds (healthy)", "Labels": {"gitd.app": "shop"}}
    listed = Listed.of(row)
    assert (listed.id, listed.name, listed.status, listed.health) == (
        "abc", "gitd-t.shop.web.1.s3", "running", "healthy")
    assert listed.labels == {"gitd.app": "shop"}
    assert listed_health("Up 2 minutes (unhealthy)") == "unhealthy"
    assert listed_health("Up Less than a second (health: starting)") == "starting"
    assert listed_health("Up 7 seconds") is None
    assert listed_health("Exited (143) 1 second ago") is None
    assert Listed.of({}).name == "" and Listed.of({"Names": None, "Labels": None}).labels == {}


def test_health_the_status_text_does_not_say_comes_from_listings_filtered_by_health():
    """Podman's listing says "Up 5 seconds" whatever the health: the engine
    asks again with a health filter, a request per state (an unhealthy
    container there was never restarted)."""
    from types import SimpleNamespace

    from hooks.engine import Engine

    rows = {"sick": "unhealthy", "fine": "healthy", "booting": "starting", "plain": None}
    asked = []

    def containers(all, filters):
        asked.append(filters.get("health"))
        wanted = filters.get("health")
        return [{"Id": cid, "Names": [f"/{cid}"], "State": "running", "Status": "Up 5 seconds"}
                for cid, health in rows.items() if wanted is None or health == wanted]

    engine = Engine.__new__(Engine)
    engine.instance = "t"
    engine.client = SimpleNamespace(api=SimpleNamespace(containers=containers))
    found = {c.name: c.health for c in engine.listed()}
    assert found == rows
    assert asked == [None, "unhealthy", "healthy", "starting"]
    asked.clear()
    rows = {"sick": "unhealthy"}  # Docker's text says it: no second request
    engine.client.api.containers = lambda all, filters: (asked.append(1) or [
        {"Id": "sick", "Names": ["/sick"], "State": "running", "Status": "Up 5 seconds (unhealthy)"}])
    assert [c.health for c in engine.listed()] == ["unhealthy"] and asked == [1]


def _answering(reply: bytes | None):
    """A loopback server that reads a request and answers `reply` (None:
    closes at once, as docker-proxy does while nothing listens in the
    container). Returns (port, requests seen, stop)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(4096) if reply is not None else b""
                if data:  # a connect-only probe sends nothing
                    seen.append(data)
                    conn.sendall(reply)
    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], seen, server.close


def test_gitd_probes_a_container_through_its_published_port_as_its_own_probe_would():
    check = checks.HealthCheck(path="/health", timeout=2)
    for reply, status, shown in (
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, "HTTP/1.1 200 OK"),
            (b"HTTP/1.0 404 Not Found\r\n\r\n", 0, "HTTP/1.0 404 Not Found"),
            (b"HTTP/1.1 503 Busy\r\n\r\n", 1, "HTTP/1.1 503 Busy"),
            (b"HTTP/1.1 200 OK", 0, "HTTP/1.1 200 OK"),  # no newline before the close
            (b"SSH-2.0-OpenSSH\r\n", 1, "SSH-2.0-OpenSSH"),
            (b"HTTP/1.1 200 \x1b[2Jcleared\r\n", 0, "HTTP/1.1 200 ?[2Jcleared"),
            (None, 1, "no answer on port 5000")):
        port, seen, stop = _answering(reply)
        try:
            got = checks.probe_from_host(port, check, 5000)
        finally:
            stop()
        assert got == (status, f"GET /health -> {shown}".encode()), (reply, got)
        assert checks.answered(got[1].decode()) == (reply is not None and shown.startswith("HTTP/"))
        if reply is not None:
            assert seen[0].startswith(b"GET /health HTTP/1.0\r\nHost: localhost\r\n")
            assert b"User-Agent: gitd-healthcheck" in seen[0]
    port, _, stop = _answering(None)
    stop()  # nothing listens at all
    assert checks.probe_from_host(port, check, 5000) == (1, b"GET /health -> no answer on port 5000")


def test_gitds_check_is_read_back_from_the_container_and_run_through_its_port():
    from tests.fakes import Container

    check = checks.HealthCheck(path="/up", timeout=3)
    spec = checks.web_healthcheck(check, 5000, 30, gated_by_gitd=True)
    container = Container("c", {}, attrs={
        "Config": {"Healthcheck": {"Test": spec["test"]}, "Env": ["PORT=5000"]}})
    assert checks.check_of(container) == checks.HealthCheck(path="/up", timeout=3)
    assert checks.check_of(Container("d", {}, attrs={"Config": {"Healthcheck": {
        "Test": ["CMD-SHELL", "curl -f localhost"]}}})) is None
    port, seen, stop = _answering(b"HTTP/1.1 204 No Content\r\n\r\n")

    class Engine:
        def host_port(self, container, wanted):
            assert wanted == 5000
            return port

        def exec(self, container, argv):
            raise AssertionError("no process in the container")
    try:
        assert checks.passes_now(Engine(), container)
    finally:
        stop()
    assert seen[0].startswith(b"GET /up HTTP/1.0\r\n")


def test_an_app_answering_a_byte_at_a_time_does_not_hold_the_probe_past_its_timeout():
    import time
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def trickle():
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            for _ in range(100):
                try:
                    conn.sendall(b"H")
                except OSError:
                    return
                time.sleep(0.1)
    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        status, output = checks.probe_from_host(server.getsockname()[1],
                                                checks.HealthCheck(timeout=1), 5000)
    finally:
        server.close()
    assert time.monotonic() - started < 2.5
    assert (status, output) == (1, b"GET / -> no answer on port 5000")


def test_a_container_the_engine_starts_again_while_gitd_waits_has_exited_during_start():
    """Docker counts restarts beside State (RestartCount), not in it: a
    deploy's container that crashed and was started again between two looks
    was waited for as booting until `wait` ran out. Counted from the wait's
    own start: a container the engine restarted before (the restart watch
    probes those) is waited for."""
    import pytest

    from gitd.core.errors import DeployError
    from tests.fakes import Container

    check = checks.HealthCheck(path="/", timeout=1, wait=30)
    spec = checks.web_healthcheck(check, 5000, 30, gated_by_gitd=True)
    port, _, stop = _answering(None)  # nothing listens: it boots, or it crashed

    class Engine:
        def __init__(self, restarts_at: int | None):
            self.looks, self.restarts_at = 0, restarts_at

        def reload(self, container):
            self.looks += 1
            if self.looks == self.restarts_at:  # crashed and started again between two looks
                container.attrs["RestartCount"] += 1
            return True

        def host_port(self, container, wanted):
            return port

        def exec(self, container, argv):  # what it listens on: nothing
            return 0, b""

    def container(restarts: int):
        return Container("c", {}, attrs={
            "RestartCount": restarts, "State": {"Status": "running", "ExitCode": 0},
            "Config": {"Healthcheck": {"Test": spec["test"]}, "Env": ["PORT=5000"]}})
    try:
        for before in (0, 3):
            engine = Engine(restarts_at=3)
            with pytest.raises(DeployError, match="exited during start"):
                checks.wait_probe(engine, container(before), check, lambda line: None, "web.1")
            assert engine.looks == 3
        short = checks.HealthCheck(path="/", timeout=1, wait=0.3)
        with pytest.raises(DeployError, match="not healthy after"):  # restarted before: booting
            checks.wait_probe(Engine(None), container(3), short, lambda line: None, "web.1")
    finally:
        stop()

"""Maintenance mode (issue #25) with the real ssh, git, Docker and Traefik:
the switch under HTTP load with no failed request either way, a push while
it is on, a restart keeping it (over HTTPS too), hostile messages."""

from __future__ import annotations

import json
import shlex
import threading
import time
import urllib.error
import urllib.request

from tests.e2e.conftest import BASE_IMAGE, web_app
from tests.e2e.harness import Load, commit, free_port, make_repo, unique_app
from tests.e2e.tls_helpers import https_get

MAINTENANCE = "MAINTENANCE"


def get_with_headers(gitd, host: str, path: str = "/") -> tuple[int, dict, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{gitd.http_port}{path}",
                                 headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def is_page(status: int, headers: dict, body: str) -> bool:
    return (status == 503 and headers.get("retry-after") == "120"
            and "Down for maintenance" in body)


class SwitchLoad(Load):
    """Load where the app's 200 and the maintenance page both count as
    served (the page as MAINTENANCE); each answer is kept with when it
    started and ended, to check which side of a switch it fell on."""

    def __init__(self, gitd, host, **kw):
        super().__init__(gitd, host, **kw)
        self.answers: list[tuple[float, float, str]] = []
        self._answers_lock = threading.Lock()

    def request(self) -> tuple[int, str]:
        started = time.monotonic()
        status, headers, body = get_with_headers(self.gitd, self.host, self.path)
        if is_page(status, headers, body):
            status, body = 200, MAINTENANCE
        if status == 200:
            with self._answers_lock:
                self.answers.append((started, time.monotonic(), body.strip()))
        return status, body

    def served(self, since: float = 0.0, until: float = float("inf")) -> set[str]:
        """What answered the requests started after `since` and done before `until`."""
        with self._answers_lock:
            return {body for start, end, body in self.answers if start >= since and end <= until}


def maintenance_on(gitd, app: str, message: str | None = None, key=None):
    args = ["maintenance:on", app] + (["--message", shlex.quote(message)] if message else [])
    return gitd.ssh(*args, key=key)


def pushed_app(gitd, tmp_path, prefix: str):
    app = unique_app(prefix)
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / app, web_app("v1"))
    result = gitd.push(repo, app)
    assert result.returncode == 0, result.stderr
    return app, repo


def test_switch_under_load_drops_nothing_and_deploys_keep_the_page(gitd, tmp_path):
    app, repo = pushed_app(gitd, tmp_path, "mnt")
    host = gitd.host(app)
    commit(repo, web_app("v2"), "v2")
    with SwitchLoad(gitd, host, clients=4) as load:
        time.sleep(1.5)
        switching_on = time.monotonic()
        on = maintenance_on(gitd, app, "Back at 5 <b>sharp</b>")
        on_done = time.monotonic()
        assert on.returncode == 0, on.stderr
        time.sleep(1.0)
        pushed = gitd.push(repo, app)  # deploys while on: the page stays
        assert pushed.returncode == 0, pushed.stderr
        after_push = time.monotonic()
        assert json.loads(gitd.ssh("apps:info", app, "--json").stdout)["release"] == 2
        ran = gitd.ssh("run", app, "--", "cat", "/www/index.html")  # a migration, say
        assert ran.returncode == 0 and ran.stdout.strip() == "v2", ran.stderr
        rolled = gitd.ssh("releases:rollback", app, "v1")
        assert rolled.returncode == 0, rolled.stderr
        time.sleep(1.0)
        switching_off = time.monotonic()
        off = gitd.ssh("maintenance:off", app)
        off_done = time.monotonic()
        assert off.returncode == 0, off.stderr
        time.sleep(1.5)
    assert load.failures == [], load.failures[:10]
    assert load.served(until=switching_on) == {"v1"}
    assert load.served(on_done, switching_off) == {MAINTENANCE}
    assert load.served(after_push, switching_off) == {MAINTENANCE}
    assert load.served(off_done) == {"v1"}  # rolled back while on
    assert len(load.answers) > 100
    status, headers, body = get_with_headers(gitd, host)
    assert (status, body.strip()) == (200, "v1")
    assert "maintenance off" in gitd.ssh("maintenance", app).stdout
    gitd.ssh("apps:destroy", app, "--force")


def test_page_escapes_hostile_messages_and_refuses_odd_ones(gitd, tmp_path):
    app, _ = pushed_app(gitd, tmp_path, "mnth")
    host = gitd.host(app)
    hostile = '<script>alert("x")</script>\nline two & more'
    assert maintenance_on(gitd, app, hostile).returncode == 0
    status, headers, body = get_with_headers(gitd, host, "/any/path?x=1")
    assert is_page(status, headers, body), (status, headers, body)
    assert "<script>" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;<br>\nline two &amp; more" in body
    assert headers["content-type"].startswith("text/html")
    shown = json.loads(gitd.ssh("maintenance", app, "--json").stdout)
    assert shown["on"] is True and shown["message"] == hostile
    info = json.loads(gitd.ssh("apps:info", app, "--json").stdout)
    assert info["maintenance"]["on"] is True
    assert "maintenance: on since" in gitd.ssh("apps:info", app).stdout
    assert gitd.ssh("maintenance:off", app).returncode == 0
    for odd, words in (("x" * 5000, "at most 500"), ("\x1b[2Jgone", "control characters")):
        refused = maintenance_on(gitd, app, odd)
        assert refused.returncode != 0 and words in refused.stderr, refused.stderr
        assert json.loads(gitd.ssh("maintenance", app, "--json").stdout)["on"] is False
        status, _, body = get_with_headers(gitd, host)
        assert (status, body.strip()) == (200, "v1")
    gitd.ssh("apps:destroy", app, "--force")


def test_a_restart_keeps_it_over_http_and_https(own_gitd, tmp_path):
    own_gitd.https_port = free_port()
    https = ("--https-port", str(own_gitd.https_port))
    own_gitd.start(extra_args=https)
    app, _ = pushed_app(own_gitd, tmp_path, "mntr")
    host = own_gitd.host(app)
    assert maintenance_on(own_gitd, app, "upgrading").returncode == 0
    own_gitd.stop()
    own_gitd.start(extra_args=https)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the new Traefik loads its routes
        status, headers, body = get_with_headers(own_gitd, host)
        if is_page(status, headers, body):
            break
        time.sleep(0.2)
    assert is_page(status, headers, body) and "upgrading" in body, (status, headers, body)
    status, headers, body, _ = https_get(own_gitd.https_port, host, None)
    assert is_page(status, headers, body) and "upgrading" in body, (status, headers, body)
    assert "maintenance on since" in own_gitd.ssh("maintenance", app).stdout
    assert own_gitd.ssh("maintenance:off", app).returncode == 0
    assert get_with_headers(own_gitd, host)[::2] == (200, "v1\n")
    status, _, body, _ = https_get(own_gitd.https_port, host, None)
    assert (status, body) == (200, "v1\n")


def test_on_the_swarm_scheduler_too(swarm_gitd, tmp_path):
    """On a swarm the deploys' routes are route files too: the page still
    outranks them, with no failed request either way."""
    gitd = swarm_gitd
    app, repo = pushed_app(gitd, tmp_path, "mnts")
    host = gitd.host(app)
    commit(repo, web_app("v2"), "v2")
    with SwitchLoad(gitd, host, clients=4) as load:
        time.sleep(1.0)
        switching_on = time.monotonic()
        on = maintenance_on(gitd, app)
        on_done = time.monotonic()
        assert on.returncode == 0, on.stderr
        pushed = gitd.push(repo, app)
        assert pushed.returncode == 0, pushed.stderr
        time.sleep(1.0)
        switching_off = time.monotonic()
        off = gitd.ssh("maintenance:off", app)
        off_done = time.monotonic()
        assert off.returncode == 0, off.stderr
        time.sleep(1.0)
    assert load.failures == [], load.failures[:10]
    assert load.served(until=switching_on) == {"v1"}
    assert load.served(on_done, switching_off) == {MAINTENANCE}
    assert load.served(off_done) == {"v2"}
    gitd.ssh("apps:destroy", app, "--force")


def busybox_service(text: str, port: int) -> str:
    return (f"FROM {BASE_IMAGE}:latest\nRUN mkdir -p /www && echo {text} > /www/index.html\n"
            f'CMD ["httpd", "-f", "-p", "{port}", "-h", "/www"]\n')


def test_every_route_of_app_json_services_gets_the_page(gitd, tmp_path):
    app = unique_app("mntm")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / app, {
        "front/Dockerfile": busybox_service("front", 3000),
        "back/Dockerfile": busybox_service("back", 8080),
        "app.json": json.dumps({"services": {
            "front": {"build": {"dir": "front"}, "port": 3000, "routes": [{"path": "/"}]},
            "back": {"build": {"dir": "back"}, "port": 8080,
                     "routes": [{"path": "/api", "strip_prefix": True}]}}})})
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    host = gitd.host(app)
    assert gitd.get(host, "/api/") == (200, "back\n")
    assert maintenance_on(gitd, app).returncode == 0
    for path in ("/", "/api/", "/api/x", "/other"):
        status, headers, body = get_with_headers(gitd, host, path)
        assert is_page(status, headers, body), (path, status, body)
    # a push adding a service: its route answers the page from the first request
    app_json = json.loads((repo / "app.json").read_text())
    app_json["services"]["extra"] = {"build": {"dir": "extra"}, "port": 8081,
                                     "routes": [{"path": "/extra", "strip_prefix": True}]}
    commit(repo, {"extra/Dockerfile": busybox_service("extra", 8081),
                  "app.json": json.dumps(app_json)}, "extra")
    with SwitchLoad(gitd, host, clients=2, path="/extra/") as load:
        pushed = gitd.push(repo, app)
        assert pushed.returncode == 0, pushed.stderr
        time.sleep(0.5)
    assert load.failures == [] and load.served() == {MAINTENANCE}, (load.failures[:5], load.served())
    assert gitd.ssh("maintenance:off", app).returncode == 0
    assert gitd.get(host, "/extra/") == (200, "extra\n")
    assert gitd.get(host, "/api/") == (200, "back\n")
    assert gitd.get(host, "/") == (200, "front\n")
    gitd.ssh("apps:destroy", app, "--force")

"""Notifications (issue #25) end to end: a local HTTP server on 127.0.0.1,
subscribed by an admin, receives a real push's deploy.started and
deploy.succeeded and a failed push's deploy.failed, signed; it answers 500
first and sees the retry; a deployer aiming at 127.0.0.1 is refused."""

import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest

from gitd.core import notify
from tests.e2e.conftest import web_app
from tests.e2e.harness import git, make_key, make_repo, unique_app

pytestmark = pytest.mark.e2e


class Receiver(http.server.ThreadingHTTPServer):
    """Records each POST (headers, body); answers 500 to the first `fail_first`."""

    def __init__(self, fail_first: int = 0):
        self.received: list[tuple[dict, bytes, int]] = []
        self.fail_first = fail_first
        self.guard = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def wait_for(self, predicate, timeout: float = 60.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.guard:
                found = [r for r in self.received if predicate(r)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"not received in {timeout}s; received: {self.received}")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.guard:
            status = 500 if self.server.fail_first > 0 else 200
            self.server.fail_first -= 1
            self.server.received.append((dict(self.headers), body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = Receiver(fail_first=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def ok(gitd, *args, **kw):
    result = gitd.ssh(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result


def event_of(event: str, app: str):
    def matches(record):
        headers, body, status = record
        return status == 200 and json.loads(body)["event"] == event and \
            json.loads(body)["app"] == app
    return matches


def test_a_push_and_a_failed_push_are_delivered_signed_with_a_retry(gitd, receiver, tmp_path):
    app = unique_app("ntf")
    ok(gitd, "apps:create", app)
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook?x=1"
    added = ok(gitd, "notify:add", app, url, "--events",
                "deploy.started,deploy.succeeded,deploy.failed,rollback")
    secret = re.search(r"Secret \(shown only now\): ([0-9a-f]{64})", added.stdout).group(1)
    assert secret not in ok(gitd, "notify", app, "--json").stdout

    repo = make_repo(tmp_path / app, web_app("notify v1"))
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    receiver.wait_for(event_of("deploy.succeeded", app))
    started = receiver.wait_for(event_of("deploy.started", app))

    # the first delivery got a 500 and came again, the same body, after a backoff
    with receiver.guard:
        first_headers, first_body, first_status = receiver.received[0]
    assert first_status == 500
    retried = [r for r in receiver.received if r[0]["X-Gitd-Delivery"] ==
               first_headers["X-Gitd-Delivery"]]
    assert [r[2] for r in retried] == [500, 200] and retried[0][1] == retried[1][1]
    (listed,) = json.loads(ok(gitd, "notify", app, "--json").stdout)["subscriptions"]
    assert any(d["error"] == "HTTP 500 (will retry)" for d in listed["deliveries"])

    for headers, body, _ in receiver.received:
        assert headers["X-Gitd-Signature"] == notify.sign(secret, body)
        assert notify.verify(secret, body, headers["X-Gitd-Signature"])
        assert headers["Content-Type"] == "application/json"
    assert json.loads(started[0][1])["data"]["trigger"] == "push"

    # a second release, then back to the first: a rollback event after its deploy.succeeded
    (tmp_path / app / "Dockerfile").write_text(web_app("notify v2")["Dockerfile"])
    git(repo, "commit", "-qam", "v2")
    assert gitd.push(repo, app).returncode == 0
    ok(gitd, "releases:rollback", app, "v1")
    (headers, body, _), = receiver.wait_for(event_of("rollback", app))
    assert json.loads(body)["data"]["trigger"] == "rollback"
    assert headers["X-Gitd-Signature"] == notify.sign(secret, body)

    (tmp_path / app / "Dockerfile").write_text("FROM gitd-test/busybox:latest\nRUN false\n")
    git(repo, "commit", "-qam", "broken")
    failed_push = gitd.push(repo, app)
    assert failed_push.returncode != 0
    (headers, body, _), = receiver.wait_for(event_of("deploy.failed", app))
    data = json.loads(body)["data"]
    assert data["error"] and data["log_tail"] and data["error"] in data["log_tail"]
    assert headers["X-Gitd-Signature"] == notify.sign(secret, body)

    shown = ok(gitd, "notify", app, "--json")
    (sub,) = json.loads(shown.stdout)["subscriptions"]
    assert sub["deliveries"][0]["status"] == 200
    assert f"notify:     {sub['id']} {url}" in ok(gitd, "apps:info", app).stdout
    # over HTTP: the same list, then the removal
    token = ok(gitd, "tokens:create").stdout.strip().splitlines()[-1]
    path = f"/api/v1/apps/{app}/notifications"
    assert api(gitd, "GET", path, token) == (200, json.loads(shown.stdout))
    assert api(gitd, "DELETE", f"{path}/{sub['id']}", token) == (200, {"app": app, "removed": sub["id"]})
    assert api(gitd, "DELETE", f"{path}/{sub['id']}", token)[0] == 404
    assert json.loads(ok(gitd, "notify", app, "--json").stdout)["subscriptions"] == []
    ok(gitd, "apps:destroy", app, "--force")


def api(gitd, method: str, path: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{gitd.gitd_api_port}{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_deployer_aiming_at_loopback_is_refused_in_words(gitd, tmp_path, receiver):
    app = unique_app("ntd")
    ok(gitd, "apps:create", app)
    dev_key = make_key(tmp_path, "dev")
    dev_name = f"dev-{app}"
    ok(gitd, "keys:add", dev_name, input=dev_key.with_suffix(".pub").read_text())
    ok(gitd, "apps:grant", app, dev_name)
    port = receiver.server_address[1]
    for url in (f"http://127.0.0.1:{port}/", f"http://localhost:{port}/",
                f"http://[::1]:{port}/", f"http://0.0.0.0:{gitd.gitd_api_port}/",
                f"http://127.0.0.1:{gitd.gitd_api_port}/api/v1/apps"):
        refused = gitd.ssh("notify:add", app, url, key=dev_key)
        assert refused.returncode != 0
        assert "internal address: only an admin may send notifications there" in refused.stderr
    assert json.loads(ok(gitd, "notify", app, "--json", key=dev_key).stdout)["subscriptions"] == []
    assert gitd.ssh("notify:add", "--global", "http://example.com/", key=dev_key).returncode != 0
    ok(gitd, "keys:remove", dev_name)
    ok(gitd, "apps:destroy", app, "--force")

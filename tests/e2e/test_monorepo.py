"""One repo, several services (issue #13): a monorepo with frontend/ and
backend/ Dockerfiles pushed once, routed by path; only what changed is
rebuilt; a backend that fails its health check changes nothing."""

import json
import shutil
import time

import pytest

from tests.conftest import require
from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import Load, commit, make_repo, unique_app
from tests.e2e.helpers import create, ok
from tests.nix import fixtures

pytestmark = pytest.mark.e2e

PEER_CGI = ('#!/bin/sh\\necho Content-Type: text/plain\\necho\\n'
            'wget -q -O - "$BACKEND_URL/health"\\n')


def frontend(tag: str) -> dict:
    return {"frontend/Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        f"RUN mkdir -p /www/cgi-bin && printf '{PEER_CGI}' > /www/cgi-bin/peer "
        "&& chmod +x /www/cgi-bin/peer\n"
        f'CMD echo "front:{tag}|$BACKEND_URL|$FRONTEND_URL" > /www/index.html; '
        "exec httpd -f -p 3000 -h /www\n")}


def backend(tag: str, crash: bool = False) -> dict:
    # crashing only after its sibling passed its checks: Traefik's docker
    # provider may have taken the new frontend in by then
    start = "sleep 2; exit 3" if crash else 'echo "backend $DYNO listening on $PORT"; exec httpd -f -p 8080 -h /www'
    return {"backend/Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        f'RUN mkdir -p /www && echo "back:{tag}" > /www/health\n'
        f"CMD {start}\n")}


APP_JSON = {"app.json": json.dumps({"services": {
    "frontend": {"build": {"dir": "frontend"}, "port": 3000, "routes": [{"path": "/"}]},
    "backend": {"build": {"dir": "backend"}, "port": 8080,
                "healthchecks": {"path": "/health", "wait": 20},
                "routes": [{"path": "/api", "strip_prefix": True}]},
}})}


def info(gitd, app, version):
    return json.loads(ok(gitd, "releases:info", app, version, "--json").stdout)


def wait_get(gitd, host, path, expected, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = gitd.get(host, path)
        if last == (200, expected):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{path}: wanted {expected!r}, last {last!r}")


def test_a_monorepo_deploys_its_services_as_one_release(gitd, docker_client, tmp_path):
    app = unique_app("mono")
    host = gitd.host(app)
    create(gitd, app)
    repo = make_repo(tmp_path / app, {**APP_JSON, **frontend("a"), **backend("a")})
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert gitd.get(host, "/") == (200, "front:a|http://backend:8080|http://frontend:3000\n")
    assert gitd.get(host, "/api/health") == (200, "back:a\n")
    # services reach each other by name on the app's network
    assert gitd.get(host, "/cgi-bin/peer") == (200, "back:a\n")
    v1 = info(gitd, app, "v1")["services"]
    assert set(v1) == {"frontend", "backend"}

    # per-service commands
    ok(gitd, "ps:scale", app, "backend.web=2")
    backends = [c for c in gitd.live_containers(docker_client, app)
                if c.labels.get("gitd.component") == "backend" and c.labels["gitd.role"] == "service"]
    assert len(backends) == 2
    assert json.loads(ok(gitd, "ps:scale", app, "--json").stdout) == {"backend.web": 2, "frontend.web": 1}
    assert gitd.get(host, "/api/health") == (200, "back:a\n")
    logs = ok(gitd, "logs", app, "--service", "backend").stdout
    assert "backend.web.1 | backend web.1 listening on 8080" in logs
    assert "backend.web.2 |" in logs and "frontend" not in logs
    assert ok(gitd, "run", app, "--service", "backend", "--", "cat", "/www/health", input="").stdout == "back:a\n"
    ran = gitd.ssh("run", app, "--", "true", input="")
    assert ran.returncode != 0 and "--service" in ran.stderr
    ok(gitd, "ps:scale", app, "backend.web=1")

    # only frontend/ changes: only the frontend is rebuilt
    commit(repo, frontend("b"), "frontend only")
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert f"backend unchanged (tree {v1['backend']['tree'][:12]}): reusing its image" in pushed.stderr
    assert "frontend unchanged" not in pushed.stderr
    v2 = info(gitd, app, "v2")["services"]
    assert v2["backend"]["image_id"] == v1["backend"]["image_id"] and v2["backend"]["reused"]
    assert v2["frontend"]["image_id"] != v1["frontend"]["image_id"]
    wait_get(gitd, host, "/", "front:b|http://backend:8080|http://frontend:3000\n")
    assert gitd.get(host, "/api/health") == (200, "back:a\n")

    # a backend that never becomes healthy: the push fails naming it, v2 serves on
    commit(repo, {**frontend("c"), **backend("c", crash=True)}, "broken backend")
    pushed = gitd.push(repo, app)
    assert pushed.returncode != 0
    assert "service backend" in pushed.stderr, pushed.stderr
    assert gitd.get(host, "/") == (200, "front:b|http://backend:8080|http://frontend:3000\n")
    assert gitd.get(host, "/api/health") == (200, "back:a\n")
    gitd.wait_retired(docker_client, app)
    seqs = {c.labels["gitd.seq"] for c in gitd.containers(docker_client, app)
            if c.labels.get("gitd.role") == "service"}
    assert len(seqs) == 1  # no new container of either service left behind

    # a rollback takes every service back together
    ok(gitd, "releases:rollback", app, "v1")
    wait_get(gitd, host, "/", "front:a|http://backend:8080|http://frontend:3000\n")
    assert gitd.get(host, "/api/health") == (200, "back:a\n")
    ok(gitd, "apps:destroy", app, "--force")


@pytest.mark.nix
def test_a_flake_with_two_image_outputs_deploys_both(gitd, tmp_path):
    require(shutil.which("nix") is not None, "nix is not installed (apt-get install nix-bin)")
    app = unique_app("flakes")
    host = gitd.host(app)
    create(gitd, app)
    repo = make_repo(fixtures.write_web_image_flake(
        tmp_path / app, {"frontendImage": ("stream", "front end"),
                         "backendImage": ("tarball", "back end")}), {"app.json": json.dumps({"services": {
                             "frontend": {"build": {"flake_attr": "frontendImage"}, "routes": [{"path": "/"}]},
                             "backend": {"build": {"flake_attr": "backendImage"},
                                         "routes": [{"path": "/api", "strip_prefix": True}]}}})})
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert f"nix build packages.{fixtures.SYSTEM}.backendImage" in pushed.stderr
    assert f"nix build packages.{fixtures.SYSTEM}.frontendImage" in pushed.stderr
    assert gitd.get(host, "/") == (200, "front end\n")
    assert gitd.get(host, "/api/") == (200, "back end\n")
    services = info(gitd, app, "v1")["services"]
    assert services["frontend"]["image_id"] != services["backend"]["image_id"]
    ok(gitd, "apps:destroy", app, "--force")


def test_no_request_fails_under_load_over_five_deploys_of_both_services(gitd, tmp_path):
    app = unique_app("monoload")
    host = gitd.host(app)
    create(gitd, app)
    repo = make_repo(tmp_path / app, {**APP_JSON, **frontend("0"), **backend("0")})
    assert gitd.push(repo, app).returncode == 0
    with Load(gitd, host, clients=2) as front, Load(gitd, host, clients=2, path="/api/health") as back:
        for n in range(1, 6):
            commit(repo, {**frontend(str(n)), **backend(str(n))}, f"deploy {n}")
            pushed = gitd.push(repo, app)
            assert pushed.returncode == 0, pushed.stderr
        wait_get(gitd, host, "/api/health", "back:5\n")
    assert front.failures == [] and back.failures == [], (front.failures[:5], back.failures[:5])
    assert front.ok > 0 and back.ok > 0
    assert {"back:0", "back:5"} <= back.bodies
    assert any(b.startswith("front:5|") for b in front.bodies)
    ok(gitd, "apps:destroy", app, "--force")


def test_a_service_may_not_route_a_path_another_app_owns(gitd, tmp_path):
    app, other = unique_app("mono"), unique_app("owner")
    host = f"shared-{app}.example.test"
    create(gitd, app)
    ok(gitd, "apps:create", other)
    ok(gitd, "domains:add", app, host)
    ok(gitd, "domains:add", other, f"{host}/api")
    repo = make_repo(tmp_path / app, {**APP_JSON, **frontend("a"), **backend("a")})
    pushed = gitd.push(repo, app)
    assert pushed.returncode != 0
    assert f"service backend: {host}/api is routed to app '{other}', not {app}" in pushed.stderr
    assert gitd.get(host, "/")[0] == 404  # nothing of the push was routed
    for name in (app, other):
        ok(gitd, "apps:destroy", name, "--force")

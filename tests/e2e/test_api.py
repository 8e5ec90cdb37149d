"""The HTTP API over real HTTP against a real gitd, with tokens made over
real ssh: access, errors, token life, the brake on guessing, and
Schemathesis fuzzing the served OpenAPI document."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.api_client import Api, new_token
from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import make_key, make_repo, unique_app

pytestmark = pytest.mark.e2e





def test_health_needs_no_token(api):
    assert api.request("GET", "/health")[:2] == (200, {"status": "ok"})


def test_the_api_lists_and_shows_the_same_json_as_ssh(gitd, api):
    status, listed, _ = api.request("GET", "/api/v1/apps", api.admin)
    assert status == 200
    assert listed == json.loads(gitd.ssh("apps:list", "--json").stdout)
    status, shown, _ = api.request("GET", f"/api/v1/apps/{api.mine}", api.admin)
    assert status == 200
    assert shown == json.loads(gitd.ssh("apps:info", api.mine, "--json").stdout)


def test_an_admin_creates_and_destroys_an_app(gitd, api):
    app = unique_app("made")
    status, created, _ = api.request("POST", "/api/v1/apps", api.admin, {"name": app})
    assert status == 201 and created["name"] == app
    assert gitd.ssh("apps:info", app).returncode == 0
    assert api.request("POST", "/api/v1/apps", api.admin, {"name": app})[0] == 409
    assert api.request("DELETE", f"/api/v1/apps/{app}", api.admin)[:2] == (
        200, {"name": app, "services_left": {}})
    assert api.request("GET", f"/api/v1/apps/{app}", api.admin)[0] == 404
    assert app not in gitd.ssh("apps:list").stdout


def test_a_deployer_reaches_only_its_granted_apps(gitd, api):
    status, listed, _ = api.request("GET", "/api/v1/apps", api.deployer)
    assert status == 200 and [a["name"] for a in listed] == [api.mine]
    assert listed == json.loads(gitd.ssh("apps:list", "--json", key=api.deployer_key).stdout)
    assert api.request("GET", f"/api/v1/apps/{api.mine}", api.deployer)[0] == 200
    assert api.request("GET", f"/api/v1/apps/{api.theirs}", api.deployer)[0] == 403
    assert api.request("DELETE", f"/api/v1/apps/{api.theirs}", api.deployer)[0] == 403
    assert api.request("DELETE", f"/api/v1/apps/{api.mine}", api.deployer)[0] == 403
    assert api.request("POST", "/api/v1/apps", api.deployer, {"name": unique_app()})[0] == 403
    apps = gitd.ssh("apps:list").stdout
    assert api.mine in apps and api.theirs in apps


def test_grants_over_http_are_apps_grant_and_apps_revoke(gitd, api):
    app, who = api.theirs, api.deployer_name
    grants = f"/api/v1/apps/{app}/grants/{who}"
    assert api.request("PUT", grants, api.deployer)[0] == 403
    assert api.request("GET", f"/api/v1/apps/{app}", api.deployer)[0] == 403
    assert api.request("PUT", grants, api.admin)[:2] == (
        200, {"app": app, "key": who, "key_is_admin": False})
    assert who in json.loads(gitd.ssh("apps:info", app, "--json").stdout)["granted_to"]
    assert api.request("GET", f"/api/v1/apps/{app}", api.deployer)[0] == 200
    assert api.request("DELETE", grants, api.deployer)[0] == 403
    assert api.request("DELETE", grants, api.admin)[:2] == (200, {"app": app, "key": who})
    assert api.request("GET", f"/api/v1/apps/{app}", api.deployer)[0] == 403
    assert api.request("DELETE", grants, api.admin)[0] == 404
    assert api.request("PUT", f"/api/v1/apps/{app}/grants/nobody-here", api.admin)[0] == 404
    assert api.request("PUT", f"/api/v1/apps/{app}/grants/..%2Fx", api.admin)[0] in (400, 404)


@pytest.mark.parametrize("method,path,kw,status", [
    ("GET", "/api/v1/apps/Bad_Name", {}, 400),
    ("GET", "/api/v1/apps/" + "a" * 300, {}, 400),
    ("GET", "/api/v1/apps/..%2F..%2Fetc", {}, 400),
    ("GET", "/api/v1/apps/a%00b", {}, 400),
    ("GET", "/api/v1/apps/nope-nope", {}, 404),
    ("GET", "/api/v1/nothing", {}, 404),
    ("PUT", "/api/v1/apps", {}, 405),
    ("POST", "/api/v1/apps", {"raw": b"{not json"}, 400),
    ("POST", "/api/v1/apps", {"raw": b"\xff\xfe"}, 400),
    ("POST", "/api/v1/apps", {"raw": b"[" * 100_000}, 400),
    ("POST", "/api/v1/apps", {"raw": b'{"name": NaN}'}, 400),
    ("POST", "/api/v1/apps", {"body": []}, 400),
    ("POST", "/api/v1/apps", {"body": {"name": "a--b"}}, 400),
    ("POST", "/api/v1/apps", {"body": {"name": "ok", "extra": 1}}, 400),
    ("POST", "/api/v1/apps", {"body": {"name": "ok", "repo_url": "git://x/y.git"}}, 400),
    ("POST", "/api/v1/apps", {"body": {"name": "ok", "repo_url": "ext::sh -c id"}}, 400),
    ("POST", "/api/v1/apps", {"body": {"name": "ok", "repo_url": "--upload-pack=id"}}, 400),
    ("POST", "/api/v1/apps", {"body": {"name": "ok", "repo_url": "https://u:pw@x/y.git"}}, 400),
    ("POST", "/api/v1/apps", {"body": {"name": "ok", "branch": "main"}}, 400),
    ("POST", "/api/v1/apps", {"body": {"name": "ok", "repo_url": "https://x/y.git",
                                       "branch": "-x"}}, 400),
    ("POST", "/api/v1/apps", {"raw": b'{"name": "ok"}', "content_type": "text/plain"}, 415),
    ("POST", "/api/v1/apps", {"raw": b'{"name": "' + b"a" * (2 * 1024 * 1024) + b'"}'}, 413),
])
def test_bad_requests_get_a_fitting_status_and_change_nothing(gitd, api, method, path, kw, status):
    before = gitd.ssh("apps:list", "--json").stdout
    code, answer, _ = api.request(method, path, api.admin, **kw)
    assert code == status, answer
    assert gitd.ssh("apps:list", "--json").stdout == before


def test_no_token_or_a_wrong_one_is_401_with_a_challenge(api):
    for token, header in ((None, {}), (None, {"Authorization": "Basic YWRtaW46eA=="}),
                          ("gitd_000000000000_nope", {}),
                          ("gitd_000000000000_\xff\xfe", {}), ("x" * 4000, {})):
        status, _, headers = api.request("GET", "/api/v1/apps", token, headers=header)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_expired_and_removed_key_tokens_are_refused(gitd, api, tmp_path):
    name = f"rev-{unique_app()}"
    revoked = new_token(gitd, "--name", name)
    assert api.request("GET", "/api/v1/apps", revoked)[0] == 200
    assert gitd.ssh("tokens:revoke", name).returncode == 0
    assert api.request("GET", "/api/v1/apps", revoked)[0] == 401

    name = f"exp-{unique_app()}"
    expiring = new_token(gitd, "--name", name, "--expires", "1h")
    assert api.request("GET", "/api/v1/apps", expiring)[0] == 200
    with gitd.db() as conn:
        conn.execute("UPDATE tokens SET expires_at = ? WHERE name = ?", [time.time() - 1, name])
    assert api.request("GET", "/api/v1/apps", expiring)[0] == 401

    key = make_key(tmp_path, "leaving")
    key_name = f"leaving-{unique_app()[2:]}"
    assert gitd.ssh("keys:add", key_name, "--admin", input=(tmp_path / "leaving.pub").read_text()).returncode == 0
    of_key = new_token(gitd, key=key)
    assert api.request("GET", "/api/v1/apps", of_key)[0] == 200
    assert gitd.ssh("keys:remove", key_name).returncode == 0
    assert api.request("GET", "/api/v1/apps", of_key)[0] == 401


def test_tokens_are_listed_without_their_secret_and_never_logged(gitd, api):
    listed = gitd.ssh("tokens", "--json")
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert rows and all(set(r) == {"name", "key", "created_at", "last_used_at", "expires_at",
                                   "expired"} for r in rows)
    for token in (api.admin, api.deployer):
        secret = token.split("_", 2)[2]
        assert secret not in listed.stdout
        assert secret not in gitd.log_text()
    mine = json.loads(gitd.ssh("tokens", "--json", key=api.deployer_key).stdout)
    assert {r["key"] for r in mine} == {api.deployer_name}
    assert any(r["last_used_at"] for r in mine)


def test_a_deployer_cannot_revoke_another_keys_token(gitd, api):
    admin_tokens = [t["name"] for t in json.loads(gitd.ssh("tokens", "--json").stdout)
                    if t["key"] == "admin"]
    result = gitd.ssh("tokens:revoke", admin_tokens[0], key=api.deployer_key)
    assert result.returncode != 0 and "no token named" in result.stderr
    assert api.request("GET", "/api/v1/apps", api.admin)[0] == 200


def test_hostile_token_options_are_refused_and_nothing_is_made(gitd, api):
    before = gitd.ssh("tokens", "--json").stdout
    for args in (("--expires", "0d"), ("--expires", "-1d"), ("--expires", "99999999d"),
                 ("--expires", "soon"), ("--name", "../../x"), ("--name", "x" * 65)):
        result = gitd.ssh("tokens:create", *args)
        assert result.returncode != 0 and result.stderr.strip(), args
    assert gitd.ssh("tokens", "--json").stdout == before


def test_the_api_is_routed_at_its_host_through_traefik(gitd, api):
    routed = Api(gitd, through_traefik=True)
    assert routed.doc == api.doc
    assert routed.request("GET", "/api/v1/apps", api.admin)[:2] == api.request(
        "GET", "/api/v1/apps", api.admin)[:2]
    result = gitd.ssh("apps:create", "gitd")
    assert result.returncode != 0 and "gitd's own" in result.stderr
    assert api.request("POST", "/api/v1/apps", api.admin, {"name": "gitd"})[0] == 409
    result = gitd.ssh("domains:add", api.mine, "gitd.localhost")
    assert result.returncode != 0 and "gitd's own" in result.stderr


def test_a_flood_of_bad_tokens_is_braked_and_ssh_is_not(own_gitd):
    own_gitd.start()
    api, routed = Api(own_gitd), Api(own_gitd, through_traefik=True)
    good = new_token(own_gitd)
    # through Traefik, each with another X-Forwarded-For: Traefik drops
    # what a client claims, so all count against the one address
    statuses = [routed.request("GET", "/api/v1/apps", f"gitd_{i:012x}_guess",
                               headers={"X-Forwarded-For": f"10.9.8.{i}"})[0] for i in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    for client in (api, routed):
        status, _, headers = client.request("GET", "/api/v1/apps", good)
        assert status == 429 and int(headers["Retry-After"]) >= 1
    started = time.monotonic()
    assert own_gitd.ssh("apps:list").returncode == 0
    assert time.monotonic() - started < 10


SCHEMATHESIS = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()"]


def fuzz(server, token: str, examples: int = 25) -> subprocess.CompletedProcess:
    """Schemathesis against the live API (in the test's own directory: it
    keeps a cache where it runs)."""
    url = f"http://127.0.0.1:{server.gitd_api_port}/api/v1/openapi.json"
    return subprocess.run(
        # all checks but one: its stateful phase reads the 404 of a deploy of a
        # ref the new app's (empty) repository lacks as "the app just made is gone"
        [*SCHEMATHESIS, "run", url, "-H", f"Authorization: Bearer {token}", "--checks", "all",
         "--exclude-checks", "ensure_resource_availability",
         "--max-examples", str(examples), "--seed", "23", "--request-timeout", "60",
         "--no-color"],
        capture_output=True, text=True, timeout=900, env=dict(os.environ, NO_COLOR="1"),
        cwd=server.root)


def test_schemathesis_finds_no_server_error_or_schema_mismatch(own_gitd, tmp_path):
    # Schemathesis also sends requests without a token or with a broken one
    # (its ignored_auth check), more than the default brake allows a minute
    own_gitd.start(extra_env={"GITD_API_AUTH_FAILURES": "100000"})
    deployer_key = make_key(tmp_path, "fuzzer")
    assert own_gitd.ssh("keys:add", "fuzzer", input=(tmp_path / "fuzzer.pub").read_text()).returncode == 0
    for app in ("granted", "other"):
        assert own_gitd.ssh("apps:create", app).returncode == 0
    assert own_gitd.ssh("apps:grant", "granted", "fuzzer").returncode == 0
    other_before = own_gitd.ssh("apps:info", "other", "--json").stdout

    result = fuzz(own_gitd, new_token(own_gitd, key=deployer_key))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert own_gitd.ssh("apps:info", "other", "--json").stdout == other_before
    apps = [a["name"] for a in json.loads(own_gitd.ssh("apps:list", "--json").stdout)]
    assert apps == ["granted", "other"]

    result = fuzz(own_gitd, new_token(own_gitd))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert '"status": 500' not in own_gitd.log_text()


def test_a_taken_api_port_stops_the_start_with_a_clear_message(own_gitd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", own_gitd.gitd_api_port))
        taken.listen()
        with pytest.raises(RuntimeError, match="gitd serve exited"):
            own_gitd.start()
    assert own_gitd.proc.returncode != 0
    log = own_gitd.log_text()
    assert "setting api_port" in log and "Traceback" not in log
    pid_file = own_gitd.data_dir / "traefik" / "traefik.pid"
    if pid_file.exists():  # its Traefik went with it
        pid = int(pid_file.read_text().split()[0])
        assert not Path(f"/proc/{pid}").exists() or b"traefik" not in Path(
            f"/proc/{pid}/cmdline").read_bytes()


# the resources over the verbs (config, domains, formation, releases, restart, logs...)

ENV_APP = {"Dockerfile": (
    f"FROM {BASE_IMAGE}:latest\n"
    "RUN mkdir -p /www && echo up > /www/index.html\n"
    'CMD ["sh", "-c", "echo \\"started with [$GREETING]\\"; echo \\"[$GREETING]\\" > /www/env.html;'
    ' exec httpd -f -p $PORT -h /www"]\n')}


@pytest.fixture(scope="module")
def deployed(gitd, api, tmp_path_factory):
    """An app of the admin's, pushed once (v1), not granted to the deployer."""
    app = unique_app("res")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path_factory.mktemp("res") / "app", ENV_APP)
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert gitd.wait_for(gitd.host(app), "up")[0] == 200
    return app


def env_page(gitd, app: str, expected: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, text = gitd.get(gitd.host(app), "/env.html")
        if status == 200 and text.strip() == expected:
            break
        time.sleep(0.2)
    return text.strip()


def state(gitd, app: str) -> dict:
    """What a refused change must leave as it was."""
    return {what: json.loads(gitd.ssh(*what.split(), app, "--json").stdout)
            for what in ("config", "domains", "releases", "ps:scale")}


def test_a_config_patch_deploys_and_the_app_sees_it(gitd, api, deployed):
    path = f"/api/v1/apps/{deployed}/config"
    status, done, _ = api.request("PATCH", path, api.admin, {"GREETING": "hello", "OTHER": "x"})
    assert status == 200 and done["outcome"] == "released" and done["running"] == 2
    assert env_page(gitd, deployed, "[hello]") == "[hello]"
    assert api.request("GET", path, api.admin)[1] == {"GREETING": "hello", "OTHER": "x"}
    assert api.request("GET", path, api.admin)[1] == json.loads(
        gitd.ssh("config", deployed, "--json").stdout)
    status, done, _ = api.request("PATCH", path, api.admin, {"OTHER": None})
    assert status == 200 and done["description"] == "Unset OTHER"
    status, _, _ = api.request("PATCH", path + "?restart=false", api.admin, {"LATER": "1"})
    assert status == 200 and api.request("PATCH", path, api.admin, {"LATER": None})[0] == 200
    deployments = api.request("GET", f"/api/v1/apps/{deployed}/deployments", api.admin)[1]
    assert [d["trigger"] for d in deployments][:3] == ["config", "config", "config"]


@pytest.mark.parametrize("method,suffix,body", [
    ("PATCH", "config", {"GREETING": "x" * (2 * 1024 * 1024)}),
    ("PATCH", "config", {"GREETING": 5}),
    ("PATCH", "config", {"GREETING": "changed", "GITD_APP": "x"}),
    ("PATCH", "config", {"GREETING": "changed", "NOT_SET": None}),
    ("PATCH", "config", {"PORT": "99999"}),
    ("PATCH", "config", ["GREETING", "x"]),
    ("POST", "domains", {"domains": ["theirs-app.localhost"]}),
    ("POST", "domains", {"domains": ["gitd.localhost"]}),
    ("POST", "domains", {"domains": ["ok.example.com", "a`b.example.com"]}),
    ("POST", "domains", {"domains": ["x" * 300 + ".example.com"]}),
    ("DELETE", "domains", {"domains": ["never-added.example.com"]}),
    ("PUT", "formation", {"web": 21}),
    ("PUT", "formation", {"worker": 1}),
    ("PUT", "formation", {"web": "2"}),
    ("PUT", "formation", {"release": 1}),
    ("POST", "releases/v99/rollback", None),
    ("POST", "releases/v0/rollback", None),
    ("GET", "logs?lines=10001", None),
    ("GET", "logs?lines=-1", None),
    ("GET", "logs?type=..%2F..", None),
])
def test_hostile_requests_are_4xx_and_change_nothing(gitd, api, deployed, method, suffix, body):
    before = state(gitd, deployed)
    raw = b"" if body is None and method != "GET" else None
    status, answer, _ = api.request(method, f"/api/v1/apps/{deployed}/{suffix}", api.admin, body,
                                    raw=raw)
    assert 400 <= status < 500, answer
    assert state(gitd, deployed) == before


def test_a_body_not_sent_as_json_is_415_and_changes_nothing(gitd, api, deployed):
    before = state(gitd, deployed)
    status, _, _ = api.request("PATCH", f"/api/v1/apps/{deployed}/config", api.admin,
                               raw=b"GREETING=x", content_type="text/plain")
    assert status == 415 and state(gitd, deployed) == before


def test_domains_added_and_removed_over_http_are_routed_and_unrouted(gitd, api, deployed):
    path, alias = f"/api/v1/apps/{deployed}/domains", f"{deployed}-alias.test"
    status, done, _ = api.request("POST", path, api.admin, {"domains": [alias]})
    assert status == 200 and done["deployed"] and alias in [d["host"] for d in done["domains"]]
    assert gitd.wait_for(alias, "up")[0] == 200
    assert api.request("GET", path, api.admin)[1] == json.loads(
        gitd.ssh("domains", deployed, "--json").stdout)
    status, done, _ = api.request("DELETE", path, api.admin, {"domains": [alias]})
    assert status == 200 and alias not in [d["host"] for d in done["domains"]]
    deadline = time.monotonic() + 20
    while gitd.get(alias)[0] != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gitd.get(alias)[0] == 404 and gitd.get(gitd.host(deployed))[0] == 200


def test_formation_scales_and_restart_replaces_the_containers(gitd, api, deployed, docker_client):
    path = f"/api/v1/apps/{deployed}/formation"
    assert api.request("GET", path, api.admin)[1] == {"web": 1}
    status, done, _ = api.request("PUT", path, api.admin, {"web": 2})
    assert status == 200 and done["formation"] == {"web": 2} and done["deployed"]
    ps = api.request("GET", f"/api/v1/apps/{deployed}/ps", api.admin)[1]
    live = [c for c in ps["containers"] if c["phase"] == "live" and c["state"] == "running"]
    assert len(live) == 2 and ps["formation"] == {"web": 2}
    assert api.request("PUT", path, api.admin, {"web": 1})[1]["formation"] == {"web": 1}
    before = {c.id for c in gitd.live_containers(docker_client, deployed)}
    status, done, _ = api.request("POST", f"/api/v1/apps/{deployed}/restart", api.admin)
    assert (status, done) == (200, {"app": deployed, "config_applied": False})
    after = {c.id for c in gitd.live_containers(docker_client, deployed)}
    assert len(after) == 1 and not after & before
    assert gitd.get(gitd.host(deployed))[0] == 200


def test_rollback_over_http_brings_the_old_config_back(gitd, api, deployed):
    releases = api.request("GET", f"/api/v1/apps/{deployed}/releases", api.admin)[1]
    assert releases == json.loads(gitd.ssh("releases", deployed, "--json").stdout)
    assert api.request("GET", f"/api/v1/apps/{deployed}/releases?count=1", api.admin)[1] == \
        releases[:1]
    status, done, _ = api.request("POST", f"/api/v1/apps/{deployed}/releases/v1/rollback",
                                  api.admin)
    assert status == 200 and done["from"] == 1 and done["release"] == releases[0]["version"] + 1
    assert env_page(gitd, deployed, "[]") == "[]"
    shown = api.request("GET", f"/api/v1/apps/{deployed}/releases/{done['release']}", api.admin)
    assert shown[1]["kind"] == "rollback" and shown[1]["current"]


def test_logs_over_http_and_followed_as_server_sent_events(gitd, api, deployed):
    status, got, _ = api.request("GET", f"/api/v1/apps/{deployed}/logs?lines=50", api.admin)
    assert status == 200 and any("started with" in line for line in got["lines"])
    assert all(line.startswith("web.1 | ") for line in got["lines"] if "started" in line)
    # follow without asking for server-sent events: the lines so far, as JSON
    assert api.request("GET", f"/api/v1/apps/{deployed}/logs?lines=50&follow=true",
                       api.admin)[:2] == (200, got)
    req = urllib.request.Request(f"{api.base}/api/v1/apps/{deployed}/logs?follow=true&lines=5",
                                 headers={"Authorization": f"Bearer {api.admin}",
                                          "Accept": "text/event-stream"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = resp.readline().decode()
    assert first.startswith("data: web.1 | ")


def test_a_deployer_is_refused_on_an_app_not_granted_and_on_admin_routes(gitd, api, deployed):
    before = state(gitd, deployed)
    for method, suffix, body in [
            ("GET", "config", None), ("PATCH", "config", {"A": "1"}), ("GET", "domains", None),
            ("POST", "domains", {"domains": ["x.example.com"]}), ("GET", "formation", None),
            ("PUT", "formation", {"web": 2}), ("GET", "ps", None), ("GET", "releases", None),
            ("POST", "releases/v1/rollback", None), ("POST", "restart", None),
            ("GET", "logs", None), ("GET", "certificates", None), ("GET", "resources", None),
            ("GET", "checks", None), ("GET", "storage", None)]:
        status, _, _ = api.request(method, f"/api/v1/apps/{deployed}/{suffix}", api.deployer,
                                   body, raw=b"" if body is None and method != "GET" else None)
        assert status == 403, (method, suffix, status)
    for method, suffix, body in [("GET", "config", None), ("PATCH", "config", {"A": "1"}),
                                 ("PUT", "formation", {"web": 2}), ("POST", "restart", None),
                                 ("POST", "domains", {"domains": ["x.example.com"]})]:
        status, _, _ = api.request(method, f"/api/v1/apps/{api.mine}/{suffix}", api.deployer,
                                   body, raw=b"" if body is None and method != "GET" else None)
        assert status == 403, (method, suffix, status)
    assert api.request("GET", f"/api/v1/apps/{api.mine}/domains", api.deployer)[0] == 200
    assert api.request("GET", "/api/v1/services", api.deployer)[0] == 403
    assert state(gitd, deployed) == before


def test_services_over_http_are_created_linked_unlinked_and_destroyed(own_gitd, tmp_path):
    """The services verbs over HTTP, with SSH's admin rules: a real Redis,
    linked to a deployed app through a config release and unlinked again."""
    own_gitd.start(extra_env={"GITD_SERVICE_IMAGES": "redis=gitd-ci/redis:latest"})
    client = Api(own_gitd)
    admin = new_token(own_gitd)
    deployer_key = make_key(tmp_path, "svc")
    assert own_gitd.ssh("keys:add", "svc", input=(tmp_path / "svc.pub").read_text()).returncode == 0
    deployer = new_token(own_gitd, key=deployer_key)
    assert own_gitd.ssh("apps:create", "shop").returncode == 0
    assert own_gitd.ssh("apps:grant", "shop", "svc").returncode == 0
    pushed = own_gitd.push(make_repo(tmp_path / "shop", ENV_APP), "shop")
    assert pushed.returncode == 0, pushed.stderr

    body = {"kind": "redis", "name": "cache"}
    assert client.request("POST", "/api/v1/services", deployer, body)[0] == 403
    status, made, _ = client.request("POST", "/api/v1/services", admin, body)
    assert status == 201 and made["env_var"] == "REDIS_URL", made
    assert client.request("POST", "/api/v1/services", admin, body)[0] == 409
    assert client.request("POST", "/api/v1/services/cache/links/shop", deployer)[0] == 403

    status, linked, _ = client.request("POST", "/api/v1/services/cache/links/shop", admin)
    assert status == 201 and linked["config"]["outcome"] == "released", linked
    config = json.loads(own_gitd.ssh("config", "shop", "--json").stdout)
    assert config["REDIS_URL"].startswith("redis://")
    status, info, _ = client.request("GET", "/api/v1/services/cache", admin)
    assert info["linked"] == {"shop": "REDIS_URL"}

    status, unlinked, _ = client.request("DELETE", "/api/v1/services/cache/links/shop", admin)
    assert status == 200 and unlinked["env_var"] == "REDIS_URL"
    assert "REDIS_URL" not in json.loads(own_gitd.ssh("config", "shop", "--json").stdout)
    triggers = [d["trigger"] for d in client.request("GET", "/api/v1/apps/shop/deployments",
                                                     admin)[1]]
    assert triggers[:2] == ["config", "config"]

    assert client.request("DELETE", "/api/v1/services/cache", deployer)[0] == 403
    assert client.request("DELETE", "/api/v1/services/cache", admin)[:2] == (200, {"name": "cache"})
    assert client.request("GET", "/api/v1/services", admin)[1] == []

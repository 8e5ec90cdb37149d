"""Deployments (issue #23) end to end: every deploy a row with its trigger
and log, over real ssh and git; images deployed from a local registry."""

import io
import json
import shlex
import threading
import time
import urllib.error
import urllib.request

import docker.errors
import pytest

from gitd.core.config import Settings
from gitd.registry import ManagedRegistry
from hooks.registry import registry_host
from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, free_port, git, make_key, make_repo, unique_app
from tests.e2e.helpers import ok

pytestmark = pytest.mark.e2e


def rows(gitd, app):
    return json.loads(ok(gitd, "deployments", app, "--json").stdout)


def test_a_push_config_set_scale_and_rollback_each_leave_a_deployment(gitd, tmp_path):
    app = unique_app("dep")
    ok(gitd, "apps:create", app)
    repo = make_repo(tmp_path / app, web_app("dep v1"))
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    ok(gitd, "config:set", app, "GREETING=hi")
    ok(gitd, "ps:scale", app, "web=1")  # unchanged, still a redeploy
    ok(gitd, "releases:rollback", app, "v1")

    listed = rows(gitd, app)
    assert [(r["trigger"], r["status"]) for r in listed] == [
        ("rollback", "succeeded"), ("scale", "succeeded"), ("config", "succeeded"),
        ("push", "succeeded")]
    push = listed[-1]
    assert push["release"] == 1 and len(push["commit"]) == 40 and push["by"]
    assert push["created_at"] <= push["started_at"] <= push["finished_at"]
    info = json.loads(ok(gitd, "deployments:info", str(push["id"]), "--json").stdout)
    assert "-----> Building with Dockerfile" in info["log"]
    assert "-----> Releasing v1" in info["log"]
    rollback = json.loads(ok(gitd, "deployments:info", str(listed[0]["id"]), "--json").stdout)
    assert rollback["release"] == 3 and "Releasing v3: Rollback to v1" in rollback["log"]
    shown = ok(gitd, "deployments", app).stdout
    assert "rollback" in shown and "succeeded" in shown
    assert gitd.get(gitd.host(app)) == (200, "dep v1\n")
    ok(gitd, "apps:destroy", app, "--force")


@pytest.fixture
def registry(docker_client, tmp_path):
    settings = Settings(data_dir=tmp_path / "registry", registry_port=free_port(), instance="test")
    server = ManagedRegistry(settings)
    server.start()
    yield registry_host(settings)
    server.stop()


@pytest.fixture
def image_of(docker_client, base_image, registry):
    """Build an image, push it to the test's registry, drop it locally (a
    deploy must pull it); returns its reference."""
    made = []

    def build(tag: str, version: str, extra: str = "") -> str:
        ref = f"{registry}/team/{unique_app('img')}:{tag}"
        dockerfile = web_app(version, extra=extra)["Dockerfile"]
        image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref,
                                              rm=True)
        for line in docker_client.images.push(ref, stream=True, decode=True):
            assert "error" not in line, line
        docker_client.images.remove(ref)
        made.append(ref)
        return ref

    yield build
    for ref in made:
        try:
            docker_client.images.remove(ref, force=True)
        except docker.errors.APIError:
            pass


def test_deploy_image_serves_it_with_config_then_rolls_back(gitd, docker_client, image_of):
    app = unique_app("img")
    ok(gitd, "apps:create", app)
    ok(gitd, "config:set", app, "GREETING=hi")
    one, two = image_of("1", "image one"), image_of("2", "image two")

    first = ok(gitd, "apps:deploy-image", app, one)
    assert f"-----> Pulling {one}" in first.stdout and "-----> Releasing v1" in first.stdout
    assert gitd.get(gitd.host(app)) == (200, "image one\n")
    [container] = gitd.live_containers(docker_client, app)
    assert "GREETING=hi" in container.attrs["Config"]["Env"]
    assert docker_client.images.get(f"gitd/{app}:v1").id == docker_client.images.get(one).id
    ok(gitd, "apps:deploy-image", app, two)
    assert gitd.get(gitd.host(app)) == (200, "image two\n")
    ok(gitd, "releases:rollback", app, "v1")
    assert gitd.get(gitd.host(app)) == (200, "image one\n")

    listed = rows(gitd, app)
    assert [(r["trigger"], r["status"], r["image"], r["release"]) for r in listed] == [
        ("rollback", "succeeded", f"gitd/{app}:v3", 3), ("image", "succeeded", two, 2),
        ("image", "succeeded", one, 1)]
    ok(gitd, "apps:destroy", app, "--force")


def test_an_image_past_max_image_bytes_or_from_gitd_own_registry_is_refused(
        own_gitd, docker_client, image_of):
    """A pull had no size bound, and 127.1:PORT (or 0x7f.1, 127.0.0.2...)
    reached gitd's own registry past the check for 127.0.0.1 and localhost."""
    own_port = free_port()
    own_gitd.start(extra_env={"GITD_MAX_IMAGE_BYTES": "200000",
                              "GITD_REGISTRY_PORT": str(own_port)})
    ok(own_gitd, "apps:create", "big")
    big = image_of("1", "big")  # the base image's layer alone is over 200 kB
    refused = own_gitd.ssh("apps:deploy-image", "big", big)
    assert refused.returncode == 1
    assert "larger than max_image_bytes (200000 bytes)" in refused.stderr, refused.stderr
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(big)
    assert rows(own_gitd, "big")[0]["status"] == "failed"
    assert json.loads(ok(own_gitd, "releases", "big", "--json").stdout) == []

    for spelling in ("127.1", "0x7f.1", "127.0.0.2", "2130706433", "LOCALHOST"):
        ref = f"{spelling}:{own_port}/gitd/other:v1"
        refused = own_gitd.ssh("apps:deploy-image", "big", ref)
        assert refused.returncode == 1 and "own registry" in refused.stderr, (ref, refused.stderr)
    assert len(rows(own_gitd, "big")) == 1  # refused before any deployment


def test_a_traefik_labelled_or_unreachable_image_is_refused_with_nothing_changed(
        gitd, docker_client, image_of, tmp_path):
    app = unique_app("img")
    ok(gitd, "apps:create", app)
    good = image_of("1", "good")
    ok(gitd, "apps:deploy-image", app, good)
    evil = image_of("evil", "evil", extra=f"LABEL traefik.http.routers.x.rule=Host(`{app}.localhost`)\n")
    with gitd.db() as db:
        before = db.execute("SELECT version, status FROM releases WHERE app = ?", [app]).fetchall()

    refused = gitd.ssh("apps:deploy-image", app, evil)
    assert refused.returncode == 1
    assert "carries Traefik labels" in refused.stderr
    with gitd.db() as db:
        assert db.execute("SELECT version, status FROM releases WHERE app = ?", [app]).fetchall() == before
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(evil)  # pulled for the check, not kept
    assert gitd.get(gitd.host(app)) == (200, "good\n")
    last = rows(gitd, app)[0]
    assert (last["trigger"], last["status"]) == ("image", "failed")
    assert "Traefik labels" in last["error"]

    for hostile, why, status in ((f"gitd/{app}:v1", "the apps' own images", 1),
                                 ("--help=x", "usage: apps:deploy-image", 2), ("a b;id", "invalid image", 2),
                                 (f"127.0.0.1:{free_port()}/none:1", "cannot pull", 1)):
        result = gitd.ssh("apps:deploy-image", app, shlex.quote(hostile))
        assert (result.returncode, why in result.stderr) == (status, True), result.stderr
    assert gitd.get(gitd.host(app)) == (200, "good\n")
    ok(gitd, "apps:destroy", app, "--force")


# over HTTP (the API)

def token(gitd, key=None) -> str:
    made = gitd.ssh("tokens:create", "--name", unique_app("tok"), key=key)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def api(gitd, method, path, bearer, body=None, accept="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{gitd.gitd_api_port}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {bearer}", "Accept": accept,
                 **({"Content-Type": "application/json"} if data else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_ended(gitd, bearer, deployment_id, timeout=180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, row = api(gitd, "GET", f"/api/v1/deployments/{deployment_id}", bearer)
        assert status == 200, row
        if row["status"] in ("succeeded", "failed", "cancelled"):
            return row
        time.sleep(0.3)
    raise AssertionError(f"deployment {deployment_id} still {row['status']}")


def read_events(gitd, bearer, deployment_id, out: list) -> None:
    """The SSE log: (arrival time, event, data) for each event, until the end."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{gitd.gitd_api_port}/api/v1/deployments/{deployment_id}/log",
        headers={"Authorization": f"Bearer {bearer}", "Accept": "text/event-stream"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event, data = "message", []
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                data.append(line[len("data: "):])
            elif line.startswith("event: "):
                event = line[len("event: "):]
            elif line == "" and data:
                out.append((time.monotonic(), event, "\n".join(data)))
                if event == "end":
                    return
                event, data = "message", []


def test_post_a_ref_deploys_it_in_the_background_with_its_log_live(gitd, tmp_path):
    app = unique_app("api")
    ok(gitd, "apps:create", app)
    repo = make_repo(tmp_path / app, web_app("api v1"))
    assert gitd.push(repo, app).returncode == 0
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, web_app("api v2", extra="RUN sleep 2\n"), "v2")
    feature_commit = git(repo, "rev-parse", "HEAD").strip()
    stored = gitd.push(repo, app, refspec="feature")
    assert stored.returncode == 0 and "not deployed" in stored.stderr
    bearer = token(gitd)

    status, created = api(gitd, "POST", f"/api/v1/apps/{app}/deployments", bearer, {"ref": "feature"})
    assert status == 202, created
    assert (created["status"], created["trigger"], created["ref"], created["commit"]) == (
        "pending", "api", "feature", feature_commit)
    events: list = []
    follower = threading.Thread(target=read_events, args=(gitd, bearer, created["id"], events))
    follower.start()
    row = wait_ended(gitd, bearer, created["id"])
    follower.join(30)
    assert row["status"] == "succeeded", row["log"]
    assert row["release"] == 2 and "-----> Building with Dockerfile" in row["log"]
    assert gitd.get(gitd.host(app)) == (200, "api v2\n")

    assert events and events[-1][1] == "end"
    assert json.loads(events[-1][2])["status"] == "succeeded"
    lines = [data for _, kind, data in events if kind == "message"]
    assert any("Building with Dockerfile" in line for line in lines)
    assert any("Deployed to" in line for line in lines)
    first_build_line = next(t for t, kind, data in events if "Building with Dockerfile" in data)
    assert events[-1][0] - first_build_line > 1.5, "the lines came only at the end, not live"
    # the JSON log of an ended deployment, and the history holds it beside the push
    status, logged = api(gitd, "GET", f"/api/v1/deployments/{created['id']}/log", bearer)
    assert status == 200 and logged["log"] == row["log"]
    status, listed = api(gitd, "GET", f"/api/v1/apps/{app}/deployments", bearer)
    assert [(r["trigger"], r["status"]) for r in listed] == [("api", "succeeded"), ("push", "succeeded")]

    # hostile refs and ids: refused, nothing deployed
    for body, expected in (({"ref": "../other"}, 400), ({"ref": "nosuch"}, 404),
                           ({"ref": "main", "image": "x:1"}, 400), ({"sha": "x"}, 400),
                           ({"ref": "-x"}, 400), ({"ref": "x" * 10_000}, 400)):
        status, answer = api(gitd, "POST", f"/api/v1/apps/{app}/deployments", bearer, body)
        assert status == expected, (body, answer)
    for path, expected in (("/api/v1/deployments/abc", 400), ("/api/v1/deployments/0", 400),
                           ("/api/v1/deployments/99999999999", 404),
                           ("/api/v1/deployments/" + "9" * 40, 400)):
        assert api(gitd, "GET", path, bearer)[0] == expected, path
    assert len(api(gitd, "GET", f"/api/v1/apps/{app}/deployments", bearer)[1]) == 2
    ok(gitd, "apps:destroy", app, "--force")


def test_post_an_image_deploys_it_and_a_deployer_may_not(gitd, tmp_path, image_of):
    app = unique_app("api")
    ok(gitd, "apps:create", app)
    one = image_of("1", "api image one")
    admin = token(gitd)
    dev_key = make_key(tmp_path, "dev")
    dev_name = unique_app("dev")
    ok(gitd, "keys:add", dev_name, input=(dev_key.with_suffix(".pub")).read_text())
    ok(gitd, "apps:grant", app, dev_name)
    dev = token(gitd, key=dev_key)

    status, answer = api(gitd, "POST", f"/api/v1/apps/{app}/deployments", dev, {"image": one})
    assert status == 403, answer
    status, created = api(gitd, "POST", f"/api/v1/apps/{app}/deployments", admin, {"image": one})
    assert status == 202 and created["trigger"] == "image", created
    row = wait_ended(gitd, admin, created["id"])
    assert row["status"] == "succeeded", row["log"]
    assert gitd.get(gitd.host(app)) == (200, "api image one\n")
    # the deployer sees its app's deployments, not another app's
    assert api(gitd, "GET", f"/api/v1/deployments/{created['id']}", dev)[0] == 200
    other = unique_app("api")
    ok(gitd, "apps:create", other)
    assert api(gitd, "GET", f"/api/v1/apps/{other}/deployments", dev)[0] == 403
    ok(gitd, "apps:destroy", app, "--force")
    assert api(gitd, "GET", f"/api/v1/deployments/{created['id']}", admin)[0] == 404
    ok(gitd, "apps:destroy", other, "--force")

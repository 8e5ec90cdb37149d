"""Deployments (issue #23) end to end: every deploy a row with its trigger
and log, over real ssh and git; images deployed from a local registry."""

import io
import json
import shlex

import docker.errors
import pytest

from gitd.core.config import Settings
from gitd.registry import ManagedRegistry
from hooks.registry import registry_host
from tests.e2e.conftest import web_app
from tests.e2e.harness import free_port, make_repo, unique_app

pytestmark = pytest.mark.e2e


def ok(gitd, *args, **kw):
    result = gitd.ssh(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result


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

    for hostile, why, status in ((f"gitd/{app}:v1", "the apps' own images", 2),
                                 ("--help=x", "usage: apps:deploy-image", 2), ("a b;id", "invalid image", 2),
                                 (f"127.0.0.1:{free_port()}/none:1", "cannot pull", 1)):
        result = gitd.ssh("apps:deploy-image", app, shlex.quote(hostile))
        assert (result.returncode, why in result.stderr) == (status, True), result.stderr
    assert gitd.get(gitd.host(app)) == (200, "good\n")
    ok(gitd, "apps:destroy", app, "--force")

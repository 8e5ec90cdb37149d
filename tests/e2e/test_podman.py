"""Podman as the engine (issue #28): the core of gitd against Podman's
Docker-compatible API, served by `podman system service` on a socket of
this module's own. No systemd here: Podman runs no health checks, gitd does.
"""

import shutil
import subprocess
import time

import docker
import pytest

from tests.conftest import require
from tests.e2e.acme_helpers import DOMAIN, gitd_with_pebble, pebble_certificate
from tests.e2e.conftest import BASE_IMAGE, web_app
from tests.e2e.harness import Load, commit, gitd_command, make_repo, new_gitd, unique_app
from tests.e2e.helpers import (create, file_routed, ok, push_ok, slow_boot_app,
                               wait_docker_health)
from tests.e2e.services_helpers import PG_IMAGE, PG_VERSION, client_app, info, rows, sql

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def podman(docker_client, base_image, tmp_path_factory):
    """A Podman API service of this module's own, with the base image in
    Podman's image store (loaded from Docker's when missing)."""
    require(shutil.which("podman") is not None, "podman is not installed (bash .ci/setup)")
    root = tmp_path_factory.mktemp("podman")
    url = f"unix://{root}/podman.sock"
    log = open(root / "service.log", "wb")
    service = subprocess.Popen(["podman", "system", "service", "--time=0", url], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    client = None
    deadline = time.monotonic() + 30
    while client is None and time.monotonic() < deadline:
        try:
            client = docker.DockerClient(base_url=url, timeout=120)
            client.ping()
        except docker.errors.DockerException:
            client = None
            time.sleep(0.2)
    require(client is not None, f"podman system service did not answer:\n"
                                f"{(root / 'service.log').read_text()}")
    for image in (base_image, PG_IMAGE):  # .ci/setup loads them once per machine
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            saved = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            subprocess.run(["podman", "--url", url, "load"], stdin=saved.stdout, check=True,
                           capture_output=True, timeout=300)
            saved.wait(timeout=60)
    client.images.get(PG_IMAGE).tag("gitd-test/postgres", PG_VERSION)
    client.url = url
    yield client
    service.terminate()
    service.wait(timeout=30)


def app_tags(client, apps: list[str]) -> list[str]:
    """The tags Podman has of these apps' images (docker.io/gitd/<app>:vN)."""
    return [tag for image in client.images.list() for tag in image.tags
            if any(tag.startswith(f"docker.io/gitd/{app}:") for app in apps)]


@pytest.fixture(scope="module")
def podman_gitd(podman, tmp_path_factory):
    server = new_gitd(tmp_path_factory.mktemp("podman-gitd"))
    server.start(timeout=60, extra_args=("--engine-url", podman.url),
                 extra_env={"GITD_SERVICE_IMAGES": "postgres=gitd-test/postgres:{version}"})
    yield server
    server.stop()
    with server.db() as conn:
        apps = [row[0] for row in conn.execute("SELECT DISTINCT app FROM releases")]
    server.cleanup(podman)
    for tag in app_tags(podman, apps):  # the harness looks for Docker's gitd/<app>:vN
        try:
            podman.images.remove(tag)
        except docker.errors.APIError:
            pass


def test_a_dockerfile_push_deploys_on_podman(podman_gitd, podman, tmp_path):
    app = unique_app("pod")
    create(podman_gitd, app)
    repo = make_repo(tmp_path / app, web_app("v1"))
    pushed = push_ok(podman_gitd, repo, app)
    assert "Dockerfile" in pushed.stderr
    assert podman_gitd.get(f"{app}.localhost") == (200, "v1\n")
    # on Podman, not Docker
    containers = podman.containers.list(filters={"label": [f"gitd.app={app}"]})
    assert containers, "no container of the app in Podman"
    # the health checks gitd runs make Podman call it healthy (the first one
    # health_interval after the start), and the route file follows it there
    wait_docker_health(containers[0], "healthy", 75)
    time.sleep(3)  # a look of the follower (hooks.docker_routes) at Podman's listing
    assert list(file_routed(podman_gitd, f"{app}-s1").values()) == ["UP"]
    assert podman_gitd.get(f"{app}.localhost") == (200, "v1\n")


def test_doctor_names_podman(podman_gitd, podman):
    doctor = subprocess.run(gitd_command("doctor", "--data-dir", str(podman_gitd.data_dir),
                                         "--engine-url", podman.url),
                            capture_output=True, text=True, timeout=120)
    assert f"ok   engine: Podman 4.3.1 (API 1.41) at {podman.url}" in doctor.stdout, doctor.stdout
    assert "engine health checks: Podman runs none here" in doctor.stdout


def test_a_deploy_under_load_drops_no_request_and_a_failed_check_keeps_it(
        podman_gitd, podman, tmp_path):
    app = unique_app("podzd")
    create(podman_gitd, app)
    repo = make_repo(tmp_path / app, web_app("v1"))
    push_ok(podman_gitd, repo, app)
    commit(repo, slow_boot_app("v2", 2), "slow boot")
    with Load(podman_gitd, podman_gitd.host(app), clients=4) as load:
        push_ok(podman_gitd, repo, app)
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert load.bodies == {"v1", "v2"}, load.bodies

    ok(podman_gitd, "checks:set", app, "wait=4", "timeout=1")
    before = sorted(c.id for c in podman.containers.list(filters={"label": [f"gitd.app={app}"]}))
    commit(repo, {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\nRUN mkdir /www\n"
        'CMD ["sh", "-c", "exec httpd -f -p 9999 -h /www"]\n')}, "wrong port")
    with Load(podman_gitd, podman_gitd.host(app), clients=2) as load:
        failed = podman_gitd.push(repo, app)
    assert failed.returncode != 0
    assert "GET / -> no answer on port 5000 (failed)" in failed.stderr, failed.stderr
    assert "v2 keeps serving" in failed.stderr
    assert load.failures == [] and load.ok > 0
    after = sorted(c.id for c in podman.containers.list(filters={"label": [f"gitd.app={app}"]}))
    assert after == before
    ok(podman_gitd, "apps:destroy", app, "--force")


def test_config_and_rollback_on_podman(podman_gitd, podman, tmp_path):
    app = unique_app("podrb")
    create(podman_gitd, app)
    env_app = {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        'CMD ["sh", "-c", "mkdir -p /www && echo \\"$GREETING\\" > /www/index.html && '
        'exec httpd -f -p $PORT -h /www"]\n')}
    repo = make_repo(tmp_path / app, env_app)
    push_ok(podman_gitd, repo, app)
    ok(podman_gitd, "config:set", app, "GREETING=hello")
    assert podman_gitd.wait_for(podman_gitd.host(app), "hello")[0] == 200
    ok(podman_gitd, "config:set", app, "GREETING=bye")
    assert podman_gitd.wait_for(podman_gitd.host(app), "bye")[0] == 200
    ok(podman_gitd, "releases:rollback", app, "v2")
    assert podman_gitd.wait_for(podman_gitd.host(app), "hello")[0] == 200
    ok(podman_gitd, "apps:destroy", app, "--force")
    # Podman tags them docker.io/gitd/<app>:vN: destroy finds them all the same
    assert app_tags(podman, [app]) == []


def test_a_postgres_service_on_podman(podman_gitd, tmp_path):
    db, app = unique_app("poddb"), unique_app("podshop")
    ok(podman_gitd, "services:create", "postgres", db, "--version", PG_VERSION)
    create(podman_gitd, app)
    repo = make_repo(tmp_path / app, client_app("v1", PG_IMAGE))
    push_ok(podman_gitd, repo, app)
    ok(podman_gitd, "services:link", db, app)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and info(podman_gitd, db)["health"] != "healthy":
        time.sleep(1)
    assert info(podman_gitd, db)["health"] == "healthy"  # gitd ran Podman's check
    sql(podman_gitd, app, "CREATE TABLE notes (id serial PRIMARY KEY, note text); "
                          "INSERT INTO notes (note) VALUES ('first')")
    assert rows(podman_gitd, app) == ["first"]
    ok(podman_gitd, "apps:destroy", app, "--force")
    ok(podman_gitd, "services:destroy", db, "--force")


def test_https_with_a_certificate_from_the_acme_ca_on_podman(podman, tmp_path):
    with gitd_with_pebble(tmp_path, podman, "--engine-url", podman.url) as server:
        app = unique_app("podtls")
        create(server, app)
        push_ok(server, make_repo(tmp_path / app, web_app("tls-v1")), app)
        issued = pebble_certificate(server, f"{app}.{DOMAIN}")
        assert isinstance(issued, tuple), f"no certificate from Pebble: {issued}"
        status, body, _ = issued
        assert (status, body.strip()) == (200, "tls-v1")
        assert podman.containers.list(filters={"label": [f"gitd.app={app}"]})

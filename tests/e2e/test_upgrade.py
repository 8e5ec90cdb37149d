"""Upgrades in place (issue #26): a data dir written by an earlier gitd, built
from this repository's history, is taken over by the current gitd while its
app keeps answering.

Each old version is a `git archive` of a commit that closed a milestone
(README, "Upgrades"), run from its own tree with `python3 -P` and
PYTHONPATH (its code, today's dependencies). It makes real state through the
real ssh and git clients: an app pushed twice, config, a domain, a second
key, a Postgres service linked with a row in it, a custom certificate. As on
a VPS, Traefik runs in its own process (`--traefik external`), its static
config rendered by the old gitd; the old gitd is stopped with SIGTERM, the
apps left running, and the current gitd started on the same data dir under
HTTP load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitd.core.store import SCHEMA_VERSION
from gitd.traefik import ping
from tests.conftest import require
from tests.e2e import harness
from tests.e2e.conftest import web_app
from tests.e2e.harness import Load, commit, make_key, make_repo, new_gitd, unique_app
from tests.e2e.tls_helpers import MiniCA, https_get

pytestmark = pytest.mark.e2e

# commit -> why it is one (README, "Upgrades")
OLD_VERSIONS = {
    "6807c2d": "services merged (issue #12): the last schema with a `domains` table",
    "b7419a6": "the 11-24 milestone closed (swarm, path routes): no API tokens or deployments",
}
PG_IMAGE = "gitd-ci/postgres:latest"
PG_VERSION = "15"
IMAGES_ENV = {"GITD_SERVICE_IMAGES": "postgres=gitd-test/postgres:{version}"}
CURRENT_GITD = harness.gitd_command  # this checkout's (or GITD_TEST_BIN's)

RENDER_TRAEFIK = """
import sys
from pathlib import Path
try:
    from gitd.core.config import Settings
except ImportError:
    from gitd.config import Settings
from gitd.traefik import prepare_tls_dirs, render_static_config
data_dir, http, https, api, instance = sys.argv[1:]
settings = Settings(data_dir=Path(data_dir), http_host="127.0.0.1", http_port=int(http),
                    https_port=int(https), traefik_api_port=int(api), instance=instance)
prepare_tls_dirs(settings)  # Traefik's file provider watches a directory that exists
print(render_static_config(settings, mode="external"))
"""


def start_traefik(gitd, source: Path) -> subprocess.Popen:
    """Traefik in its own process (traefik.service), configured by the old gitd."""
    instance = gitd.db().execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()[0]
    rendered = subprocess.run(
        [sys.executable, "-P", "-c", RENDER_TRAEFIK, str(gitd.data_dir), str(gitd.http_port),
         str(gitd.https_port), str(gitd.api_port), instance],
        env={**os.environ, "PYTHONPATH": str(source)}, capture_output=True, text=True, check=True)
    config = gitd.root / "traefik-external.yml"
    config.write_text(rendered.stdout)
    with open(gitd.root / "traefik-external.log", "wb") as log:
        proc = subprocess.Popen([shutil.which("traefik"), f"--configFile={config}"], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ping(f"http://127.0.0.1:{gitd.api_port}"):
            return proc
        time.sleep(0.1)
    raise RuntimeError((gitd.root / "traefik-external.log").read_text())


def ok(gitd, *args, **kwargs) -> subprocess.CompletedProcess:
    result = gitd.ssh(*args, **kwargs)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def psql(docker_client, gitd, service: str, statement: str) -> str:
    [container] = docker_client.containers.list(filters={"label": [
        f"gitd.instance={gitd.instance}", f"gitd.service={service}"]})
    code, out = container.exec_run(["psql", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAtc",
                                    statement])
    assert code == 0, out
    return out.decode().strip()


def served_over_https(gitd, host: str, ca_pem: str, timeout: float = 30) -> str:
    """The body served for `host` once its certificate verifies against `ca_pem`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, body, _ = https_get(gitd.https_port, host, ca_pem)
            if status == 200:
                return body.strip()
        except OSError:  # ssl errors included: not the custom certificate yet
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def releases(gitd, app: str) -> list[dict]:
    return json.loads(ok(gitd, "releases", app, "--json").stdout)


@pytest.fixture
def old_gitd(request, docker_client, base_image, tmp_path):
    require(docker_client.images.list(name=PG_IMAGE) != [],
            f"image {PG_IMAGE} is missing (bash .ci/images/build)")
    docker_client.images.get(PG_IMAGE).tag("gitd-test/postgres", PG_VERSION)
    source = harness.source_at(request.param, tmp_path / "old-src")
    harness.gitd_command = harness.gitd_command_of(source)
    server = traefik = None
    try:
        server = new_gitd(tmp_path / "gitd")
        server.https_port = harness.free_port()
        traefik = start_traefik(server, source)
        yield server
    finally:
        harness.gitd_command = CURRENT_GITD
        try:
            if server:
                server.stop()
                server.cleanup(docker_client)
        finally:  # a failed cleanup must not leave Traefik running
            if traefik:
                traefik.terminate()
                traefik.wait(10)


@pytest.mark.parametrize("old_gitd", list(OLD_VERSIONS), indirect=True)
def test_the_current_gitd_takes_over_an_old_data_dir_without_dropping_a_request(
        old_gitd, docker_client, tmp_path):
    gitd = old_gitd
    external = ("--traefik", "external", "--traefik-api-url", f"http://127.0.0.1:{gitd.api_port}",
                "--https-port", str(gitd.https_port))
    gitd.start(extra_env=IMAGES_ENV, extra_args=external)

    # the old gitd makes real state
    app, db = unique_app("upg"), unique_app("pg")
    host = f"{app}.example.org"
    ok(gitd, "apps:create", app)
    ok(gitd, "checks:set", app, "drain=0.3")
    ok(gitd, "config:set", app, "GREETING=hello", "--no-restart")
    ok(gitd, "domains:add", app, host)
    ok(gitd, "services:create", "postgres", db, "--version", PG_VERSION)
    ok(gitd, "services:link", db, app)
    repo = make_repo(tmp_path / app, web_app("v1"))
    assert gitd.push(repo, app).returncode == 0
    commit(repo, web_app("v2"), "v2")
    assert gitd.push(repo, app).returncode == 0
    assert gitd.wait_for(gitd.host(app), "v2", 30)[0] == 200
    psql(docker_client, gitd, db, "CREATE TABLE notes (note text); "
                                  "INSERT INTO notes VALUES ('kept')")
    dev = make_key(tmp_path, "dev")
    ok(gitd, "keys:add", "dev", input=(tmp_path / "dev.pub").read_text())
    ca = MiniCA()
    ok(gitd, "certs:add", app, input=ca.bundle([host]))
    assert served_over_https(gitd, host, ca.pem) == "v2"
    before = {r["version"]: r for r in releases(gitd, app)}
    config_before = json.loads(ok(gitd, "config", app, "--json").stdout)
    assert config_before["GREETING"] == "hello" and "DATABASE_URL" in config_before
    containers = {c.id for c in gitd.live_containers(docker_client, app)}

    # stopped, the app left running; the current gitd started under load
    # over HTTP on the app's own host: the custom domain redirects to HTTPS once it has a certificate
    with Load(gitd, gitd.host(app), clients=3, interval=0.05, max_seconds=600) as load:
        time.sleep(1)
        assert gitd.stop() == 0
        assert {c.id for c in gitd.live_containers(docker_client, app)} == containers
        harness.gitd_command = CURRENT_GITD
        gitd.start(extra_env=IMAGES_ENV, extra_args=external)
        upgraded_at = load.count
        time.sleep(2)
        # kept: releases, config, domain, key, service data, certificate
        after = {r["version"]: r for r in releases(gitd, app)}
        assert {(v, r["commit"], r["status"]) for v, r in after.items()} == \
            {(v, r["commit"], r["status"]) for v, r in before.items()}
        assert json.loads(ok(gitd, "config", app, "--json").stdout) == config_before
        assert host in ok(gitd, "domains", app).stdout
        assert "dev" in ok(gitd, "keys").stdout
        assert gitd.ssh("apps:info", app, key=dev).returncode != 0  # no grant: as before
        assert psql(docker_client, gitd, db, "SELECT note FROM notes") == "kept"
        assert served_over_https(gitd, host, ca.pem, timeout=0) == "v2"
        # a rollback to a release the old gitd made, then a push
        ok(gitd, "releases:rollback", app, f"v{min(before)}")
        assert gitd.wait_for(gitd.host(app), "v1", 30)[0] == 200
        commit(repo, web_app("v3"), "v3")
        pushed = gitd.push(repo, app)
        assert pushed.returncode == 0, pushed.stderr
        assert gitd.wait_for(gitd.host(app), "v3", 30)[0] == 200
        assert served_over_https(gitd, host, ca.pem, timeout=10) == "v3"
        time.sleep(1)
    schema = gitd.db().execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
    assert schema == str(SCHEMA_VERSION)
    assert load.failures == [], load.failures[:5]
    assert load.count > upgraded_at > 20
    assert {"v1", "v2", "v3"} <= load.bodies

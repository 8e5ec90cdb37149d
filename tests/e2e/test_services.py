"""Postgres and Redis services and app storage, end to end: real ssh, git,
Docker, Traefik, and the servers themselves (local images gitd-ci/postgres
and gitd-ci/redis, built by .ci/images/build)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import docker.types
import pytest

from tests.conftest import require
from tests.e2e.conftest import BASE_IMAGE, web_app
from tests.e2e.harness import Load, commit, gitd_command, make_key, new_gitd, unique_app
from tests.e2e.helpers import fails, ok
from tests.e2e.services_helpers import (IMAGES_ENV, PG_IMAGE, PG_VERSION, REDIS_IMAGE, client_app,
                                         deploy, info, ok_bytes, rows, sql, storage_app,
                                         tag_versioned)

pytestmark = pytest.mark.e2e

# postgres by version (an upgrade needs {version}: tag_versioned makes
# PG_VERSION's image), redis one image whatever version is asked


@pytest.fixture(scope="module")
def paas(docker_client, base_image, tmp_path_factory):
    """A gitd whose services use the local images; restarted by one test."""
    import docker.errors

    for image in (PG_IMAGE, REDIS_IMAGE):
        try:
            docker_client.images.get(image)
            found = True
        except docker.errors.ImageNotFound:
            found = False
        require(found, f"image {image} is missing (bash .ci/images/build)")
    tag_versioned(docker_client)
    server = new_gitd(tmp_path_factory.mktemp("services"))
    server.start(extra_env=IMAGES_ENV)
    yield server
    server.stop()
    server.cleanup(docker_client)




def wait_healthy(gitd, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and info(gitd, name)["health"] != "healthy":
        time.sleep(1)
    assert info(gitd, name)["health"] == "healthy"


def test_postgres_data_survives_deploys_restarts_and_restores(paas, docker_client, tmp_path):
    db, app, other = unique_app("db"), unique_app("shop"), unique_app("other")
    created = ok(paas, "services:create", "postgres", db, "--version", PG_VERSION)
    assert f"services:link {db} APP" in created.stdout
    assert "it runs postgres 15." in created.stdout and created.stderr == ""
    repo = deploy(paas, tmp_path, app, client_app("v1", PG_IMAGE))
    deploy(paas, tmp_path, other, client_app("o1", PG_IMAGE))

    linked = ok(paas, "services:link", db, app)
    assert "as DATABASE_URL" in linked.stdout and "Releasing v2" in linked.stdout
    url = ok(paas, "config:get", app, "DATABASE_URL").stdout.strip()
    assert url.startswith("postgres://postgres:") and f"-svc-{db}:5432/" in url
    assert info(paas, db)["linked"] == {app: "DATABASE_URL"}
    assert info(paas, db)["exposed"] is None
    sql(paas, app, "CREATE TABLE notes (id serial PRIMARY KEY, note text); "
                   "INSERT INTO notes (note) VALUES ('first')")

    # an app that is not linked reaches nothing: not on the service's network
    reach = paas.ssh("run", other, "--", "psql", url, "-c", "select 1")
    assert reach.returncode != 0
    assert "could not translate host name" in reach.stderr or "timeout" in reach.stderr, reach.stderr

    commit(repo, client_app("v2", PG_IMAGE), "v2")
    assert paas.push(repo, app).returncode == 0
    ok(paas, "ps:restart", app)
    paas.stop()
    paas.start(extra_env=IMAGES_ENV)
    if os.environ.get("GITD_NO_DOCKERD_RESTART") == "1" and os.environ.get("CI") != "true":
        print("dockerd restart skipped (GITD_NO_DOCKERD_RESTART=1, not CI)")
    else:
        restart_dockerd(docker_client)
        paas.stop()
        paas.start(extra_env=IMAGES_ENV)
    assert paas.wait_for(paas.host(app), "v2", timeout=60)[0] == 200
    wait_healthy(paas, db)
    assert rows(paas, app) == ["first"]
    assert "ready to accept connections" in ok(paas, "services:logs", db, "-n", "50").stdout
    connected = ok(paas, "services:connect", db, input="SELECT note FROM notes;\n")
    assert "first" in connected.stdout

    # backup, another row, restore: the first state is back
    dump = tmp_path / "db.dump"
    with open(dump, "wb") as out:
        backed = subprocess.run(["ssh", "-F", str(paas.ssh_config(paas.admin_key)), "-T",
                                 "paas", "services:backup", db], stdout=out,
                                stderr=subprocess.PIPE, timeout=120)
    assert backed.returncode == 0, backed.stderr
    assert dump.read_bytes()[:5] == b"PGDMP"
    sql(paas, app, "INSERT INTO notes (note) VALUES ('second')")
    assert rows(paas, app) == ["first", "second"]
    restored = paas.ssh("services:restore", db, input=dump.read_bytes())
    assert restored.returncode == 0, restored.stderr
    assert rows(paas, app) == ["first"]

    # a corrupt dump (garbage, or a good one cut short) is refused: data untouched
    sql(paas, app, "INSERT INTO notes (note) VALUES ('third')")
    for bad in (b"this is not a dump\n" * 100, dump.read_bytes()[: len(dump.read_bytes()) // 2]):
        refused = paas.ssh("services:restore", db, input=bad)
        assert refused.returncode != 0
        assert "refused" in refused.stderr and "untouched" in refused.stderr, refused.stderr
        assert rows(paas, app) == ["first", "third"]
    names = sql(paas, app, "SELECT datname FROM pg_database ORDER BY 1").stdout.split()
    assert not [n for n in names if "_restore_" in n or "_old_" in n], names

    # an upgrade dumps, recreates on a fresh volume and restores
    before = info(paas, db)["volume"]
    upgraded = ok(paas, "services:upgrade", db, "--version", "15")
    assert f"{db} runs postgres 15." in upgraded.stdout
    data = info(paas, db)
    assert data["version"] == "15" and data["volume"] != before and data["health"] == "healthy"
    assert data["server_version"].startswith("15.")
    assert rows(paas, app) == ["first", "third"]

    # destroy: refused while linked; unlink takes the URL away; a final backup stays
    fails(paas, "services:destroy", db, "--force", match="unlink it first")
    ok(paas, "services:unlink", db, app)
    assert "DATABASE_URL" not in json.loads(ok(paas, "config", app, "--json").stdout)
    gone = ok(paas, "services:destroy", db, "--force")
    assert "final backup kept at" in gone.stdout
    final = Path(gone.stdout.split("final backup kept at ")[1].split()[0])
    assert final.exists() and final.read_bytes()[:5] == b"PGDMP"
    labels = {"label": [f"gitd.instance={paas.instance}", f"gitd.service={db}"]}
    assert docker_client.containers.list(all=True, filters=labels) == []
    assert docker_client.volumes.list(filters=labels) == []
    for name in (app, other):
        ok(paas, "apps:destroy", name, "--force")


def restart_dockerd(docker_client) -> None:
    """Restart the Docker engine (CI's own machine only: it is shared here)."""
    if shutil.which("systemctl") and subprocess.run(
            ["systemctl", "is-active", "--quiet", "docker"]).returncode == 0:
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=180)
    else:
        pid = int(subprocess.run(["pidof", "dockerd"], capture_output=True, text=True,
                                 check=True).stdout.split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        os.kill(pid, 15)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.5)
        log = open("/tmp/dockerd-restarted.log", "ab")
        subprocess.Popen(cmdline, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            docker_client.ping()
            return
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(1)
    raise AssertionError("dockerd did not come back")


def test_redis_link_backup_and_a_second_link_gets_its_own_name(paas, docker_client, tmp_path):
    cache, second, app = unique_app("cache"), unique_app("jobs"), unique_app("rapp")
    ok(paas, "services:create", "redis", cache)
    ok(paas, "services:create", "redis", second)
    deploy(paas, tmp_path, app, client_app("r1", REDIS_IMAGE))
    assert "as REDIS_URL" in ok(paas, "services:link", cache, app).stdout
    var = f"REDIS_{second.upper().replace('-', '_')}_URL"
    assert f"as {var}" in ok(paas, "services:link", second, app).stdout

    def cli(*words, env="REDIS_URL"):
        script = f'redis-cli --no-auth-warning -u "${env}" {" ".join(words)}'
        result = paas.ssh("run", app, "--", "sh", "-c", shlex.quote(script))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert cli("SET", "greeting", "hello") == "OK"
    assert cli("SET", "greeting", "other", env=var) == "OK"
    assert cli("GET", "greeting") == "hello"

    # its image has no {version}: it cannot change version, so an upgrade is refused
    before = info(paas, cache)
    assert before["server_version"] == "7.0.15" and before["version"] == "7"
    fails(paas, "services:upgrade", cache, "--version", "8",
          match=f"{cache} cannot move to redis 8: its image ({REDIS_IMAGE}, setting "
                "service_images) has no {version}")
    after = info(paas, cache)
    assert [after[k] for k in ("version", "server_version", "image", "volume", "last_backup")] == [
        before[k] for k in ("version", "server_version", "image", "volume", "last_backup")]
    assert cli("GET", "greeting") == "hello"

    dump = ok_bytes(paas, "services:backup", cache)
    assert dump[:5] == b"REDIS"
    assert cli("SET", "greeting", "changed") == "OK"
    restored = paas.ssh("services:restore", cache, input=dump)
    assert restored.returncode == 0, restored.stderr
    assert cli("GET", "greeting") == "hello"
    refused = paas.ssh("services:restore", cache, input=b"REDIS0010 but not really")
    assert refused.returncode != 0 and "refused" in refused.stderr, refused.stderr
    assert cli("GET", "greeting") == "hello"
    assert cli("GET", "greeting", env=var) == "other"
    # connect: redis-cli on the service's network, stdin passed on
    assert "hello" in ok(paas, "services:connect", cache, input="GET greeting\n").stdout
    assert "hello" in interactive_session(paas, ["services:connect", cache], "GET greeting\r")
    ok(paas, "apps:destroy", app, "--force")
    for name in (cache, second):
        ok(paas, "services:destroy", name, "--force")


def interactive_session(gitd, args: list[str], line: str, expect: str = "hello") -> str:
    """`ssh -tt` (a pty) to a line-editing client: it asks the terminal
    where the cursor is (ESC[6n) before each prompt; answer as a terminal
    would, then type `line`, until `expect` shows; then quit."""
    import threading

    proc = subprocess.Popen(["ssh", "-F", str(gitd.ssh_config(gitd.admin_key)), "-tt", "paas",
                             *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output = bytearray()
    reader = threading.Thread(target=lambda: [output.extend(c) for c in iter(
        lambda: proc.stdout.read1(4096), b"")], daemon=True)
    reader.start()
    answered = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if output.count(b"\x1b[6n") > answered:
                answered += 1
                done = expect.encode() in output
                proc.stdin.write(b"\x1b[1;1R" + (b"quit\r" if done else line.encode()))
                proc.stdin.flush()
            time.sleep(0.2)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no end to the session: {bytes(output)!r}")
    finally:
        proc.kill()
        reader.join(10)
    return output.decode(errors="replace")


def test_a_file_on_a_mounted_volume_survives_deploys_and_a_rollback(paas, tmp_path):
    app = unique_app("files")
    repo = deploy(paas, tmp_path, app, storage_app("v1"))
    mounted = ok(paas, "storage:mount", app, "data:/data")
    assert "Releasing v2" in mounted.stdout
    ok(paas, "run", app, "--", "sh", "-c", "'echo kept > /data/notes.txt; echo ok > /data/index.html'")
    assert paas.get(paas.host(app), "/notes.txt") == (200, "kept\n")
    commit(repo, storage_app("v3"), "v3")
    assert paas.push(repo, app).returncode == 0
    assert paas.get(paas.host(app), "/notes.txt") == (200, "kept\n")
    ok(paas, "releases:rollback", app, "v2")  # v2 had the mount: so does its rollback
    assert paas.get(paas.host(app), "/notes.txt") == (200, "kept\n")
    listed = json.loads(ok(paas, "storage:list", app, "--json").stdout)
    assert listed == [{"source": "data", "target": "/data", "type": "volume"}]
    ok(paas, "storage:unmount", app, "/data")
    assert paas.get(paas.host(app), "/notes.txt")[0] == 404
    ok(paas, "storage:mount", app, "data:/data")  # the volume kept its data
    assert paas.get(paas.host(app), "/notes.txt") == (200, "kept\n")
    assert "removed 1 storage volume(s)" in ok(paas, "apps:destroy", app, "--force").stdout


def user_app(version: str, user: str | None) -> dict:
    """busybox httpd serving /data as the image's USER; the image knows a
    user web (2000:3000) and a group other (4000)."""
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        "RUN mkdir -p /data && echo 'web:x:2000:3000::/data:/bin/sh' >> /etc/passwd \\\n"
        " && printf 'webgrp:x:3000:\\nother:x:4000:\\n' >> /etc/group\n"
        + (f"USER {user}\n" if user else "")
        + f'CMD ["sh", "-c", "echo {version} > /tmp/v; exec httpd -f -p $PORT -h /data"]\n'),
        "app.json": '{"healthchecks": {"path": "/"}}'}


def volume_root(docker_client, volume: str) -> str:
    """uid:gid and mode of a volume's root, seen from a container of our own."""
    out = docker_client.containers.run(
        f"{BASE_IMAGE}:latest", ["stat", "-c", "%u:%g %a", "/v"], remove=True,
        labels={"gitd-test": "volume-root"}, network_mode="none",
        mounts=[docker.types.Mount("/v", volume, type="volume", read_only=True, no_copy=True)])
    return out.decode().strip()


def test_a_volume_belongs_to_the_user_the_image_runs_as(paas, docker_client, tmp_path):
    app = unique_app("owner")
    volume = f"gitd-{paas.instance}.{app}.data"
    repo = deploy(paas, tmp_path, app, user_app("v1", "web"))  # a name from /etc/passwd
    mounted = ok(paas, "storage:mount", app, "data:/data").stdout
    written = paas.ssh("run", app, "--", "sh", "-c", "'echo kept > /data/index.html'")
    assert written.returncode == 0, written.stderr
    assert volume_root(docker_client, volume) == "2000:3000 755"  # nobody else may write
    assert "storage at /data: owner 0:0 -> 2000:3000 (the image's USER web)" in mounted
    assert paas.get(paas.host(app), "/") == (200, "kept\n")

    commit(repo, user_app("v3", "web:other"), "name:group")  # an existing volume
    pushed = paas.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert "storage at /data: owner 2000:3000 -> 2000:4000" in pushed.stderr
    assert "storage at /data: the 1 entries already there keep their owners" in pushed.stderr
    ok(paas, "run", app, "--", "touch", "/data/by-v3")

    commit(repo, user_app("v4", "10001"), "a uid the image does not name: group 0")
    assert paas.push(repo, app).returncode == 0
    assert volume_root(docker_client, volume) == "10001:0 755"
    ok(paas, "run", app, "--", "touch", "/data/by-v4")

    commit(repo, user_app("v5", "ghost"), "a user the image does not have")
    refused = paas.push(repo, app)
    assert refused.returncode != 0
    assert "user ghost is not in the image's /etc/passwd" in refused.stderr
    assert volume_root(docker_client, volume) == "10001:0 755"  # nothing changed
    assert paas.get(paas.host(app), "/") == (200, "kept\n")

    ok(paas, "releases:rollback", app, "v2")  # USER web again: so is the volume's root
    assert volume_root(docker_client, volume) == "2000:3000 755"
    ok(paas, "run", app, "--", "touch", "/data/by-v2-again")
    assert "removed 1 storage volume(s)" in ok(paas, "apps:destroy", app, "--force").stdout


def test_hostile_service_and_storage_input_fails_cleanly(paas, tmp_path):
    app = unique_app("hostile")
    ok(paas, "apps:create", app)
    deployer = make_key(paas.root, f"dep-{app}")
    ok(paas, "keys:add", f"dep-{app}", input=Path(f"{deployer}.pub").read_text())
    ok(paas, "apps:grant", app, f"dep-{app}")
    for name in ("Bad", "a..b", "../etc", "x" * 40, "a;rm", "a-", "9db"):
        fails(paas, "services:create", "postgres", name, match="invalid")
    fails(paas, "services:create", "postgres", "-rf", match="required")
    fails(paas, "services:create", "mysql", "db", match="unknown service kind")
    fails(paas, "services:create", "postgres", "db", "--version", "16;rm", match="invalid version")
    fails(paas, "services:info", "nosuch", match="no service named")
    fails(paas, "services:create", "postgres", "db", key=deployer, match="permission denied")
    for mount in ("data", "/data", "data:rel", "data:/", "data:/proc/x", "da ta:/data",
                  "data:/a/../b", "../x:/data"):
        fails(paas, "storage:mount", app, mount, match="")
    fails(paas, "storage:mount", app, "/srv:/data", key=deployer, match="only admins")
    for host in ("/var/run", "/run", "/proc", "/", str(paas.data_dir), str(paas.data_dir / "repos"),
                 "/var/lib/docker", "/nonexistent"):
        fails(paas, "storage:mount", app, f"{host}:/data", match="")
    link_dir = tmp_path / "sneaky"
    link_dir.symlink_to("/var/run")
    fails(paas, "storage:mount", app, f"{link_dir}:/data", match="/run")
    assert ok(paas, "storage:list", app, "--json").stdout.strip() == "[]"
    other = unique_app("notmine")
    ok(paas, "apps:create", other)
    fails(paas, "storage:mount", other, "data:/data", key=deployer, match="permission denied")
    fails(paas, "storage:list", other, key=deployer, match="permission denied")
    db = unique_app("hdb")
    ok(paas, "services:create", "redis", db)
    for cron in ("* * * *", "61 * * * *", "0 0 31 2 *", "*/0 * * * *", "a b c d e", "x" * 200):
        fails(paas, "services:backup-schedule", db, cron, match="cron")
    for keep in ("0", "-1", "100000"):
        fails(paas, "services:backup-schedule", db, "0 3 * * *", "--keep", keep, match="--keep")
    for port in ("80", "70000", "abc", "0"):
        fails(paas, "services:expose", db, port, match="port must be a whole number from 1024 to 65535")
    fails(paas, "services:link", db, "nosuchapp", match="does not exist")
    fails(paas, "services:link", db, other, key=deployer, match="permission denied")
    assert info(paas, db)["linked"] == {}
    ok(paas, "services:destroy", db, "--force")
    for name in (app, other):
        ok(paas, "apps:destroy", name, "--force")
    ok(paas, "keys:remove", f"dep-{app}")


def test_a_volume_of_the_service_name_is_neither_adopted_nor_removed(paas, docker_client):
    db = unique_app("vdb")
    name = f"gitd-{paas.instance}-svc-{db}-data"
    volume = docker_client.volumes.create(name, labels={"gitd.instance": paas.instance})
    try:
        fails(paas, "services:create", "redis", db,
              match=f"volume {name} already exists and no service owns it")
        assert docker_client.volumes.get(name).id == volume.id
        assert db not in [s["name"] for s in json.loads(
            ok(paas, "services:list", "--json").stdout)]
        assert not docker_client.containers.list(
            all=True, filters={"label": [f"gitd.instance={paas.instance}", f"gitd.service={db}"]})
        assert not docker_client.networks.list(names=[f"gitd-{paas.instance}-svc-{db}"])
    finally:
        volume.remove()


def test_expose_publishes_on_loopback_only(paas):
    db = unique_app("exp")
    ok(paas, "services:create", "redis", db)
    exposed = ok(paas, "services:expose", db)
    address = info(paas, db)["exposed"]
    assert address and address.startswith("127.0.0.1:"), exposed.stdout
    host, port = address.split(":")
    import socket
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(100).startswith(b"-NOAUTH")
    ok(paas, "services:expose", db, "--off")
    assert info(paas, db)["exposed"] is None
    ok(paas, "services:destroy", db, "--force")


def test_scheduled_backup_failure_shows_everywhere(paas, docker_client, tmp_path):
    db, app = unique_app("sched"), unique_app("sapp")
    ok(paas, "services:create", "redis", db)
    ok(paas, "apps:create", app)
    ok(paas, "services:link", db, app)
    ok(paas, "services:backup-schedule", db, "* * * * *", "--keep", "2")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (info(paas, db)["last_backup"] or {}).get("ok"):
        time.sleep(2)
    assert info(paas, db)["last_backup"]["ok"] is True
    dumps = list((paas.data_dir / "backups" / db).glob("*.rdb"))
    assert dumps and dumps[0].read_bytes()[:5] == b"REDIS"
    # its container disappears behind gitd's back: the next backup fails, loudly
    docker_client.containers.get(info(paas, db)["host"]).remove(force=True)
    since = info(paas, db)["last_backup"]["at"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and info(paas, db)["last_backup"]["at"] == since:
        time.sleep(2)
    last = info(paas, db)["last_backup"]
    assert last["ok"] is False and "missing" in last["message"], last
    shown = paas.ssh("services:info", db)
    assert "FAILED" in shown.stdout and "backup of" in shown.stderr
    app_info = paas.ssh("apps:info", app)
    assert "LAST BACKUP FAILED" in app_info.stdout and "failed" in app_info.stderr
    doctor = subprocess.run(gitd_command("doctor", "--data-dir", str(paas.data_dir)),
                            capture_output=True, text=True, timeout=120)
    assert doctor.returncode == 1
    assert f"backups ({db})" in doctor.stdout and "the last backup failed" in doctor.stdout
    ok(paas, "apps:destroy", app, "--force")
    ok(paas, "services:destroy", db, "--force")


def test_a_linked_app_swaps_without_a_dropped_request(paas, tmp_path):
    db, app = unique_app("zdb"), unique_app("zapp")
    ok(paas, "services:create", "redis", db)
    repo = deploy(paas, tmp_path, app, web_app("v1"))
    ok(paas, "services:link", db, app)
    with Load(paas, paas.host(app), clients=4) as load:
        for version in ("v2", "v3"):
            commit(repo, web_app(version), version)
            pushed = paas.push(repo, app)
            assert pushed.returncode == 0, pushed.stderr
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 0 and "v3" in load.bodies
    ok(paas, "apps:destroy", app, "--force")
    ok(paas, "services:destroy", db, "--force")


STRICT_PG_IMAGE = "gitd-test/postgres-strict:latest"


@pytest.fixture(scope="module")
def strict_paas(docker_client, base_image, tmp_path_factory):
    """A gitd whose Postgres image asks for the password on local
    connections too (a hardened image, not the official one's `trust`):
    gitd-ci/postgres initialised with scram-sha-256 for the socket. Built
    once per machine and kept, like the other test images."""
    import docker.errors

    try:
        docker_client.images.get(STRICT_PG_IMAGE)
    except docker.errors.ImageNotFound:
        require(any(PG_IMAGE in i.tags for i in docker_client.images.list("gitd-ci/postgres")),
                f"image {PG_IMAGE} is missing (bash .ci/images/build)")
        context = tmp_path_factory.mktemp("postgres-strict")
        (context / "Dockerfile").write_text(
            f"FROM {PG_IMAGE}\n"
            "RUN sed -i 's/--auth-local=trust/--auth-local=scram-sha-256/' "
            "/usr/local/bin/docker-entrypoint.sh "
            "&& grep -q -- '--auth-local=scram-sha-256' /usr/local/bin/docker-entrypoint.sh\n")
        docker_client.images.build(path=str(context), tag=STRICT_PG_IMAGE, rm=True,
                                   labels={"gitd.test": "postgres-strict"})
    server = new_gitd(tmp_path_factory.mktemp("strict-services"))
    server.start(extra_env={"GITD_SERVICE_IMAGES": f"postgres={STRICT_PG_IMAGE},redis={REDIS_IMAGE}"})
    yield server
    server.stop()
    server.cleanup(docker_client)


def test_backup_and_restore_log_in_to_a_postgres_that_asks_for_the_password(
        strict_paas, docker_client, tmp_path):
    db = unique_app("strict")
    ok(strict_paas, "services:create", "postgres", db)
    wait_healthy(strict_paas, db)
    container = docker_client.containers.get(f"gitd-{strict_paas.instance}-svc-{db}")
    env = dict(v.split("=", 1) for v in container.attrs["Config"]["Env"])
    database = env["POSTGRES_DB"]

    def psql(statement: str, password: str | None = env["POSTGRES_PASSWORD"]):
        return container.exec_run(["psql", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1",
                                   "-qAtc", statement],
                                  environment={"PGPASSWORD": password} if password else {})

    refused = psql("SELECT 1", password=None)  # the image really asks: no trust anywhere
    assert refused.exit_code != 0 and b"password" in refused.output, refused.output
    made = psql("CREATE TABLE notes (note text); INSERT INTO notes VALUES ('first')")
    assert made.exit_code == 0, made.output

    dump = ok_bytes(strict_paas, "services:backup", db)
    assert dump[:5] == b"PGDMP"
    assert psql("INSERT INTO notes VALUES ('second')").exit_code == 0
    restored = strict_paas.ssh("services:restore", db, input=dump)
    assert restored.returncode == 0, restored.stderr
    assert psql("SELECT note FROM notes").output.split() == [b"first"]
    ok(strict_paas, "services:destroy", db, "--force")

"""gitd backup and gitd restore end to end (issue #26): a gitd serving an app
with config, a domain, a volume and a Postgres service holding a row is backed up
while it serves; everything it made on the engine goes; a restore into a
new data dir and a start bring the app back answering with its config, and
the row and the volume's file are back. A truncated archive is refused with the target untouched."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import tarfile
import time

import pytest

from tests.conftest import require
from tests.e2e.conftest import BASE_IMAGE, start_swarm_gitd, web_app
from tests.e2e.harness import Gitd, free_port, gitd_command, make_repo, unique_app
from tests.e2e.helpers import ok
from tests.e2e.services_helpers import IMAGES_ENV, PG_IMAGE, PG_VERSION, sql, tag_versioned

pytestmark = pytest.mark.e2e

GREETING = "hello-from-before-the-disaster"


def greeting_app() -> dict:
    """psql from the Postgres image (for `sql`), and busybox httpd answering
    the app's GREETING config var."""
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest AS bb\n"
        f"FROM {PG_IMAGE}\n"
        "COPY --from=bb /bin/busybox /bin/busybox\n"
        'CMD ["/bin/busybox", "sh", "-c", "mkdir -p /www && echo \\"$GREETING\\" > /www/index.html'
        ' && exec /bin/busybox httpd -f -p $PORT -h /www"]\n')}


def gitd_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(gitd_command(*args), capture_output=True, text=True, timeout=600,
                          check=False, env=None if env is None else {**os.environ, **env})


def wait_report(directory, timeout: float = 120.0) -> dict:
    """restore/report.json once the plan is carried out (pending.json gone:
    the report is written item by item)."""
    deadline = time.monotonic() + timeout
    while (directory / "pending.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return json.loads((directory / "report.json").read_text())


def rows(server, app: str) -> list[str]:
    return sql(server, app, "SELECT note FROM notes ORDER BY id").stdout.split()


def test_backup_while_serving_then_restore_on_an_empty_engine(own_gitd, docker_client, tmp_path):
    require(any(PG_IMAGE in (i.tags or []) for i in docker_client.images.list(name="gitd-ci/postgres")),
            f"image {PG_IMAGE} is missing (bash .ci/images/build)")
    tag_versioned(docker_client)
    source = own_gitd
    source.start(extra_env=IMAGES_ENV)
    app, db = unique_app("bk"), unique_app("bkdb")
    host = f"{app}.backup.test"
    ok(source, "apps:create", app)
    ok(source, "config:set", app, f"GREETING={GREETING}")
    ok(source, "domains:add", app, host)
    ok(source, "services:create", "postgres", db, "--version", PG_VERSION)
    ok(source, "services:link", db, app)
    repo = make_repo(tmp_path / "repo", greeting_app())
    pushed = source.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    source.wait_for(host, GREETING, timeout=60)
    sql(source, app, "CREATE TABLE notes (id serial PRIMARY KEY, note text); "
                     "INSERT INTO notes (note) VALUES ('kept')")
    ok(source, "storage:mount", app, "data:/data")
    ok(source, "run", app, "--", "sh", "-c", "'echo volume-kept > /data/file'")

    archive = tmp_path / "gitd-backup.tar.gz"
    made = gitd_cli("backup", "--data-dir", str(source.data_dir), "--to", str(archive), "--volumes")
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert source.get(host) == (200, GREETING + "\n")  # served throughout, not stopped

    # a truncated archive is refused before anything is written
    restored_root = tmp_path / "restored"
    target = restored_root / "data"
    restored_root.mkdir()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    refused = gitd_cli("restore", "--from", str(truncated), "--data-dir", str(target))
    assert refused.returncode != 0 and "refused" in refused.stderr, refused.stderr
    assert list(restored_root.iterdir()) == []

    # the disaster: the server and everything it made on the engine are gone
    source.stop()
    source.cleanup(docker_client)  # this gitd's containers, volumes, networks, images: by its label
    assert not source.containers(docker_client)

    target.mkdir()  # an empty directory is taken
    done = gitd_cli("restore", "--from", str(archive), "--data-dir", str(target))
    assert done.returncode == 0, done.stderr
    assert "1 app(s), 1 service(s)" in done.stdout, done.stdout
    again = gitd_cli("restore", "--from", str(archive), "--data-dir", str(target))
    assert again.returncode != 0 and "holds a gitd" in again.stderr, again.stderr

    restored = Gitd(root=restored_root, data_dir=target, admin_key=source.admin_key,
                    ssh_port=free_port(), http_port=free_port(), api_port=free_port())
    try:
        restored.start(extra_env=IMAGES_ENV)
        assert restored.instance == source.instance
        restored.wait_for(host, GREETING, timeout=300)
        assert rows(restored, app) == ["kept"]
        assert ok(restored, "run", app, "--", "cat", "/data/file").stdout.strip() == "volume-kept"
        report = wait_report(target / "restore")
        assert report[f"app {app}"].startswith("restored at v"), report
        assert "rebuilt from commit" in report[f"app {app}"], report
        assert "volume" in report[f"app {app}"] and "restored" in report[f"app {app}"], report
        assert report[f"service {db}"] == "restored with its data", report
        assert not (target / "restore" / "pending.json").exists()
        assert not (target / "restore" / "services").exists()  # the copies are not kept
        assert not (target / "restore" / "volumes").exists()
    finally:
        restored.stop()
        restored.cleanup(docker_client)


def two_services() -> dict:
    """app.json services (issue #13): a frontend on / and a backend on /api."""
    def httpd(text: str, port: int) -> str:
        return (f"FROM {BASE_IMAGE}:latest\n"
                f"RUN mkdir -p /www && echo {text} > /www/index.html\n"
                f"CMD exec httpd -f -p {port} -h /www\n")
    return {"frontend/Dockerfile": httpd("front", 3000), "backend/Dockerfile": httpd("back", 8080),
            "app.json": json.dumps({"services": {
                "frontend": {"build": {"dir": "frontend"}, "port": 3000, "routes": [{"path": "/"}]},
                "backend": {"build": {"dir": "backend"}, "port": 8080,
                            "routes": [{"path": "/api", "strip_prefix": True}]}}})}


def test_a_release_of_several_services_is_rebuilt_and_served_after_a_restore(
        own_gitd, docker_client, tmp_path):
    source = own_gitd
    source.start()
    app = unique_app("bkmono")
    host = source.host(app)
    ok(source, "apps:create", app)
    pushed = source.push(make_repo(tmp_path / "repo", two_services()), app)
    assert pushed.returncode == 0, pushed.stderr
    assert source.get(host, "/") == (200, "front\n")
    assert source.get(host, "/api/") == (200, "back\n")
    archive = tmp_path / "gitd-backup.tar.gz"
    made = gitd_cli("backup", "--data-dir", str(source.data_dir), "--to", str(archive))
    assert made.returncode == 0, made.stderr
    source.stop()
    source.cleanup(docker_client)  # both services' images go too
    assert not source.containers(docker_client)

    target = tmp_path / "restored" / "data"
    target.parent.mkdir()
    done = gitd_cli("restore", "--from", str(archive), "--data-dir", str(target))
    assert done.returncode == 0, done.stderr
    restored = Gitd(root=target.parent, data_dir=target, admin_key=source.admin_key,
                    ssh_port=free_port(), http_port=free_port(), api_port=free_port())
    try:
        restored.start()
        report = wait_report(target / "restore")
        assert report[f"app {app}"].startswith("restored at v1 (rebuilt from commit"), report
        restored.wait_for(host, "front")
        assert restored.get(host, "/api/") == (200, "back\n")
        services = {c.labels.get("gitd.component") for c in restored.live_containers(docker_client, app)}
        assert services == {"frontend", "backend"}
    finally:
        restored.stop()
        restored.cleanup(docker_client)


def test_volumes_on_a_swarm_are_backed_up_on_this_node_and_the_others_said(
        own_gitd, swarm, tmp_path):
    """The app whose tasks run on this (manager) node: its volume is in the
    archive. One pinned to another node (recorded so in the database: this
    machine has no second node here) is left out and said, per volume."""
    server = own_gitd
    start_swarm_gitd(server)
    here, far = unique_app("bkswh"), unique_app("bkswf")
    for app in (here, far):
        ok(server, "apps:create", app)
        ok(server, "storage:mount", app, "data:/data")  # its node recorded: this one
    pushed = server.push(make_repo(tmp_path / here, web_app("v1")), here)
    assert pushed.returncode == 0, pushed.stderr
    ok(server, "run", here, "--", "sh", "-c", "'echo on-the-manager > /data/file'")
    db = sqlite3.connect(server.data_dir / "gitd.db")
    with db:
        db.execute("UPDATE apps SET node = 'worker-elsewhere' WHERE name = ?", [far])
    db.close()

    archive = tmp_path / "swarm-backup.tar.gz"
    backup = ("backup", "--data-dir", str(server.data_dir), "--to", str(archive), "--volumes")
    unlike = gitd_cli(*backup)  # settings unlike the server's (it was started with a flag)
    assert unlike.returncode != 0 and "GITD_SCHEDULER=swarm" in unlike.stderr, unlike.stderr
    assert not archive.exists()
    made = gitd_cli(*backup, env={"GITD_SCHEDULER": "swarm"})
    assert made.returncode == 0, made.stderr
    far_volume = f"gitd-{server.instance}.{far}.data"
    said = f"volume {far_volume} of {far} is on swarm node worker-elsewhere, which this node ("
    assert said in made.stdout, made.stdout
    assert "1 volume(s) left out, on other swarm nodes" in made.stdout, made.stdout
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        [copy] = [n for n in manifest["files"] if n.startswith("volumes/")]
        assert copy == f"volumes/gitd-{server.instance}.{here}.data.tar"
        with tarfile.open(fileobj=tar.extractfile(copy)) as inner:
            assert inner.extractfile("gitd-volume/file").read() == b"on-the-manager\n"
    assert list(manifest["volumes_left_out"]) == [far_volume]

"""Push to deploy, end to end: real git, ssh, gitd, Docker and Traefik."""

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, git, make_key, make_repo, unique_app

pytestmark = pytest.mark.e2e


def test_push_deploys_then_updates_and_survives_a_broken_build(gitd, docker_client, tmp_path):
    app = unique_app("hello")
    created = gitd.ssh("apps:create", app)
    assert created.returncode == 0, created.stderr
    repo = make_repo(tmp_path / "app", web_app("hello v1"))

    first = gitd.push(repo, app)
    assert first.returncode == 0, first.stderr
    for header in ("-----> Building with Dockerfile", "-----> Releasing v1",
                   f"-----> Deployed to http://{app}.localhost:{gitd.http_port}"):
        assert header in first.stderr
    assert gitd.get(gitd.host(app)) == (200, "hello v1\n")

    commit(repo, web_app("hello v2"), "v2")
    second = gitd.push(repo, app)
    assert second.returncode == 0, second.stderr
    assert gitd.get(gitd.host(app)) == (200, "hello v2\n")
    # the push returns at live; v1 drains and stops in the background
    assert "-----> Retiring v1 in the background (drain" in second.stderr
    v2_commit = git(repo, "rev-parse", "HEAD").strip()
    live = gitd.wait_retired(docker_client, app)
    assert [c.labels["gitd.release"] for c in live] == ["2"]
    container = live[0]
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert "PORT=5000" in container.attrs["Config"]["Env"]
    bindings = container.attrs["HostConfig"]["PortBindings"]["5000/tcp"]
    assert bindings[0]["HostIp"] == "127.0.0.1"
    assert any(f"Host(`{app}.localhost`)" in v for v in container.labels.values())

    commit(repo, {"Dockerfile": "FROM gitd-test/busybox:latest\nRUN exit 3\n"}, "broken")
    broken = gitd.push(repo, app)
    assert broken.returncode != 0
    assert "RUN exit 3" in broken.stderr
    assert "[remote rejected] main -> main" in broken.stderr
    ls = subprocess.run(["git", "ls-remote", gitd.remote(app), "refs/heads/main"], cwd=repo,
                        env=gitd.git_env(), capture_output=True, text=True)
    assert ls.stdout.split()[0] == v2_commit
    assert gitd.get(gitd.host(app)) == (200, "hello v2\n")
    assert [c.id for c in gitd.containers(docker_client, app)] == [container.id]
    with gitd.db() as db:
        statuses = db.execute("SELECT version, status FROM releases WHERE app = ? ORDER BY version",
                              [app]).fetchall()
    assert statuses == [(1, "succeeded"), (2, "succeeded"), (3, "failed")]
    assert not docker_client.images.list(name=f"gitd/{app}:v3")

    info = gitd.ssh("apps:info", app, "--json")
    assert info.returncode == 0, info.stderr
    assert '"release": 2' in info.stdout

    destroyed = gitd.ssh("apps:destroy", app)
    assert destroyed.returncode != 0 and "--force" in destroyed.stderr
    destroyed = gitd.ssh("apps:destroy", app, "--force")
    assert destroyed.returncode == 0, destroyed.stderr
    assert gitd.containers(docker_client, app) == []
    assert docker_client.images.list(name=f"gitd/{app}") == []
    # Traefik drops the route once it sees the container die (throttled)
    deadline = time.monotonic() + 10
    while gitd.get(gitd.host(app))[0] != 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gitd.get(gitd.host(app))[0] == 404
    assert not (gitd.data_dir / "repos" / f"{app}.git").exists()
    with gitd.db() as db:
        assert db.execute("SELECT COUNT(*) FROM releases WHERE app = ?", [app]).fetchone()[0] == 0
    assert app not in gitd.ssh("apps:list").stdout


def test_other_branches_are_stored_not_deployed_and_paths_are_flexible(gitd, docker_client, tmp_path):
    app = unique_app("br")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / "app", web_app("feature"))
    pushed = gitd.push(repo, app, refspec="main:feature")
    assert pushed.returncode == 0, pushed.stderr
    assert "Building" not in pushed.stderr
    assert "branch feature stored, not deployed (pushes of main or master deploy)" in pushed.stderr
    assert gitd.containers(docker_client, app) == []
    # scp-style remotes send the path as typed: `paas:hello.git` -> 'hello.git'
    for path in (f"{app}.git", f"/{app}", f"/{app}.git", app):
        ls = subprocess.run(["git", "ls-remote", f"paas:{path}"],
                            cwd=repo, env=gitd.git_env(), capture_output=True, text=True)
        assert "refs/heads/feature" in ls.stdout, (path, ls.stderr)
    clone = subprocess.run(["git", "clone", "-q", "-b", "feature", gitd.remote(app), str(tmp_path / "clone")],
                           env=gitd.git_env(), capture_output=True, text=True)
    assert clone.returncode == 0, clone.stderr
    assert (tmp_path / "clone" / "Dockerfile").exists()
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0


def test_push_to_a_missing_app_names_apps_create(gitd, tmp_path):
    repo = make_repo(tmp_path / "app", web_app("x"))
    pushed = gitd.push(repo, "nope-missing")
    assert pushed.returncode != 0
    assert "apps:create nope-missing" in pushed.stderr
    bad = gitd.push(repo, "Bad_Name")
    assert bad.returncode != 0 and "invalid app name" in bad.stderr


def test_ssh_surface_is_key_only_exec_only(gitd, tmp_path):
    stranger = make_key(tmp_path, "stranger")
    refused = gitd.ssh("apps:list", key=stranger)
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr

    bare = gitd.ssh()
    assert bare.returncode == 0
    assert "apps:create" in bare.stdout

    unknown = gitd.ssh("bash", "-c", "id")
    assert unknown.returncode != 0 and "unknown command" in unknown.stderr

    tty = gitd.ssh("apps:list", tty=True)
    assert tty.returncode != 0

    forward = subprocess.run(
        ["ssh", "-F", str(gitd.ssh_config(gitd.admin_key)), "-W", "127.0.0.1:22", "paas"],
        capture_output=True, text=True, timeout=30, input="")
    assert forward.returncode != 0

    sftp = subprocess.run(
        ["ssh", "-F", str(gitd.ssh_config(gitd.admin_key)), "-T", "-s", "paas", "sftp"],
        capture_output=True, text=True, timeout=30, input="")
    assert sftp.returncode != 0 and "subsystem request failed" in sftp.stderr

    bad_name = gitd.ssh("apps:create", "Bad_Name")
    assert bad_name.returncode != 0 and "invalid app name" in bad_name.stderr


def test_managed_traefik_is_restarted_when_it_dies(own_gitd, tmp_path):
    gitd = own_gitd
    gitd.start()
    app = unique_app("tk")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / "app", web_app("alive"))
    assert gitd.push(repo, app).returncode == 0
    pid_file = gitd.data_dir / "traefik" / "traefik.pid"
    first = int(pid_file.read_text())
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pid_file.exists() and int(pid_file.read_text()) != first:
            break
        time.sleep(0.1)
    assert int(pid_file.read_text()) != first
    assert gitd.wait_for(gitd.host(app), "alive") == (200, "alive\n")
    assert gitd.stop() == 0
    second = int(pid_file.read_text()) if pid_file.exists() else None
    assert second is None or not os.path.exists(f"/proc/{second}")

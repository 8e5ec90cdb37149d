"""A push returns once the new release is live; the old containers drain and
stop in the background, still owned by the app. The app's lock is taken only
once the pack is stored."""

import os
import subprocess
import time

import pytest

from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, unique_app
from tests.e2e.helpers import deployed, slow_boot_app

pytestmark = pytest.mark.e2e


def releases_running(gitd, client, app) -> list[str]:
    return sorted(c.labels["gitd.release"] for c in gitd.containers(client, app)
                  if c.status == "running")


def test_old_releases_retire_in_the_background_taken_over_and_finished_after_sigkill(
        own_gitd, docker_client, tmp_path):
    gitd = own_gitd
    gitd.start()
    app = unique_app("bg")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    assert gitd.ssh("checks:set", app, "drain=60").returncode == 0

    commit(repo, web_app("v2"), "v2")
    second = gitd.push(repo, app)
    assert second.returncode == 0, second.stderr
    assert "-----> Retiring v1 in the background (drain 60s)" in second.stderr
    assert gitd.get(gitd.host(app)) == (200, "v2\n")
    assert releases_running(gitd, docker_client, app) == ["1", "2"]  # v1 drains
    assert gitd.ssh("apps:list").returncode == 0  # the app's commands are not held up

    # the next deploy takes the retirement over: both old releases drain again
    commit(repo, web_app("v3"), "v3")
    third = gitd.push(repo, app)
    assert third.returncode == 0, third.stderr
    assert "-----> Retiring v1, v2 in the background (drain 60s)" in third.stderr
    assert gitd.get(gitd.host(app)) == (200, "v3\n")
    assert releases_running(gitd, docker_client, app) == ["1", "2", "3"]

    # killed mid-drain: the next start finds the old containers and retires them
    assert gitd.ssh("checks:set", app, "drain=0.5").returncode == 0
    gitd.kill()
    assert releases_running(gitd, docker_client, app) == ["1", "2", "3"]
    gitd.start()
    left = gitd.wait_retired(docker_client, app)
    assert [c.labels["gitd.release"] for c in left] == ["3"]
    assert gitd.wait_for(gitd.host(app), "v3") == (200, "v3\n")
    assert "retiring 2 old container(s)" in gitd.log_text()

    # SIGTERM while a retirement is pending: finished within the grace
    assert gitd.ssh("checks:set", app, "drain=2").returncode == 0
    commit(repo, web_app("v4"), "v4")
    assert gitd.push(repo, app).returncode == 0
    assert releases_running(gitd, docker_client, app) == ["3", "4"]
    assert gitd.stop() == 0
    assert [c.labels["gitd.release"] for c in gitd.containers(docker_client, app)] == ["4"]


def test_an_idle_pusher_holds_no_lock_and_a_waiting_push_says_what_it_waits_for(
        gitd, docker_client, tmp_path):
    app = unique_app("idle")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))

    config = gitd.ssh_config(gitd.admin_key)
    idle = subprocess.Popen(["ssh", "-F", str(config), "-T", "paas", f"git-receive-pack '{app}'"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert os.read(idle.stdout.fileno(), 4096)  # the refs are advertised; no pack follows
        stored = gitd.ssh("config:set", app, "IDLE=1", "--no-restart", timeout=60)
        assert stored.returncode == 0, stored.stderr
    finally:
        idle.kill()
        idle.wait(10)

    commit(repo, slow_boot_app("v2", 4), "slow v2")
    slow = subprocess.Popen(["git", "push", gitd.remote(app), "main"], cwd=repo, env=gitd.git_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(gitd.containers(docker_client, app)) < 2:
        time.sleep(0.1)
    assert slow.poll() is None, "the slow deploy should still be running"
    waiting = gitd.push(repo, app, refspec="main:feature")
    _, slow_err = slow.communicate(timeout=120)
    assert slow.returncode == 0, slow_err
    assert waiting.returncode == 0, waiting.stderr
    assert f"remote: -----> Waiting for the deploy of {app} in progress to finish" in waiting.stderr
    gitd.ssh("apps:destroy", app, "--force")

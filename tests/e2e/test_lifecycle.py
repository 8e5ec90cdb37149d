"""gitd as a service: SIGTERM lets deploys finish, restarts never interrupt
traffic when Traefik runs on its own (the VPS layout)."""

import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import web_app
from tests.e2e.harness import Load, commit, gitd_command, make_repo, start_external_traefik, unique_app
from tests.e2e.helpers import slow_boot_app

pytestmark = pytest.mark.e2e


@pytest.fixture
def external(own_gitd):
    traefik = start_external_traefik(own_gitd)
    api = f"http://127.0.0.1:{own_gitd.api_port}"
    own_gitd.start(extra_args=("--traefik", "external", "--traefik-api-url", api))
    yield own_gitd
    traefik.terminate()
    traefik.wait(10)


def test_sigterm_during_a_deploy_lets_it_finish_and_a_restart_serves_pushes(external, docker_client, tmp_path):
    gitd = external
    app = unique_app("term")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / "app", web_app("v1"))
    assert gitd.push(repo, app).returncode == 0
    commit(repo, slow_boot_app("v2", 3), "v2")
    with Load(gitd, gitd.host(app), clients=3) as load:
        push = subprocess.Popen(["git", "push", gitd.remote(app), "main"], cwd=repo, env=gitd.git_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(gitd.containers(docker_client, app)) < 2:
            time.sleep(0.1)
        assert len(gitd.containers(docker_client, app)) == 2
        gitd.proc.send_signal(signal.SIGTERM)
        _, err = push.communicate(timeout=120)
        assert push.returncode == 0, err
        assert "Deployed to" in err
        assert gitd.proc.wait(60) == 0
        # gitd is down; the app still serves through its own Traefik
        assert gitd.get(gitd.host(app)) == (200, "v2\n")
        assert [c.labels["gitd.release"] for c in gitd.containers(docker_client, app)] == ["2"]
        gitd.start(extra_args=("--traefik", "external", "--traefik-api-url",
                               f"http://127.0.0.1:{gitd.api_port}"))
        time.sleep(0.5)
    assert load.failures == [] and load.ok > 0
    listed = gitd.ssh("apps:list")
    assert f"{app}  v2" in listed.stdout
    commit(repo, web_app("v3"), "v3")
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert gitd.get(gitd.host(app)) == (200, "v3\n")


def test_new_connections_are_refused_while_stopping(external, tmp_path):
    gitd = external
    gitd.proc.send_signal(signal.SIGTERM)
    assert gitd.proc.wait(30) == 0
    refused = gitd.ssh("apps:list", timeout=30)
    assert refused.returncode == 255


def test_doctor_reports_a_missing_docker_engine_with_its_fix(own_gitd, tmp_path):
    result = subprocess.run(gitd_command("doctor", "--data-dir", str(own_gitd.data_dir)),
                            env={"PATH": "/usr/bin:/bin:" + __import__("os").environ["PATH"],
                                 "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "FAIL engine: not reachable at unix://" in result.stdout
    assert "fix:" in result.stdout and "docker" in result.stdout.split("FAIL engine", 1)[1]

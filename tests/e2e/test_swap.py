"""Zero-downtime swaps that survive failure (real Docker and Traefik)."""

import os
import signal
import subprocess
import threading
import time

import pytest

from tests.e2e.conftest import BASE_IMAGE, web_app
from tests.e2e.harness import Load, commit, unique_app
from tests.e2e.helpers import deployed, slow_boot_app

pytestmark = pytest.mark.e2e


def slow_request_app(version: str) -> dict:
    """`/cgi-bin/slow` takes 2 s to answer."""
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        f"RUN mkdir -p /www/cgi-bin && echo '{version}' > /www/index.html && "
        "printf '#!/bin/sh\\nsleep 2\\nprintf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\n"
        f"slow {version}\\\\n\"\\n' > /www/cgi-bin/slow && chmod +x /www/cgi-bin/slow\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n')}


def test_failed_health_check_keeps_the_old_release(gitd, docker_client, tmp_path):
    app = unique_app("hc")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    before = [c.id for c in gitd.containers(docker_client, app)]
    assert gitd.ssh("checks:set", app, "wait=4", "timeout=1").returncode == 0
    shown = gitd.ssh("checks:show", app)
    assert "wait=4s" in shown.stdout, shown.stdout
    commit(repo, {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\nRUN mkdir /www\n"
        'CMD ["sh", "-c", "echo listening on the wrong port; exec httpd -f -p 9999 -h /www"]\n')},
        "wrong port")
    with Load(gitd, gitd.host(app), clients=2) as load:
        failed = gitd.push(repo, app)
    assert failed.returncode != 0
    # gitd's probe through the published port: nothing answers on PORT
    assert "GET / -> no answer on port 5000 (failed)" in failed.stderr
    assert "listening on the wrong port" in failed.stderr  # the app's last log lines
    assert "v1 keeps serving" in failed.stderr
    assert [c.id for c in gitd.containers(docker_client, app)] == before
    assert gitd.get(gitd.host(app)) == (200, "v1\n")
    assert load.failures == [] and load.ok > 0
    gitd.ssh("apps:destroy", app, "--force")


def test_slow_booting_app_gets_traffic_only_when_ready(gitd, docker_client, tmp_path):
    app = unique_app("slow")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    commit(repo, slow_boot_app("v2", 3), "slow boot")
    with Load(gitd, gitd.host(app), clients=4) as load:
        pushed = gitd.push(repo, app)
        time.sleep(0.5)
    assert pushed.returncode == 0, pushed.stderr
    assert "(failed)" in pushed.stderr or "no answer" in pushed.stderr or "is healthy" in pushed.stderr
    assert load.failures == [], load.failures[:5]
    assert load.bodies == {"v1", "v2"}
    assert gitd.get(gitd.host(app)) == (200, "v2\n")
    gitd.ssh("apps:destroy", app, "--force")


def test_request_in_flight_during_the_switch_completes(gitd, docker_client, tmp_path):
    app = unique_app("inflight")
    repo = deployed(gitd, app, tmp_path, slow_request_app("v1"))
    results, errors = [], []

    def slow_requests(stop):
        while not stop.is_set():
            try:
                results.append(gitd.get(gitd.host(app), "/cgi-bin/slow", timeout=10))
            except OSError as exc:
                errors.append(str(exc))

    stop = threading.Event()
    workers = [threading.Thread(target=slow_requests, args=(stop,)) for _ in range(3)]
    for i, w in enumerate(workers):
        w.start()
        time.sleep(0.6)  # staggered, so some request is always mid-flight
    commit(repo, slow_request_app("v2"), "v2")
    pushed = gitd.push(repo, app)
    stop.set()
    for w in workers:
        w.join(15)
    assert pushed.returncode == 0, pushed.stderr
    assert errors == []
    assert all(status == 200 for status, _ in results), results
    bodies = {body.strip() for _, body in results}
    assert "slow v1" in bodies
    assert gitd.get(gitd.host(app), "/cgi-bin/slow") == (200, "slow v2\n")
    gitd.ssh("apps:destroy", app, "--force")


def test_gitd_killed_mid_deploy_recovers(own_gitd, docker_client, tmp_path):
    gitd = own_gitd
    gitd.start()
    app = unique_app("crash")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    v1 = gitd.containers(docker_client, app)
    commit(repo, slow_boot_app("v2", 30), "slow v2")
    push = subprocess.Popen(["git", "push", gitd.remote(app), "main"], cwd=repo,
                            env=gitd.git_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(gitd.containers(docker_client, app)) < 2:
        time.sleep(0.2)
    assert len(gitd.containers(docker_client, app)) == 2
    os.kill(gitd.proc.pid, signal.SIGKILL)  # gitd alone; its Traefik is orphaned
    gitd.proc.wait()
    push.communicate(timeout=30)
    assert push.returncode != 0

    gitd.start()
    assert [c.id for c in gitd.containers(docker_client, app)] == [v1[0].id]
    assert gitd.wait_for(gitd.host(app), "v1") == (200, "v1\n")
    info = gitd.ssh("apps:info", app, "--json")
    assert '"release": 1' in info.stdout and '"deploying": false' in info.stdout
    with gitd.db() as db:
        status = db.execute("SELECT status FROM releases WHERE app=? AND version=2", [app]).fetchone()
    assert status == ("failed",)
    commit(repo, web_app("v3"), "v3")
    again = gitd.push(repo, app)  # the lock was not left held
    assert again.returncode == 0, again.stderr
    assert gitd.get(gitd.host(app)) == (200, "v3\n")


def test_concurrent_pushes_to_one_app_are_serialised(gitd, docker_client, tmp_path):
    app = unique_app("conc")
    other = unique_app("side")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    other_repo = deployed(gitd, other, tmp_path, web_app("o1"))
    first = commit(repo, slow_boot_app("v2", 2), "v2")
    second = commit(repo, web_app("v3"), "v3")
    commit(other_repo, web_app("o2"), "o2")

    def push(sha):
        return subprocess.Popen(["git", "push", gitd.remote(app), f"{sha}:refs/heads/main"], cwd=repo,
                                env=gitd.git_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    p1 = push(first)
    time.sleep(0.5)
    p2 = push(second)
    side = gitd.push(other_repo, other)  # another app is not held up by the lock
    out1, out2 = p1.communicate(timeout=180), p2.communicate(timeout=180)
    assert p1.returncode == 0, out1[1]
    assert p2.returncode == 0, out2[1]
    assert "Waiting for the deploy of" in out2[1]
    assert "Waiting" not in side.stderr and side.returncode == 0
    with gitd.db() as db:
        rows = db.execute("SELECT version, [commit], status FROM releases WHERE app=? ORDER BY version",
                          [app]).fetchall()
    assert [(v, s) for v, _, s in rows] == [(1, "succeeded"), (2, "succeeded"), (3, "succeeded")]
    assert [c for _, c, _ in rows[1:]] == [first, second]
    assert gitd.get(gitd.host(app)) == (200, "v3\n")
    gitd.ssh("apps:destroy", app, "--force")
    gitd.ssh("apps:destroy", other, "--force")


def test_old_images_are_pruned_beyond_the_last_n(own_gitd, docker_client, tmp_path):
    gitd = own_gitd
    gitd.start(extra_env={"GITD_KEEP_RELEASES": "2"})
    app = unique_app("prune")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    for version in ("v2", "v3"):
        commit(repo, web_app(version), version)
        assert gitd.push(repo, app).returncode == 0
    # pruned once the old containers are retired, in the background
    gitd.wait_retired(docker_client, app)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tags = {t for image in docker_client.images.list(name=f"gitd/{app}") for t in image.tags
                if t.startswith(f"gitd/{app}:")}
        with gitd.db() as db:  # the row is marked after the image goes
            rows = db.execute("SELECT version, status FROM releases WHERE app=? ORDER BY version",
                              [app]).fetchall()
        if tags == {f"gitd/{app}:v2", f"gitd/{app}:v3"} and rows[0][1] == "pruned":
            break
        time.sleep(0.2)
    assert tags == {f"gitd/{app}:v2", f"gitd/{app}:v3"}
    assert rows == [(1, "pruned"), (2, "succeeded"), (3, "succeeded")]


def test_a_release_may_change_its_port_and_health_path_without_a_dropped_request(gitd, docker_client, tmp_path):
    app = unique_app("port")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    commit(repo, {
        "Dockerfile": (f"FROM {BASE_IMAGE}:latest\n"
                       "RUN mkdir -p /www && echo v2 > /www/index.html && echo ok > /www/up\n"
                       "EXPOSE 8080\n"
                       'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n'),
        "app.json": '{"healthchecks": {"path": "/up"}}'}, "port 8080")
    with Load(gitd, gitd.host(app), clients=4) as load:
        pushed = gitd.push(repo, app)
        time.sleep(0.5)
    assert pushed.returncode == 0, pushed.stderr
    assert "GET /up -> HTTP/1.1 200 OK (ok)" in pushed.stderr
    assert load.failures == [], load.failures[:5]
    assert load.bodies == {"v1", "v2"}
    (live,) = gitd.wait_retired(docker_client, app)
    assert "PORT=8080" in live.attrs["Config"]["Env"]
    gitd.ssh("apps:destroy", app, "--force")

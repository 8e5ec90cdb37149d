"""Health checks over an app's life (issue #29): probed fast while a deploy
waits, rarely afterwards (Docker's own check every health_interval, issue #21); failures told as they happen and in words; no
worker of a rejected release runs; an app with no healthy process answers
503, says so, and is restarted."""

import threading
import time

import pytest

from tests.e2e.conftest import BASE_IMAGE, web_app
from tests.e2e.harness import commit, make_repo, unique_app
from tests.e2e.helpers import deployed, file_routed, wait_docker_health

pytestmark = pytest.mark.e2e

# /cgi-bin/health answers 500 once /sick exists (busybox httpd passes a
# CGI's own status line through)
HEALTH_CGI = ("printf '#!/bin/sh\\nif [ -e /sick ]; then printf \"HTTP/1.0 500 Sick\\\\r\\\\n\\\\r\\\\n\"; "
              "else printf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nok\\\\n\"; fi\\n' "
              "> /www/cgi-bin/health && chmod +x /www/cgi-bin/health")


def sick_app(version: str, sick: bool = False) -> dict:
    touch = " && touch /sick" if sick else ""
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        f"RUN mkdir -p /www/cgi-bin && echo '{version}' > /www/index.html && {HEALTH_CGI}{touch}\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n')}


def test_a_live_web_container_is_checked_by_docker_only_every_health_interval(
        gitd, docker_client, tmp_path):
    app = unique_app("rare")
    deployed(gitd, app, tmp_path, web_app("v1"))
    assert gitd.get(gitd.host(app)) == (200, "v1\n")  # live at once, through its route file
    [web] = gitd.live_containers(docker_client, app)
    assert web.attrs["Config"]["Healthcheck"]["Interval"] == 30 * 10**9  # was 0.5 s for life
    time.sleep(6)
    web.reload()
    # no exec of Docker's yet (twelve here before), and its route file serves it
    assert not (web.attrs["State"]["Health"].get("Log") or [])
    assert web.attrs["State"]["Health"]["Status"] == "starting"
    assert gitd.get(gitd.host(app)) == (200, "v1\n")
    # Docker's first check passes; the route file stays the route
    wait_docker_health(web, "healthy", 45)
    assert list(file_routed(gitd, f"{app}-s1").values()) == ["UP"]
    assert gitd.get(gitd.host(app)) == (200, "v1\n")
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0


def test_a_crashed_web_container_is_served_again_before_dockers_first_check(
        gitd, docker_client, tmp_path):
    """Docker restarts it (its restart policy), and checks it only 30 s later;
    gitd probes and bridges it at once (hooks.restarts)."""
    app = unique_app("crash")
    deployed(gitd, app, tmp_path, web_app("v1"))
    host = gitd.host(app)
    [web] = gitd.live_containers(docker_client, app)
    first_start = web.attrs["State"]["StartedAt"]
    web.exec_run(["sh", "-c", "kill -9 $(pidof httpd)"])  # the app dies; tini exits with it
    crashed_at = time.monotonic()
    deadline = crashed_at + 20
    while time.monotonic() < deadline:
        web.reload()
        if web.attrs["State"]["StartedAt"] != first_start and gitd.get(host) == (200, "v1\n"):
            break
        time.sleep(0.1)
    back_after = time.monotonic() - crashed_at
    web.reload()
    assert web.attrs["RestartCount"] == 1 and web.attrs["State"]["StartedAt"] != first_start
    assert gitd.get(host) == (200, "v1\n"), back_after
    # served again before Docker's own first check of the new run
    assert web.attrs["State"]["Health"]["Status"] == "starting", back_after
    assert back_after < 20
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0


def test_a_failing_check_fails_the_deploy_after_its_attempts_each_shown(gitd, tmp_path):
    app = unique_app("att")
    repo = deployed(gitd, app, tmp_path, sick_app("v1"))
    assert gitd.ssh("checks:set", app, "path=/cgi-bin/health", "attempts=3", "wait=60").returncode == 0
    commit(repo, sick_app("v2", sick=True), "v2 answers 500")
    began = time.monotonic()
    failed = gitd.push(repo, app)
    took = time.monotonic() - began
    assert failed.returncode != 0
    for n in (1, 2, 3):
        assert f"GET /cgi-bin/health -> HTTP/1.0 500 Sick (failed {n}/3)" in failed.stderr, failed.stderr
    assert "failed 3 health checks in a row" in failed.stderr
    assert took < 30, took  # not the whole wait of 60 s
    assert gitd.get(gitd.host(app)) == (200, "v1\n")
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0


def test_an_app_on_another_port_is_told_so_in_words(gitd, tmp_path):
    app = unique_app("r10")
    assert gitd.ssh("apps:create", app).returncode == 0
    assert gitd.ssh("checks:set", app, "wait=60").returncode == 0
    repo = make_repo(tmp_path / app, {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\nRUN mkdir /www\n"
        'CMD ["sh", "-c", "echo listening on 3000; exec httpd -f -p 3000 -h /www"]\n')})
    began = time.monotonic()
    failed = gitd.push(repo, app)
    took = time.monotonic() - began
    assert failed.returncode != 0
    assert "nothing listens on PORT=5000; the app listens on 3000" in failed.stderr, failed.stderr
    assert "config:set PORT=3000" in failed.stderr
    assert took < 30, took
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0


def test_no_worker_of_a_rejected_release_runs(gitd, docker_client, tmp_path):
    app = unique_app("wk")
    files = {**sick_app("v1"), "Procfile": "worker: sh -c 'while true; do sleep 1; done'\n"}
    repo = deployed(gitd, app, tmp_path, files)
    assert gitd.ssh("ps:scale", app, "worker=2").returncode == 0
    assert gitd.ssh("checks:set", app, "path=/cgi-bin/health", "attempts=2", "wait=20").returncode == 0
    commit(repo, {**files, **sick_app("v2", sick=True)}, "v2 fails its check")
    seen = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            for c in docker_client.containers.list(all=True, filters={"label": [
                    f"gitd.app={app}", "gitd.process=worker"]}):
                seen.add(c.labels.get("gitd.release"))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    failed = gitd.push(repo, app)
    done.set()
    watcher.join()
    assert failed.returncode != 0, failed.stderr
    assert seen == {"1"}, seen  # v1's (ps:scale redeployed it), never v2's
    # a good release starts its workers once its web container is healthy
    commit(repo, {**files, **sick_app("v3")}, "v3")
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    out = pushed.stderr
    assert f"{app}.worker.1." in out, out
    assert out.index(f"{app}.web.1.s") < out.index(" is healthy") < out.index(f"{app}.worker.1."), out
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0


def healing_app(version: str) -> dict:
    """sick_app, well again after a restart."""
    files = sick_app(version)
    files["Dockerfile"] = files["Dockerfile"].replace(
        '"exec httpd', '"rm -f /sick; exec httpd')
    return files


def statuses_until(gitd, host: str, wanted: int, seconds: float) -> list[int]:
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(gitd.get(host)[0])
        if seen[-1] == wanted:
            break
        time.sleep(0.1)
    return seen


def test_an_app_with_no_healthy_process_answers_503_says_so_and_is_restarted(
        own_gitd, docker_client, tmp_path):
    gitd = own_gitd
    gitd.start(extra_env={"GITD_HEALTH_INTERVAL": "1", "GITD_UNHEALTHY_RESTART": "4"})
    app = unique_app("sick")
    assert gitd.ssh("apps:create", app).returncode == 0
    assert gitd.ssh("checks:set", app, "path=/cgi-bin/health", "attempts=1").returncode == 0
    deployed_repo = make_repo(tmp_path / app, healing_app("v1"))
    assert gitd.push(deployed_repo, app).returncode == 0
    host = gitd.host(app)
    assert gitd.get(host) == (200, "v1\n")
    [web] = gitd.live_containers(docker_client, app)
    deadline = time.monotonic() + 30  # Docker's own first probe passed: no start period left
    while time.monotonic() < deadline:
        web.reload()
        if web.attrs["State"]["Health"]["Status"] == "healthy":
            break
        time.sleep(0.2)
    first_start = web.attrs["State"]["StartedAt"]
    web.exec_run(["touch", "/sick"])
    seen = statuses_until(gitd, host, 503, 20)
    web.reload()
    # never Traefik's 404
    assert seen[-1] == 503 and set(seen) <= {200, 503}, (seen, web.attrs["State"].get("Health"))
    status, body = gitd.get(host)
    info = gitd.ssh("apps:info", app)
    assert status == 503 and "unhealthy: no healthy web process" in info.stdout, (status, info.stdout)
    assert "(unhealthy)" in gitd.ssh("ps", app).stdout
    # gitd restarts it (the app heals on start) and it is routed again
    seen = statuses_until(gitd, host, 200, 40)
    assert seen[-1] == 200 and set(seen) <= {200, 503}, seen
    web.reload()
    assert web.attrs["State"]["StartedAt"] != first_start
    info = gitd.ssh("apps:info", app).stdout
    assert "restarted:  1 time(s) for failing health checks" in info, info
    assert "state:      running" in info


def test_a_stopped_or_scaled_down_app_answers_503_and_ps_start_returns_routed(gitd, tmp_path):
    app = unique_app("st")
    deployed(gitd, app, tmp_path, web_app("v1"))
    host = gitd.host(app)
    assert gitd.ssh("ps:stop", app).returncode == 0
    assert statuses_until(gitd, host, 503, 10)[-1] == 503  # was Traefik's 502
    assert "stopped" in gitd.ssh("apps:info", app).stdout
    started = gitd.ssh("ps:start", app)
    assert started.returncode == 0, started.stderr
    assert "Traefik routes" in started.stdout, started.stdout
    assert gitd.get(host) == (200, "v1\n")  # at once: was a 404 for 30 s
    scaled = gitd.ssh("ps:scale", app, "web=0")
    assert scaled.returncode == 0, scaled.stderr
    assert "Deployed to" not in scaled.stdout
    assert "web scaled to 0: not serving" in scaled.stdout, scaled.stdout
    assert statuses_until(gitd, host, 503, 10)[-1] == 503
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0
    assert statuses_until(gitd, host, 404, 10)[-1] == 404  # its 503 route went with it

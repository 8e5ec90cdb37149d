"""Found in review of the merged branches, end to end: a Dockerfile's LABEL
lines reach Traefik through the build's own step containers."""

from __future__ import annotations

import threading
import time

import pytest

from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import commit, make_repo
from tests.e2e.helpers import ok, victim_and_attacker

pytestmark = pytest.mark.e2e


def test_a_build_step_cannot_route_another_apps_host(gitd, docker_client, tmp_path):
    """The image's labels are refused before it runs, but a build's step
    containers carry them while the build runs: `RUN httpd` in a step whose
    image has `LABEL traefik...` served the victim's host for the build's
    whole length (up to build_timeout)."""
    victim, evil, key = victim_and_attacker(gitd, tmp_path)
    victim_host = gitd.host(victim)
    router = f"r{evil.replace('-', '')}"
    dockerfile = (
        f"FROM {BASE_IMAGE}:latest\n"
        f"LABEL traefik.enable=true gitd.instance={gitd.instance} "
        f'traefik.http.routers.{router}.rule="Host(`{victim_host}`)" '
        f"traefik.http.routers.{router}.priority=999999 "
        f"traefik.http.routers.{router}.entrypoints=web "
        f"traefik.http.services.{router}.loadbalancer.server.port=8080\n"
        "RUN mkdir -p /w && echo evil-build > /w/index.html && "
        "(httpd -f -p 8080 -h /w & sleep 20)\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /w"]\n')
    repo = make_repo(tmp_path / evil, {"Dockerfile": f"FROM {BASE_IMAGE}:latest\n"})
    commit(repo, {"Dockerfile": dockerfile}, "route the victim's host from a build step")
    pushed = {}
    push = threading.Thread(target=lambda: pushed.update(r=gitd.push(repo, evil, key=key)))
    push.start()
    seen = set()
    deadline = time.monotonic() + 60
    while push.is_alive() and time.monotonic() < deadline:
        seen.add(gitd.get(victim_host))
        time.sleep(0.2)
    push.join(120)
    assert seen <= {(200, "victim-page\n")}, seen
    result = pushed["r"]
    assert result.returncode != 0 and "Traefik labels" in result.stderr, result.stderr
    assert gitd.get(victim_host) == (200, "victim-page\n")
    for app in (victim, evil):
        ok(gitd, "apps:destroy", app, "--force")


def test_dockerfile_spellings_docker_reads_do_not_hide_another_apps_image(gitd, tmp_path):
    r"""Docker reads `FROM<tab>image`, a BOM then FROM, and `FROM gi\` +
    `td/x` (joined with no space) as FROMs; the reference check did not."""
    from tests.e2e.helpers import refused_push

    victim, evil, key = victim_and_attacker(gitd, tmp_path)
    repo = make_repo(tmp_path / evil, {"Dockerfile": f"FROM {BASE_IMAGE}:latest\n"})
    for head in (f"FROM\tgitd/{victim}:v1\n", f"\ufeffFROM gitd/{victim}:v1\n",
                 f"FROM gi\\\ntd/{victim}:v1\n"):
        commit(repo, {"Dockerfile": head + 'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n'},
               "steal")
        refused_push(gitd, repo, evil, key, "an image of another app")
        assert gitd.get(gitd.host(evil))[1] != "victim-page\n"
    for app in (victim, evil):
        ok(gitd, "apps:destroy", app, "--force")


def test_a_push_waiting_for_the_lock_loses_its_right_with_the_grant(gitd, tmp_path):
    """The lock is taken once the pack is stored: a push that waited behind
    another deploy while its grant was revoked must not deploy."""
    from tests.e2e.harness import unique_app
    from tests.e2e.helpers import create, deployer

    app = unique_app("revoked")
    create(gitd, app)
    key = deployer(gitd, tmp_path, app)
    slow_start = {"Dockerfile": (f"FROM {BASE_IMAGE}:latest\n"
                                 "RUN mkdir -p /www && echo v1 > /www/index.html\n"
                                 'CMD ["sh", "-c", "sleep 6; exec httpd -f -p $PORT -h /www"]\n')}
    repo = make_repo(tmp_path / app, slow_start)
    assert gitd.push(repo, app).returncode == 0
    commit(repo, {"Dockerfile": slow_start["Dockerfile"].replace("echo v1", "echo contractor")},
           "the contractor's change")
    restart = {}
    holder = threading.Thread(target=lambda: restart.update(r=gitd.ssh("ps:restart", app)))
    holder.start()  # holds the app's lock while the new container starts (6 s)
    time.sleep(2)
    pushed = {}
    waiter = threading.Thread(target=lambda: pushed.update(r=gitd.push(repo, app, key=key)))
    waiter.start()
    time.sleep(2)
    ok(gitd, "apps:revoke", app, f"dev-{app}")
    holder.join(180)
    waiter.join(180)
    assert restart["r"].returncode == 0, restart["r"].stderr
    result = pushed["r"]
    assert "Waiting for the deploy" in result.stderr, result.stderr  # it did wait
    assert result.returncode != 0 and "lost its access" in result.stderr, result.stderr
    assert gitd.get(gitd.host(app)) == (200, "v1\n")
    ok(gitd, "apps:destroy", app, "--force")


def test_add_of_a_url_cannot_read_the_hosts_loopback(gitd, tmp_path):
    """dockerd fetches an ADD URL from the host's network: the build read
    Traefik's API (every app's routes) on 127.0.0.1, or anything else there."""
    from tests.e2e.harness import unique_app
    from tests.e2e.helpers import create, deployer, refused_push

    app = unique_app("ssrf")
    create(gitd, app)
    key = deployer(gitd, tmp_path, app)
    repo = make_repo(tmp_path / app, {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        f"ADD http://127.0.0.1:{gitd.api_port}/api/http/routers /www/index.html\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n')})
    result = refused_push(gitd, repo, app, key, "download it from the host")
    assert "Step 1/" not in result.stderr  # refused before the build
    ok(gitd, "apps:destroy", app, "--force")

"""Helpers shared by e2e test modules: SSH calls that must succeed or fail
in words, app set-ups several modules use. Test modules import from here
(and harness, conftest), never from each other."""

import fcntl
import json
import os
import termios
import time
import urllib.request
from pathlib import Path

from tests.e2e.conftest import BASE_IMAGE, web_app
from tests.e2e.harness import make_key, make_repo, unique_app


def ok(gitd, *args, **kwargs):
    result = gitd.ssh(*args, **kwargs)
    assert result.returncode == 0, (args, result.stdout, result.stderr, *internal_errors(gitd, result))
    return result


def internal_errors(gitd, result) -> list[str]:
    """What gitd's log says of an "internal error" the client was shown
    (its traceback): a CI run's log is gone once it ends."""
    if "internal error" not in f"{result.stdout}{result.stderr}":
        return []
    return [line for line in gitd.log_text().splitlines() if "internal error" in line][-3:]


def fails(gitd, *args, match: str, key=None, status=None, **kwargs):
    result = gitd.ssh(*args, key=key, **kwargs)
    assert result.returncode != 0, (args, result.stdout)
    assert match in result.stderr, (args, result.stderr)
    assert result.stderr.lstrip().startswith("!"), result.stderr
    if status is not None:
        assert result.returncode == status
    return result


def create(gitd, app, drain: str = "0.3"):
    ok(gitd, "apps:create", app)
    ok(gitd, "checks:set", app, f"drain={drain}")  # keep the tests quick


def push_ok(gitd, repo, app, key=None):
    pushed = gitd.push(repo, app, key=key)
    assert pushed.returncode == 0, (pushed.stderr, *internal_errors(gitd, pushed))
    return pushed


def create_and_push(gitd, tmp_path, app, files):
    create(gitd, app)
    repo = make_repo(tmp_path / app, files)
    return repo, push_ok(gitd, repo, app)


def controlling_tty():
    """Make stdin (a pty) the client's terminal, so a resize reaches it as SIGWINCH."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def slow_boot_app(version: str, boot_seconds: int) -> dict:
    return web_app(version, extra="") | {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        f"RUN mkdir -p /www && echo '{version}' > /www/index.html\n"
        f'CMD ["sh", "-c", "echo booting {version}; sleep {boot_seconds}; exec httpd -f -p $PORT -h /www"]\n')}


def deployed(gitd, app, tmp_path, files) -> object:
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / app, files)
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    return repo


def route_files(gitd) -> list[str]:
    """The deploys' route files a managed Traefik reads (hooks.docker_routes)."""
    return sorted(p.name for p in (gitd.data_dir / "tls" / "dynamic").glob("bridge-*.yml"))


def file_routed(gitd, name: str) -> dict[str, str]:
    """{server url: status} of the file provider's service of this name,
    when its router is enabled ({} otherwise)."""
    api = f"http://127.0.0.1:{gitd.api_port}/api/http"
    try:
        with urllib.request.urlopen(f"{api}/routers/{name}@file", timeout=2) as r:
            if json.loads(r.read()).get("status") != "enabled":
                return {}
        with urllib.request.urlopen(f"{api}/services/{name}@file", timeout=2) as r:
            return json.loads(r.read()).get("serverStatus") or {}
    except OSError:
        return {}


def wait_docker_health(container, health: str, seconds: float) -> None:
    """Until the engine calls the container `health` (its checks run every
    health_interval)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        container.reload()
        if (container.attrs["State"].get("Health") or {}).get("Status") == health:
            return
        time.sleep(0.5)
    assert (container.attrs["State"].get("Health") or {}).get("Status") == health


PROCFILE = "worker: echo crashing $DYNO; sleep 3; exit 3\n"


def app_files(tag: str) -> dict:
    """A busybox httpd that says `TAG up DYNO` as it starts, and a worker that
    exits with status 3 three seconds after each start."""
    return {"Procfile": PROCFILE, "Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\nRUN mkdir -p /www && echo {tag} > /www/index.html\n"
        f'CMD echo "{tag} up $DYNO"; exec httpd -f -p $PORT -h /www\n')}


def refused_push(gitd, repo, app, key, match: str):
    result = gitd.push(repo, app, key=key)
    assert result.returncode != 0, result.stderr
    assert match in result.stderr, result.stderr
    return result


def deployer(gitd, tmp_path, app) -> Path:
    """A non-admin key granted `app` only."""
    name = f"dev-{app}"
    key = make_key(tmp_path, name)
    ok(gitd, "keys:add", name, input=(tmp_path / f"{name}.pub").read_text())
    ok(gitd, "apps:grant", app, name)
    return key


def victim_and_attacker(gitd, tmp_path):
    """A live victim app (admin's) and an attacker app with a deployer key."""
    victim, evil = unique_app("victim"), unique_app("evil")
    create(gitd, victim)
    create(gitd, evil)
    repo = make_repo(tmp_path / victim, web_app("victim-page"))
    pushed = gitd.push(repo, victim)
    assert pushed.returncode == 0, pushed.stderr
    assert gitd.wait_for(gitd.host(victim), "victim-page")[0] == 200
    return victim, evil, deployer(gitd, tmp_path, evil)

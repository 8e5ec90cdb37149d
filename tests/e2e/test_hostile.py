"""A deployer key tries what a hostile one would, end to end (real ssh, git,
gitd, Docker, Traefik, Nix): one test per class of attack. Every refusal is a
` !     ` line naming why, and leaves the other apps serving as before."""

from __future__ import annotations

import json
import resource
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from hooks.specs import app_network
from tests.conftest import require
from tests.e2e.conftest import BASE_IMAGE, web_app
from tests.e2e.harness import commit, git, gitd_command, make_repo, unique_app
from tests.e2e.helpers import create, deployer, fails, ok, refused_push, victim_and_attacker

pytestmark = pytest.mark.e2e





def releases(gitd, app) -> list[dict]:
    return json.loads(ok(gitd, "releases", app, "--json").stdout)


def test_routing_belongs_to_gitd(gitd, docker_client, tmp_path):
    victim, evil, key = victim_and_attacker(gitd, tmp_path)
    victim_host = gitd.host(victim)
    hijacks = [
        f'LABEL traefik.http.routers.x.rule="Host(`{victim_host}`)" '
        'traefik.http.routers.x.priority="999999"\n',
        'LABEL Traefik.TCP.Routers.all.Rule="HostSNI(`*`)" traefik.tcp.routers.all.entrypoints=web\n',
        'LABEL TRAEFIK.ENABLE=true\n',
    ]
    repo = make_repo(tmp_path / evil, web_app("evil-page"))
    for label in hijacks:
        commit(repo, web_app("evil-page", extra=label), "hijack")
        refused_push(gitd, repo, evil, key, "Traefik labels")
        assert gitd.get(victim_host) == (200, "victim-page\n")
    assert all(r["status"] == "failed" for r in releases(gitd, evil))
    assert gitd.containers(docker_client, evil) == []
    assert docker_client.images.list(name=f"gitd/{evil}") == []

    # hosts: another app's, its default one, and hosts that would break the rule
    fails(gitd, "domains:add", evil, "x.example.com", key=key, match="permission denied")
    fails(gitd, "domains:add", evil, victim_host, match="")
    ok(gitd, "domains:remove", victim, victim_host)  # even once the victim let it go
    fails(gitd, "domains:add", evil, victim_host, match=f"reserved for the app '{victim}'")
    ok(gitd, "domains:add", victim, victim_host)
    for host in ("a.com`) || HostRegexp(`.*", "*.localhost", "127.0.0.1", "x.com/`", "[::1]"):
        fails(gitd, "domains:add", evil, shlex.quote(host), match="invalid domain")
    hosts = [d["host"] for d in json.loads(ok(gitd, "domains", evil, "--json").stdout)]
    assert hosts == [gitd.host(evil)]
    assert gitd.wait_for(victim_host, "victim-page")[0] == 200
    for app in (victim, evil):
        ok(gitd, "apps:destroy", app, "--force")


def test_apps_are_isolated_from_each_other(gitd, docker_client, tmp_path):
    victim, evil, key = victim_and_attacker(gitd, tmp_path)
    victim_image = docker_client.images.get(f"gitd/{victim}:v1")
    base = docker_client.images.get(f"{BASE_IMAGE}:latest")
    steals = [
        f"FROM gitd/{victim}:v1\n",
        f"FROM docker.io/gitd/{victim}:v1\n",
        f"ARG APP={victim}\nARG REF=gitd/${{APP}}:v1\nFROM $REF\n",
        f"FROM {victim_image.id}\n",
        f"FROM {victim_image.id.split(':')[1][:12]}\n",
        f"FROM {BASE_IMAGE}:latest\nCOPY --from={victim_image.id} /www /stolen\n",
        f"FROM {BASE_IMAGE}:latest\nCOPY --from=gitd/{victim}:v1 /www /stolen\n",
        f"FROM {BASE_IMAGE}:latest\nRUN --mount=type=bind,from=gitd/{victim}:v1,target=/x cat /x/www/index.html\n",
    ]
    # an untagged image left by the victim's build steps (the layer holding its page)
    parents = [p for p in victim_image.history() if p.get("Id", "<missing>") != "<missing>"]
    untagged = [p["Id"] for p in parents if not p.get("Tags") and p["Id"] != victim_image.id]
    assert untagged, parents
    steals.append(f"FROM {untagged[0]}\n")
    repo = make_repo(tmp_path / evil, web_app("evil-page"))
    for dockerfile in steals:
        commit(repo, {"Dockerfile": dockerfile + 'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /stolen"]\n'},
               "steal")
        result = refused_push(gitd, repo, evil, key, "image")
        assert "another app" in result.stderr or "untagged" in result.stderr, (dockerfile, result.stderr)
    assert docker_client.images.list(name=f"gitd/{evil}") == []

    # base images and the app's own images are fine; each app has its own network
    commit(repo, web_app("evil-v2"), "honest")
    assert gitd.push(repo, evil, key=key).returncode == 0
    commit(repo, {"Dockerfile": f"FROM gitd/{evil}:v{len(releases(gitd, evil))}\n"
                                f"RUN echo evil-v3 > /www/index.html\n"}, "own image")
    pushed = gitd.push(repo, evil, key=key)
    assert pushed.returncode == 0, pushed.stderr
    assert gitd.wait_for(gitd.host(evil), "evil-v3")[0] == 200
    assert base.id  # the base stayed usable throughout

    def networks(app):
        found = set()
        for container in gitd.containers(docker_client, app):
            try:
                container.reload()
            except docker.errors.NotFound:
                continue  # an old release's, retired in the background meanwhile
            found |= set(container.attrs["NetworkSettings"]["Networks"])
        return found

    assert networks(victim) == {app_network(gitd.instance, victim)}
    assert networks(evil) == {app_network(gitd.instance, evil)}
    net = docker_client.networks.get(app_network(gitd.instance, evil))
    assert net.attrs["Labels"]["gitd.app"] == evil
    ran = gitd.ssh("run", victim, "--", "cat", "/proc/net/route", input="")
    assert ran.returncode == 0  # one-offs run on the app's network too
    for app in (victim, evil):
        ok(gitd, "apps:destroy", app, "--force")
    assert docker_client.networks.list(names=[app_network(gitd.instance, evil)]) == []


def test_host_files_are_never_read_and_bombs_stop(own_gitd, docker_client, tmp_path):
    own_gitd.start(extra_env={"GITD_MAX_EXPORT_FILES": "2000"})
    # guard: had the symlink been followed, gitd would fail to allocate
    # instead of taking the machine's memory
    resource.prlimit(own_gitd.proc.pid, resource.RLIMIT_AS, (8 * 1024**3, 8 * 1024**3))
    app = unique_app("files")
    create(own_gitd, app)
    key = deployer(own_gitd, tmp_path, app)
    repo = make_repo(tmp_path / app, web_app("files"))
    for name, target in ((".dockerignore", "/dev/zero"), ("Dockerfile", "/etc/shadow"),
                         ("data", "../../../../../../etc")):
        link = repo / name
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"link {name}")
        refused_push(own_gitd, repo, app, key, "points outside the build directory")
        git(repo, "reset", "-q", "--hard", "HEAD~1")
    assert own_gitd.proc.poll() is None

    # a git bomb: 10 000 files from a handful of objects
    blob = _git_input(repo, ["hash-object", "-w", "--stdin"], b"x").strip()
    tree = _git_input(repo, ["mktree"], "".join(f"100644 blob {blob}\tf{i}\n" for i in range(10)))
    for _ in range(3):
        tree = _git_input(repo, ["mktree"], "".join(f"040000 tree {tree.strip()}\td{i}\n"
                                                     for i in range(10)))
    bomb = git(repo, "commit-tree", tree.strip(), "-m", "bomb", "-p", "HEAD").strip()
    git(repo, "update-ref", "refs/heads/main", bomb)
    result = refused_push(own_gitd, repo, app, key, "max_export_files")
    assert "more than 2000 files" in result.stderr
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    assert own_gitd.push(repo, app, key=key).returncode == 0  # and an honest push still works


def _git_input(repo: Path, args: list[str], data) -> str:
    data = data.encode() if isinstance(data, str) else data
    return subprocess.run(["git", *args], cwd=repo, input=data, check=True,
                          capture_output=True).stdout.decode()


def test_builds_and_release_commands_stop_at_their_limits(own_gitd, docker_client, tmp_path):
    own_gitd.start(extra_env={"GITD_BUILD_TIMEOUT": "20", "GITD_RELEASE_TIMEOUT": "4",
                              "GITD_MAX_LOG_BYTES": "4000"})
    app = unique_app("slow")
    create(own_gitd, app)
    key = deployer(own_gitd, tmp_path, app)
    token = uuid.uuid4().hex[:8]
    repo = make_repo(tmp_path / app, web_app("slow", extra=f"RUN sleep 3600 # {token}\n"))
    started = time.monotonic()
    refused_push(own_gitd, repo, app, key, "build_timeout")
    assert time.monotonic() - started < 120
    deadline = time.monotonic() + 30  # dockerd cancels the build when gitd hangs up
    while time.monotonic() < deadline and _running_with(docker_client, token):
        time.sleep(0.5)
    assert not _running_with(docker_client, token)

    commit(repo, {**web_app("slow"), "Procfile": "release: sleep infinity\n"}, "release hangs")
    refused_push(own_gitd, repo, app, key, "release_timeout")
    ok(own_gitd, "config:set", app, "A=1")  # the app's lock was let go

    noisy = web_app("noisy", extra="RUN for i in $(seq 1 3000); do echo noise-$i; done\n")
    commit(repo, {**noisy, "Procfile": None}, "noisy")
    assert own_gitd.push(repo, app, key=key).returncode == 0
    with own_gitd.db() as conn:
        log = conn.execute("SELECT log FROM releases WHERE app = ? ORDER BY version DESC LIMIT 1",
                           [app]).fetchone()[0]
    assert len(log) < 5000 and "max_log_bytes" in log and "Deployed to" in log

    # a flake that builds forever (in Nix's sandbox: a deployer pushed it),
    # evaluation included in the same limit; its builder does not outlive it
    if shutil.which("nix"):
        from tests.nix import fixtures
        flake_app = unique_app("slownix")
        create(own_gitd, flake_app)
        ok(own_gitd, "apps:grant", flake_app, f"dev-{app}")
        digits = str(uuid.uuid4().int)[:6]  # sleep takes a number
        nix_repo = tmp_path / flake_app
        nix_repo.mkdir()
        shutil.copy("/bin/busybox", nix_repo / "busybox")
        (nix_repo / "flake.nix").write_text(
            '{ outputs = { self }: { packages.%s.default = derivation { name = "slow"; '
            'system = "%s"; builder = "${self}/busybox"; args = [ "sleep" "3600%s" ]; }; }; }\n'
            % (fixtures.SYSTEM, fixtures.SYSTEM, digits))
        make_repo(nix_repo, {})
        refused_push(own_gitd, nix_repo, flake_app, key, "build_timeout")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _processes_with(f"3600{digits}"):
            time.sleep(0.5)
        assert not _processes_with(f"3600{digits}")
    else:
        require(False, "nix is not installed (apt-get install nix-bin)")


def _processes_with(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def _running_with(client, token: str) -> list:
    return [c for c in client.containers.list() if token in " ".join(c.attrs["Config"]["Cmd"] or [])]


# the container's own memory and pids limits, cgroup v2 or v1
LIMITS = ("cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
          "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max")


def test_resource_limits(gitd, docker_client, tmp_path):
    app = unique_app("res")
    create(gitd, app)
    key = deployer(gitd, tmp_path, app)
    for bad in ("memory=-1", "memory=1e999", "memory=inf", "memory=512mb", "cpus=0", "cpus=nan",
                "cpus=99999", "pids=0", "pids=²", "swap=1g", "memory"):
        fails(gitd, "resources:set", app, bad, match="")
    fails(gitd, "resources:set", app, "memory=1g", key=key, match="permission denied")
    defaults = json.loads(ok(gitd, "resources:show", app, "--json", key=key).stdout)
    assert defaults["applied"] == {"memory": "1g", "cpus": "1", "pids": "1024"}

    repo = make_repo(tmp_path / app, {**web_app("res"), "Procfile": f"release: {LIMITS}\n"})
    pushed = gitd.push(repo, app, key=key)
    assert pushed.returncode == 0, pushed.stderr
    assert str(1024**3) in pushed.stderr and "1024" in pushed.stderr  # the release task's limits
    ok(gitd, "resources:set", app, "memory=64m", "cpus=0.5", "pids=100")
    # the live one: the old release's may still be retiring in the background
    (web,) = [c for c in gitd.containers(docker_client, app) if c.labels["gitd.process"] == "web"
              and c.labels["gitd.seq"] == gitd.live_seq(app)]
    web.reload()
    host = web.attrs["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 * 1024**2, 500_000_000, 100)
    ran = ok(gitd, "run", app, "--", "sh", "-c", shlex.quote(LIMITS), input="")
    assert ran.stdout.split() == [str(64 * 1024**2), "100"]
    shown = json.loads(ok(gitd, "resources:show", app, "--json").stdout)
    assert shown["set"] == {"memory": "64m", "cpus": "0.5", "pids": "100"}
    ok(gitd, "resources:unset", app, "memory", "cpus", "pids")
    assert json.loads(ok(gitd, "resources:show", app, "--json").stdout)["set"] == {}
    # a build gets the memory limit too: a RUN step over it is killed
    ok(gitd, "resources:set", app, "memory=32m")
    hog = "RUN x=$(head -c 100000000 /dev/zero | tr '\\000' a); echo ${#x}\n"
    commit(repo, {**web_app("hog", extra=hog), "Procfile": None}, "hog")
    assert gitd.push(repo, app, key=key).returncode != 0
    ok(gitd, "resources:unset", app, "memory")
    assert gitd.push(repo, app, key=key).returncode == 0  # the same build within the default
    ok(gitd, "apps:destroy", app, "--force")


def test_deployers_code_never_runs_on_the_host(own_gitd, docker_client, tmp_path):
    require(shutil.which("nix") is not None, "nix is not installed (apt-get install nix-bin)")
    from tests.nix import fixtures

    # a host where Nix's sandbox cannot work: deployers' flakes are refused
    env = {"NIX_CONFIG": "sandbox-paths = /nonexistent-gitd-sandbox"}
    own_gitd.start(extra_env=env)
    app = unique_app("nixy")
    create(own_gitd, app)
    key = deployer(own_gitd, tmp_path, app)
    repo = tmp_path / app
    fixtures.write_web_flake(repo)
    make_repo(repo, {})
    result = refused_push(own_gitd, repo, app, key, "refusing to build flake.nix for a non-admin key")
    assert "sandbox" in result.stderr
    doctor = subprocess.run(gitd_command("doctor", "--data-dir", str(own_gitd.data_dir)),
                            capture_output=True, text=True,
                            env={**__import__("os").environ, **env}, timeout=300)
    assert "nix sandbox" in doctor.stdout and "refused" in doctor.stdout, doctor.stdout
    own_gitd.stop()

    # with a working sandbox a deployer's flake builds in it, but a script
    # that writes the image (it would run on the host) is refused
    own_gitd.start()
    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/busybox", repo / "busybox")
    (repo / "flake.nix").write_text(_stream_script_flake(fixtures.SYSTEM, marker))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "stream script")
    result = refused_push(own_gitd, repo, app, key, "streamLayeredImage")
    assert "building in Nix's sandbox" in result.stderr
    assert not marker.exists()


def _stream_script_flake(system: str, marker: Path) -> str:
    return """{
  outputs = { self }: {
    packages.%(system)s.docker = derivation {
      name = "stream-image";
      system = "%(system)s";
      builder = "${self}/busybox";  # busybox picks its applet by name: keep it "busybox"
      args = [ "sh" "-c" "%(bb)s printf '#!/bin/sh\\ntouch %(marker)s\\n' > $out; %(bb)s chmod 755 $out" ];
    };
  };
}
""" % {"system": system, "marker": marker, "bb": "${self}/busybox"}

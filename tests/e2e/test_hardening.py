"""Floods, revocation and hostile input against a real gitd, with the real
ssh and git clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from contextlib import ExitStack

from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, make_key, make_repo, unique_app
from tests.e2e.helpers import ok


def refused(gitd, *args, match: str, key=None, **kwargs):
    result = gitd.ssh(*args, key=key, **kwargs)
    assert result.returncode != 0, (args, result.stdout)
    assert match in result.stderr, (args, result.stderr)
    assert "internal error" not in result.stderr
    return result


def add_deployer(gitd, tmp_path, app: str | None = None):
    name = unique_app("dev")
    key = make_key(tmp_path, name)
    ok(gitd, "keys:add", name, input=(tmp_path / f"{name}.pub").read_text())
    if app:
        ok(gitd, "apps:grant", app, name)
    return name, key


def idle_upload_pack(config, app: str) -> subprocess.Popen:
    """A git client that logs in, asks for upload-pack and never sends a want.
    (`config` is written once: rewriting it races the clients reading it.)"""
    return subprocess.Popen(["ssh", "-F", str(config), "-T", "paas", f"git-upload-pack '{app}'"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_advertised(proc: subprocess.Popen) -> None:
    """The session is open once the server has advertised its refs."""
    first = proc.stdout.read(4)
    assert first, proc.stderr.read()


def close_all(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_idle_sessions_never_starve_others_and_caps_refuse_clearly(own_gitd, tmp_path):
    gitd = own_gitd
    gitd.start(extra_env={"GITD_MAX_SESSIONS": "30", "GITD_MAX_SESSIONS_PER_KEY": "20",
                          "GITD_MAX_CONNECTIONS_PER_KEY": "40", "GITD_IDLE_TIMEOUT": "15"})
    app = unique_app("idle")
    ok(gitd, "apps:create", app)
    _, dev = add_deployer(gitd, tmp_path, app)
    idle = []
    try:
        # 20 idle git sessions: far more than the default thread pool's workers
        dev_config = gitd.ssh_config(dev)
        for _ in range(20):
            idle.append(idle_upload_pack(dev_config, app))
        for proc in idle:
            wait_advertised(proc)
        # others are served at once; the key at its cap is refused with the setting named
        assert "apps:create" in ok(gitd, "help", timeout=60).stdout
        refused(gitd, "apps:info", app, key=dev, match="max_sessions_per_key", timeout=60)
        # 10 more from the admin reach the total cap: then everyone is told
        admin_config = gitd.ssh_config(gitd.admin_key)
        for _ in range(10):
            idle.append(idle_upload_pack(admin_config, app))
        for proc in idle[20:]:
            wait_advertised(proc)
        refused(gitd, "help", match="max_sessions", timeout=60)
        # the idle timeout ends them all, with the reason on stderr
        for proc in idle:
            proc.wait(90)
            assert proc.returncode != 0
        assert "idle_timeout" in idle[0].stderr.read().decode()
        assert ok(gitd, "apps:info", app, key=dev, timeout=60)
        # a command waiting for stdin that never comes is given up on too
        waiting = subprocess.Popen(["ssh", "-F", str(admin_config), "-T", "paas", "keys:add", "x"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        idle.append(waiting)
        assert waiting.wait(90) != 0
        assert "idle_timeout" in waiting.stderr.read().decode()
    finally:
        close_all(idle)


def test_connections_before_login_are_capped_and_timed_out(own_gitd):
    gitd = own_gitd
    gitd.start(extra_env={"GITD_MAX_UNAUTHENTICATED": "5", "GITD_LOGIN_TIMEOUT": "4"})
    with ExitStack() as stack:
        held = []
        for _ in range(5):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", gitd.ssh_port), 10))
            assert sock.recv(64).startswith(b"SSH-2.0-")  # accepted; never logs in
            held.append(sock)
        extra = stack.enter_context(socket.create_connection(("127.0.0.1", gitd.ssh_port), 10))
        assert read_until_closed(extra, 10), "the connection over the cap was not refused"
        # the login timeout drops the held ones; then logins work again
        for sock in held:
            assert read_until_closed(sock, 30), "a connection idle before login was kept"
    assert "apps:create" in ok(gitd, "help").stdout


def read_until_closed(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection within `seconds`."""
    sock.settimeout(1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not sock.recv(4096):
                return True
        except socket.timeout:
            continue
        except OSError:  # reset
            return True
    return False


def test_removing_a_key_or_grant_reaches_an_open_multiplexed_connection(gitd, tmp_path):
    app = unique_app("rev")
    ok(gitd, "apps:create", app)
    name, dev = add_deployer(gitd, tmp_path, app)
    control = tmp_path / "cm.sock"
    config = gitd.ssh_config(dev)
    base = ["ssh", "-F", str(config), "-o", f"ControlPath={control}"]
    master = subprocess.Popen(base + ["-o", "ControlMaster=yes", "-o", "ControlPersist=no",
                                      "-N", "paas"], stdin=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)

    def through_master(*args):
        return subprocess.run(base + ["-o", "ControlMaster=no", "-T", "paas", *args],
                              capture_output=True, text=True, timeout=60)

    try:
        deadline = time.monotonic() + 30
        while not control.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert control.exists(), master.stderr.read() if master.poll() is not None else ""
        assert through_master("apps:info", app).returncode == 0
        git_ssh = f"ssh -F {config} -o ControlPath={control} -o ControlMaster=no"
        env = {**gitd.git_env(dev), "GIT_SSH_COMMAND": git_ssh}
        assert subprocess.run(["git", "ls-remote", gitd.remote(app)], env=env,
                              capture_output=True, timeout=60).returncode == 0

        ok(gitd, "apps:revoke", app, name)
        after = through_master("apps:info", app)
        assert after.returncode != 0 and "permission denied" in after.stderr, after
        listed = subprocess.run(["git", "ls-remote", gitd.remote(app)], env=env,
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode != 0 and "permission denied" in listed.stderr

        ok(gitd, "apps:grant", app, name)
        assert through_master("apps:info", app).returncode == 0
        ok(gitd, "keys:remove", name)
        gone = through_master("apps:info", app)
        assert gone.returncode != 0 and "key was removed" in gone.stderr, gone
        master.wait(30)  # gitd closed the whole connection
        assert through_master("help").returncode != 0
    finally:
        if master.poll() is None:
            master.kill()
        master.wait(10)
        ok(gitd, "apps:destroy", app, "--force")


HOSTILE_NUMBERS = [
    ("releases:info", "{app}", "v²"), ("releases:info", "{app}", "v99999999999999999999"),
    ("releases:info", "{app}", "v-1"), ("releases:info", "{app}", "v٣"),
    ("releases:rollback", "{app}", "v²"), ("releases:rollback", "{app}", "v1e3"),
    ("config:set", "{app}", "PORT=²"), ("config:set", "{app}", "PORT=99999"),
    ("config:set", "{app}", "PORT=-1"), ("checks:set", "{app}", "drain=inf"),
    ("checks:set", "{app}", "drain=nan"), ("checks:set", "{app}", "wait=1e999"),
    ("checks:set", "{app}", "attempts=²"), ("checks:set", "{app}", "timeout=-3"),
    ("checks:set", "{app}", "stop_timeout=99999999999999999999"), ("ps:scale", "{app}", "web=²"),
    ("ps:scale", "{app}", "web=99999999999999999999"), ("logs", "{app}", "-n", "²"),
    ("releases", "{app}", "-n", "1e999"),
]


def test_hostile_numbers_fail_cleanly_and_change_nothing(gitd, tmp_path):
    app = unique_app("num")
    ok(gitd, "apps:create", app)
    repo = make_repo(tmp_path / app, web_app("one"))
    assert gitd.push(repo, app).returncode == 0
    before = ok(gitd, "config", app, "--json").stdout, ok(gitd, "checks:show", app, "--json").stdout
    for args in HOSTILE_NUMBERS:
        result = gitd.ssh(*(a.format(app=app) for a in args))
        assert result.returncode != 0, args
        assert result.stderr.startswith(" !     ") and "internal error" not in result.stderr, \
            (args, result.stderr)
    after = ok(gitd, "config", app, "--json").stdout, ok(gitd, "checks:show", app, "--json").stdout
    assert after == before
    statuses = [r["status"] for r in json.loads(ok(gitd, "releases", app, "--json").stdout)]
    assert statuses == ["succeeded"]
    ok(gitd, "apps:destroy", app, "--force")


def test_hostile_app_json_fails_the_push_without_a_stuck_release(gitd, docker_client, tmp_path):
    app = unique_app("aj")
    ok(gitd, "apps:create", app)
    repo = make_repo(tmp_path / app, web_app("one"))
    assert gitd.push(repo, app).returncode == 0
    for text in ('{"healthchecks":{"attempts":1e999}}', '{"healthchecks":{"wait":NaN}}',
                 '{"healthchecks":{"web":[7]}}', '{"healthchecks":{"timeout":"²"}}',
                 "[" * 100000):
        commit(repo, {"app.json": text}, "hostile app.json")
        pushed = gitd.push(repo, app)
        assert pushed.returncode != 0, text[:40]
        assert "internal error" not in pushed.stderr, pushed.stderr
    releases = json.loads(ok(gitd, "releases", app, "--json").stdout)
    assert [r["status"] for r in releases][-1] == "succeeded"
    assert all(r["status"] in ("succeeded", "failed") for r in releases), releases
    assert gitd.wait_for(gitd.host(app), "one")[0] == 200
    tags = [t for i in docker_client.images.list(name=f"gitd/{app}") for t in i.tags]
    assert tags == [f"gitd/{app}:v1"], tags
    ok(gitd, "apps:destroy", app, "--force")


def test_an_atomic_push_deploys_only_on_its_own(gitd, tmp_path):
    app = unique_app("atom")
    ok(gitd, "apps:create", app)
    repo = make_repo(tmp_path / app, web_app("one"))
    subprocess.run(["git", "branch", "feature"], cwd=repo, check=True)
    mixed = subprocess.run(["git", "push", "--atomic", gitd.remote(app), "main", "feature"], cwd=repo,
                       env=gitd.git_env(), capture_output=True, text=True, timeout=300)
    assert mixed.returncode != 0 and "atomic push cannot deploy" in mixed.stderr, mixed.stderr
    assert ok(gitd, "releases", app, "--json").stdout.strip() == "[]"  # nothing deployed
    alone = subprocess.run(["git", "push", "--atomic", gitd.remote(app), "main"], cwd=repo,
                           env=gitd.git_env(), capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr
    assert [r["status"] for r in json.loads(ok(gitd, "releases", app, "--json").stdout)] == ["succeeded"]
    ok(gitd, "apps:destroy", app, "--force")


def test_the_repo_quota_bounds_a_push_and_then_refuses_more(own_gitd, tmp_path):
    gitd = own_gitd
    gitd.start(extra_env={"GITD_MAX_REPO_BYTES": str(256 * 1024)})
    app = unique_app("quota")
    ok(gitd, "apps:create", app)
    small = make_repo(tmp_path / "small", {"a.txt": "small\n"})
    pushed = gitd.push(small, app, refspec="main:refs/heads/store")  # stored, not deployed
    assert pushed.returncode == 0, pushed.stderr
    big = make_repo(tmp_path / "big", {"blob.bin": os.urandom(400 * 1024).hex()})
    refused_push = gitd.push(big, app, refspec="main:refs/heads/big")
    assert refused_push.returncode != 0
    assert "max_repo_bytes" in refused_push.stderr, refused_push.stderr
    # fill it past the quota from the server side: then every push is refused up front
    (gitd.data_dir / "repos" / f"{app}.git" / "objects" / "filler").write_bytes(b"\0" * 300 * 1024)
    over = gitd.push(small, app, refspec="main:refs/heads/again")
    assert over.returncode != 0 and "at its quota" in over.stderr, over.stderr
    ok(gitd, "apps:destroy", app, "--force")

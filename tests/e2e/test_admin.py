"""The admin surface over a real ssh client: config, domains, ps, releases,
logs, run, keys and grants, against real Docker and Traefik."""

import fcntl
import json
import os
import pty
import select
import shlex
import struct
import subprocess
import termios
import time

import pytest

from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import commit, make_key, make_repo, unique_app
from tests.e2e.helpers import controlling_tty, create, create_and_push, fails, ok, push_ok  # noqa: F401

pytestmark = pytest.mark.e2e


def env_app(tag: str, procfile: str | None = None) -> dict:
    """A busybox httpd app whose page, written at start, is `tag|$GREETING|$HOSTNAME`;
    it exits at once when CRASH is set."""
    files = {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\nRUN mkdir -p /www\n"
        'CMD test -z "$CRASH" || exit 3; '
        f'echo "{tag}|$GREETING|$HOSTNAME" > /www/index.html; exec httpd -f -p $PORT -h /www\n')}
    if procfile:
        files["Procfile"] = procfile
    return files






def live(gitd, client, app, process="web"):
    return [c for c in gitd.live_containers(client, app)
            if c.labels["gitd.role"] == "service" and c.labels["gitd.process"] == process]


def env_of(container) -> list[str]:
    container.reload()
    return container.attrs["Config"]["Env"]


def page(gitd, app, host=None) -> list[str]:
    status, body = gitd.get(host or gitd.host(app))
    assert status == 200, (status, body)
    return body.strip().split("|")


def wait_status(gitd, host, wanted, timeout=15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = gitd.get(host)[0]
        if status in wanted:
            return status
        time.sleep(0.2)
    return status


def as_json(result):
    return json.loads(result.stdout)


def test_config_reaches_the_containers_and_a_rollback_serves_the_old_release(gitd, docker_client,
                                                                               tmp_path):
    app = unique_app("cfg")
    create(gitd, app)
    stored = ok(gitd, "config:set", app, shlex.quote("GREETING=hello world"))
    assert "the first push uses it" in stored.stdout
    repo = make_repo(tmp_path / app, env_app("one"))
    push_ok(gitd, repo, app)
    assert page(gitd, app)[:2] == ["one", "hello world"]
    image = live(gitd, docker_client, app)[0].attrs["Image"]

    # spaces, quotes and '=' (quoted once more for the remote shell split) and a newline via stdin
    msg = 'say "hi" = a  b'
    changed = ok(gitd, "config:set", app, "GREETING=bonjour", shlex.quote(f"MSG={msg}"), "PEM=@-",
                 input="line 1\nline 2\n")
    assert "-----> Releasing v2: Set GREETING, MSG, PEM" in changed.stdout
    [container] = live(gitd, docker_client, app)
    env = env_of(container)
    assert {"GREETING=bonjour", f"MSG={msg}", "PEM=line 1\nline 2"} <= set(env)
    assert container.attrs["Image"] == image  # the same image: config is not baked in
    assert not any(e.startswith("GREETING") for e in docker_client.images.get(image).attrs["Config"]["Env"])
    assert page(gitd, app)[:2] == ["one", "bonjour"]
    assert ok(gitd, "config:get", app, "MSG").stdout == msg + "\n"
    assert as_json(ok(gitd, "config", app, "--json"))["PEM"] == "line 1\nline 2"

    # a value that breaks the app: the deploy fails and the values go back
    broken = fails(gitd, "config:set", app, "CRASH=1", match="exited during start")
    assert "config of " + app + " left as it was; v2 keeps serving" in broken.stderr
    fails(gitd, "config:get", app, "CRASH", match="CRASH is not set")
    assert [c.id for c in live(gitd, docker_client, app)] == [container.id]
    assert page(gitd, app)[:2] == ["one", "bonjour"]

    # --no-restart stores only; ps:restart applies it
    ok(gitd, "config:unset", app, "PEM", "--no-restart")
    assert "PEM=line 1\nline 2" in env_of(live(gitd, docker_client, app)[0])
    ok(gitd, "ps:restart", app)
    assert not any(e.startswith("PEM=") for e in env_of(live(gitd, docker_client, app)[0]))

    # new code, then back to v1: its code and its config, without a rebuild
    commit(repo, env_app("two"), "two")
    push_ok(gitd, repo, app)
    assert page(gitd, app)[:2] == ["two", "bonjour"]
    rolled = ok(gitd, "releases:rollback", app, "v1")
    assert "Rollback to v1" in rolled.stdout
    assert page(gitd, app)[:2] == ["one", "hello world"]
    assert live(gitd, docker_client, app)[0].attrs["Image"] == image
    assert as_json(ok(gitd, "config", app, "--json")) == {"GREETING": "hello world"}
    rows = as_json(ok(gitd, "releases", app, "--json"))
    assert [(r["version"], r["kind"], r["status"]) for r in rows] == [
        (6, "rollback", "succeeded"), (5, "push", "succeeded"), (4, "config", "succeeded"),
        (3, "config", "failed"), (2, "config", "succeeded"), (1, "push", "succeeded")]
    assert rows[0]["current"] and rows[0]["description"] == "Rollback to v1"
    listing = ok(gitd, "releases", app).stdout
    assert "v6*" in listing and "Rollback to v1" in listing and "admin" in listing
    info = ok(gitd, "releases:info", app, "v3")
    assert "status:      failed" in info.stdout and "exited during start" in info.stdout

    fails(gitd, "config:set", app, "NOVALUE", match="expected KEY=VALUE", status=2)
    fails(gitd, "config:set", app, "9X=1", match="invalid config key", status=2)
    fails(gitd, "releases:info", app, "v99", match="no release v99")
    fails(gitd, "releases:rollback", app, "v3", match="only a release that succeeded")
    fails(gitd, "releases:rollback", app, "v6", match="current release already")
    ok(gitd, "apps:destroy", app, "--force")


def test_domains_route_at_once(gitd, docker_client, tmp_path):
    app, other = unique_app("dom"), unique_app("dom")
    create_and_push(gitd, tmp_path, app, env_app("dom"))
    extra = f"www.{app}.example.test"
    added = ok(gitd, "domains:add", app, extra.upper())
    assert "Updating routes" in added.stdout
    assert page(gitd, app, host=extra)[0] == "dom"
    ok(gitd, "apps:create", other)
    fails(gitd, "domains:add", other, extra, match=f"already used by app '{app}'")
    fails(gitd, "domains:add", app, "not_a_host", match="invalid domain", status=2)
    fails(gitd, "domains:remove", app, "missing.example.test", match="is not set")

    ok(gitd, "domains:remove", app, gitd.host(app))
    assert wait_status(gitd, gitd.host(app), (404,)) == 404
    assert page(gitd, app, host=extra)[0] == "dom"
    assert as_json(ok(gitd, "domains", app, "--json")) == [
        {"host": extra, "path": "/", "strip_prefix": False, "url": f"http://{extra}:{gitd.http_port}"}]
    for name in (app, other):
        ok(gitd, "apps:destroy", name, "--force")


PROCFILE = ("worker: while true; do echo tick $DYNO; sleep 1; done\n"
            "release: echo migrating $GITD_RELEASE\n")


def test_process_types_scale_stop_start_logs_and_a_failing_release_task(gitd, docker_client, tmp_path):
    app = unique_app("ps")
    repo, pushed = create_and_push(gitd, tmp_path, app, env_app("ps", PROCFILE))
    assert "Running release command: echo migrating $GITD_RELEASE" in pushed.stderr
    assert "migrating v1" in pushed.stderr
    assert live(gitd, docker_client, app, "worker") == []  # only web runs by default

    scaled = ok(gitd, "ps:scale", app, "web=2", "worker=1")
    assert "Running release command" not in scaled.stdout  # once per release, not per restart
    web = live(gitd, docker_client, app)
    assert len(web) == 2 and len({c.labels["gitd.seq"] for c in web}) == 1
    # gitd's probe passed (Docker's own first check comes health_interval later)
    assert all(c.attrs["State"]["Health"]["Status"] in ("starting", "healthy") for c in web)
    assert len(live(gitd, docker_client, app, "worker")) == 1
    hosts = {page(gitd, app)[2] for _ in range(12)}
    assert len(hosts) == 2, hosts  # both containers answer
    assert as_json(ok(gitd, "ps:scale", app, "--json")) == {"web": 2, "worker": 1}
    gitd.wait_retired(docker_client, app)  # the old web.1 drains in the background
    listed = as_json(ok(gitd, "ps", app, "--json"))
    assert sorted((c["name"], c["state"]) for c in listed["containers"]) == [
        ("web.1", "running"), ("web.2", "running"), ("worker.1", "running")]
    assert "up " in ok(gitd, "ps", app).stdout
    fails(gitd, "ps:scale", app, "clock=1", match="no process type 'clock'")
    fails(gitd, "ps:scale", app, "web=21", match="from 0 to 20")

    time.sleep(1.2)
    assert "worker.1 | tick worker.1" in ok(gitd, "logs", app, "--type", "worker", "-n", "3").stdout
    assert follow_first_line(gitd, app).startswith("worker.1 | tick")

    ok(gitd, "ps:stop", app)
    states = {c["name"]: c["state"] for c in as_json(ok(gitd, "ps", app, "--json"))["containers"]}
    assert set(states.values()) == {"exited"}, states
    assert wait_status(gitd, gitd.host(app), (404, 502, 503)) != 200
    ok(gitd, "ps:start", app)
    assert gitd.wait_for(gitd.host(app), "ps|")[0] == 200

    before = sorted(c.id for c in gitd.containers(docker_client, app))
    commit(repo, env_app("ps2", PROCFILE.replace("echo migrating $GITD_RELEASE",
                                                 "echo boom; exit 4")), "broken release task")
    failed = gitd.push(repo, app)
    assert failed.returncode != 0 and "boom" in failed.stderr
    assert "release command failed with status 4" in failed.stderr
    assert sorted(c.id for c in gitd.containers(docker_client, app)) == before
    assert page(gitd, app)[0] == "ps"
    assert as_json(ok(gitd, "releases", app, "--json"))[0]["status"] == "failed"
    ok(gitd, "apps:destroy", app, "--force")


def follow_first_line(gitd, app) -> str:
    """`logs -f` streams; the client hangs up after the first line."""
    config = gitd.ssh_config(gitd.admin_key)
    proc = subprocess.Popen(["ssh", "-F", str(config), "-T", "paas", "logs", app, "-f", "-n", "0",
                             "--type", "worker"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "logs -f printed nothing"
        return proc.stdout.readline().decode()
    finally:
        proc.kill()
        proc.wait(10)


def test_run_keys_and_grants(gitd, docker_client, tmp_path):
    app, private = unique_app("run"), unique_app("priv")
    dev_name = f"dev-{app}"
    dev = make_key(tmp_path, dev_name)
    ok(gitd, "keys:add", dev_name, input=(tmp_path / f"{dev_name}.pub").read_text())
    keys = {k["name"]: k for k in as_json(ok(gitd, "keys", "--json"))}
    assert keys[dev_name]["role"] == "deployer" and keys[dev_name]["apps"] == []
    create(gitd, app)
    ok(gitd, "apps:create", private)
    ok(gitd, "config:set", app, "GREETING=hi")
    repo = make_repo(tmp_path / app, env_app("run"))

    refused = gitd.push(repo, app, key=dev)
    assert refused.returncode != 0 and "permission denied" in refused.stderr
    fails(gitd, "apps:info", app, key=dev, match="permission denied")
    ok(gitd, "apps:grant", app, dev_name)
    push_ok(gitd, repo, app, key=dev)
    for args in (["apps:info", app], ["releases", app], ["releases:info", app, "v1"], ["ps", app],
                 ["logs", app], ["domains", app]):
        ok(gitd, *args, key=dev)
    assert [a["name"] for a in as_json(ok(gitd, "apps:list", "--json", key=dev))] == [app]
    for args in (["config", app], ["config:set", app, "A=1"], ["run", app, "--", "true"],
                 ["ps:scale", app, "web=2"], ["apps:create", unique_app()], ["keys"],
                 ["keys:remove", "admin"], ["apps:grant", private, dev_name],
                 ["releases", private], ["apps:destroy", app, "--force"]):
        fails(gitd, *args, key=dev, match="permission denied")
    assert gitd.push(repo, private, key=dev).returncode != 0
    assert ok(gitd, "config:get", app, "GREETING").stdout == "hi\n"

    ran = gitd.ssh("run", app, "--", "sh", "-c", shlex.quote('echo "out $GREETING"; echo err >&2; exit 7'),
                   input="")
    assert (ran.returncode, ran.stdout, ran.stderr) == (7, "out hi\n", "err\n")
    assert ok(gitd, "run", app, "--", "cat", input="piped\nin\n").stdout == "piped\nin\n"
    assert gitd.ssh("run", app, "tty", input="").returncode == 1  # no pty without ssh -t
    tty = gitd.ssh("run", app, "--", "tty", tty=True, input="")
    assert tty.returncode == 0 and "/dev/pts/" in tty.stdout
    sizes = run_with_terminal(gitd, app, size=(33, 111), resized=(40, 120)).split()
    assert sizes == ["33", "111", "40", "120"], sizes
    assert gitd.ssh("run", app, "--", "no-such-command", input="").returncode == 127
    assert [c for c in gitd.containers(docker_client, app) if c.labels["gitd.role"] == "oneoff"] == []

    fails(gitd, "keys:remove", "admin", match="last admin key")
    ok(gitd, "apps:revoke", app, dev_name)
    fails(gitd, "ps", app, key=dev, match="permission denied")
    ok(gitd, "keys:remove", dev_name)
    assert gitd.ssh("apps:list", key=dev).returncode == 255  # the key is gone
    for name in (app, private):
        ok(gitd, "apps:destroy", name, "--force")


def run_with_terminal(gitd, app, size: tuple, resized: tuple) -> str:
    """`ssh -t paas run APP -- ...stty size...` from a real terminal that is
    resized while the command runs."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    config = gitd.ssh_config(gitd.admin_key)
    script = shlex.quote("sleep 0.8; stty size; sleep 1.6; stty size")
    proc = subprocess.Popen(["ssh", "-F", str(config), "-t", "paas", "run", app, "--", "sh", "-c", script],
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty)
    os.close(slave)
    output, resized_at = b"", time.monotonic() + 1.6
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if resized_at and time.monotonic() > resized_at:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *resized, 0, 0))
                resized_at = None
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the client closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
    finally:
        proc.kill()
        proc.wait(10)
        os.close(master)
    return output.decode(errors="replace")


def test_help_and_bad_input(gitd):
    app = unique_app("help")
    ok(gitd, "apps:create", app)
    listing = ok(gitd, "help").stdout
    for usage in ("config:set APP KEY=VALUE", "domains:add APP HOST", "ps:scale APP",
                  "releases:rollback APP", "logs APP", "run APP", "keys:add NAME", "apps:grant APP"):
        assert usage in listing
    namespace = ok(gitd, "help", "config").stdout
    assert "config:get APP KEY" in namespace and "config:unset APP KEY" in namespace
    detail = ok(gitd, "config:set", "--help").stdout
    assert detail.startswith("usage: config:set APP KEY=VALUE") and "KEY=@-" in detail
    assert ok(gitd, "help", "logs").stdout.startswith("usage: logs APP")
    fails(gitd, "help", "nope", match="no help for 'nope'")
    for args in (["config", "nope-app"], ["domains", "nope-app"], ["ps", "nope-app"],
                 ["releases", "nope-app"], ["logs", "nope-app"], ["run", "nope-app", "ls"],
                 ["ps:scale", "nope-app", "web=1"], ["apps:grant", "nope-app", "admin"]):
        fails(gitd, *args, match="app 'nope-app' does not exist")
    fails(gitd, "releases:info", app, "latest", match="invalid release", status=2)
    fails(gitd, "ps:scale", app, "worker=1", match="an app not deployed yet (known: web)")
    fails(gitd, "logs", app, match=f"{app} has no containers")
    fails(gitd, "run", app, "--", "ls", match=f"{app} has no release yet")
    fails(gitd, "ps:restart", app, match=f"{app} has no release yet")
    fails(gitd, "releases:rollback", app, match="nothing to roll back")
    assert "routed from the first deploy" in ok(gitd, "domains:add", app, f"{app}.example.test").stdout
    assert as_json(ok(gitd, "releases", app, "--json")) == []
    fails(gitd, "keys:add", "x", input="not a key", match="not an SSH public key")
    fails(gitd, "logs", "nope-app", "-n", "lots", match="invalid int value")
    ok(gitd, "apps:destroy", app, "--force")

"""`logs -f` over the real ssh client: it follows the app across restarts,
deploys and crashes, says when a process starts and exits, and ends (its
threads and Docker streams with it) only when the client hangs up."""

import os
import re
import subprocess
import threading
import time

import pytest

from tests.e2e.harness import commit, make_repo, unique_app
from tests.e2e.helpers import app_files, ok

pytestmark = pytest.mark.e2e


class Follower:
    """`ssh paas logs APP -f ...` in the background, its lines collected."""

    def __init__(self, gitd, *args: str):
        # a config of its own: the harness rewrites its own at each ssh call
        shared = gitd.ssh_config(gitd.admin_key)
        config = shared.with_name(f"{shared.name}-follow-{id(self)}")
        config.write_text(shared.read_text())
        self.proc = subprocess.Popen(["ssh", "-F", str(config), "-T", "paas", "logs", *args, "-f"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> int:
        """The index of the first line from `after` on matching `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, line in enumerate(self.lines[after:], after):
                if re.fullmatch(pattern, line):
                    return index
            assert self.proc.poll() is None, (self.proc.returncode, self.lines,
                                              self.proc.stderr.read())
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in {self.lines}")

    def hang_up(self):
        self.proc.kill()
        self.proc.wait(10)


def _threads(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def _docker_connections(pid: int) -> int:
    """Open sockets of the process (its connections to the Docker engine among them)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def _until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def test_logs_follow_the_app_across_restarts_deploys_and_crashes(gitd, docker_client, tmp_path):
    app = unique_app("logf")
    ok(gitd, "apps:create", app)
    ok(gitd, "checks:set", app, "drain=0.3")
    repo = make_repo(tmp_path / app, app_files("v1"))
    assert gitd.push(repo, app).returncode == 0
    ok(gitd, "ps:scale", app, "worker=1")
    gitd.wait_retired(docker_client, app)
    # what gitd starts once for all (its watch of exits, its shared stream of
    # the apps' events) runs from now on: counted before the followers
    ok(gitd, "ps", app)
    first = Follower(gitd, app, "--type", "web", "-n", "1")
    try:
        first.wait_for(r"web\.1 \| v1 up web\.1")
    finally:
        first.hang_up()
    time.sleep(1)
    threads = _threads(gitd.proc.pid)

    every = Follower(gitd, app, "-n", "5")
    web = Follower(gitd, app, "--type", "web", "-n", "5")
    try:
        web.wait_for(r"web\.1 \| v1 up web\.1")
        # a crash-looping worker: its exit, its restart and its new lines; the stream goes on
        crashed = every.wait_for(r"-----> worker\.1 \(v1\) exited with status 3")
        every.wait_for(r"-----> worker\.1 \(v1\) started \(restart [0-9]+\)", after=crashed)
        every.wait_for(r"worker\.1 \| crashing worker\.1", after=crashed)
        assert _threads(gitd.proc.pid) > threads  # the sessions and their followers

        mark = len(web.lines)
        ok(gitd, "ps:restart", app)
        started = web.wait_for(r"-----> web\.1 \(v1\) started", after=mark)
        web.wait_for(r"web\.1 \| v1 up web\.1", after=started)
        web.wait_for(r"-----> web\.1 \(v1\) exited with status [0-9]+ \(replaced by v1\)",
                     after=mark)

        mark = len(web.lines)
        commit(repo, app_files("v2"), "v2")
        assert gitd.push(repo, app).returncode == 0
        started = web.wait_for(r"-----> web\.1 \(v2\) started", after=mark)
        web.wait_for(r"web\.1 \| v2 up web\.1", after=started)
        web.wait_for(r"-----> web\.1 \(v1\) exited with status [0-9]+ \(replaced by v2\)",
                     after=mark)
        every.wait_for(r"-----> worker\.1 \(v2\) started", after=crashed)
        every.wait_for(r"-----> worker\.1 \(v1\) exited with status [0-9]+ \(replaced by v2\)",
                       after=crashed)
        assert every.proc.poll() is None and web.proc.poll() is None  # still following
        assert not [line for line in web.lines if "worker" in line], web.lines  # --type web
        assert all(re.fullmatch(r"(-----> |(web|worker)\.1 \| ).*", line)
                   for line in every.lines), every.lines
    finally:
        every.hang_up()
        web.hang_up()
    gitd.wait_retired(docker_client, app)
    # the followers' threads end with the sessions (a deploy's own background
    # threads end within two minutes of it)
    assert _until(lambda: _threads(gitd.proc.pid) <= threads, timeout=150), (
        _threads(gitd.proc.pid), threads)
    threads = _threads(gitd.proc.pid)

    # and their Docker streams: a follower's streams may be idle connections
    # of the Docker client's pool; closed, they are closed for good. So with
    # one web that runs on: the ssh session, the events stream and the log
    # stream, three sockets, close at the hang-up
    quiet = Follower(gitd, app, "--type", "web", "-n", "1")
    try:
        quiet.wait_for(r"web\.1 \| v2 up web\.1")
        time.sleep(0.5)
        sockets = _docker_connections(gitd.proc.pid)
    finally:
        quiet.hang_up()
    assert _until(lambda: _docker_connections(gitd.proc.pid) <= sockets - 3), (
        _docker_connections(gitd.proc.pid), sockets)
    assert _until(lambda: _threads(gitd.proc.pid) <= threads), (_threads(gitd.proc.pid), threads)
    ok(gitd, "apps:destroy", app, "--force")

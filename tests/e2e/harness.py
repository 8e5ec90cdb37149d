"""A real gitd for tests: `gitd serve` on ephemeral ports, the real `ssh` and
`git` clients, the real Docker engine and the managed Traefik."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[2]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


@functools.cache
def installed_gitd() -> str | None:
    """GITD_TEST_BIN: an installed gitd's script to test instead of this
    checkout (CI: the wheel .ci/setup installs into a fresh venv, as users
    get it). Its interpreter must import gitd from its own install: a test
    of the source tree by another name would prove nothing."""
    script = os.environ.get("GITD_TEST_BIN")
    if not script:
        return None
    path = Path(script)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(f"GITD_TEST_BIN={script}: not an executable file (bash .ci/setup "
                           "installs one in .ci/venv/bin/gitd)")
    venv_python = path.resolve().parent / "python"
    shebang = path.read_bytes().split(b"\n", 1)[0]
    if venv_python.exists():  # pip writes a /bin/sh trampoline for a long interpreter path
        interpreter = [str(venv_python)]
    elif shebang.startswith(b"#!"):
        interpreter = shebang[2:].decode().split()
    else:
        raise RuntimeError(f"GITD_TEST_BIN={script}: not a console script (no #! line)")
    where = subprocess.run([*interpreter, "-c", "import gitd, buildpacks; "
                            "print(gitd.__file__); print(buildpacks.__file__)"],
                           cwd="/", capture_output=True, text=True, timeout=60)
    files = where.stdout.split()
    if where.returncode != 0 or any(Path(f).resolve().parents[1] == REPO for f in files):
        raise RuntimeError(f"GITD_TEST_BIN={script} does not run an installed gitd: "
                           f"{where.stdout}{where.stderr}")
    return str(path.absolute())


def gitd_command(*args: str) -> list[str]:
    """argv running `gitd ARGS...`: the installed gitd (GITD_TEST_BIN) or
    this checkout's."""
    installed = installed_gitd()
    return [installed, *args] if installed else [sys.executable, "-m", "gitd", *args]


def source_at(commit_id: str, into: Path) -> Path:
    """This repository's source tree at `commit_id`, unpacked into `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit_id],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def gitd_command_of(source: Path):
    """A gitd_command for the gitd in the source tree `source` (an earlier
    version): the flags it lacks are left out."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    known = subprocess.run([sys.executable, "-P", "-m", "gitd", "serve", "--help"], env=env,
                           capture_output=True, text=True, check=True).stdout

    def command(*args: str) -> list[str]:
        argv = list(args)
        if "--api-port" in argv and "--api-port" not in known:
            at = argv.index("--api-port")
            del argv[at:at + 2]
        return ["env", f"PYTHONPATH={source}", sys.executable, "-P", "-m", "gitd", *argv]
    return command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_key(directory: Path, name: str) -> Path:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
                   check=True)
    return path


def unique_app(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Gitd:
    root: Path
    data_dir: Path
    admin_key: Path
    ssh_port: int
    http_port: int
    api_port: int
    https_port: int = 0  # set before start() and pass --https-port to serve HTTPS
    # gitd's own HTTP API (api_port; `api_port` above is Traefik's API)
    gitd_api_port: int = field(default_factory=lambda: free_port())
    proc: subprocess.Popen | None = None
    log_lines: list = field(default_factory=list)
    instance: str = ""

    # running

    def start(self, timeout: float = 30.0, extra_env: dict | None = None,
              extra_args: tuple = ()) -> None:
        env = dict(os.environ, **(extra_env or {}))
        self.log_path = self.root / f"serve-{int(time.time()*1000)}.log"
        logfile = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            gitd_command("serve", "--data-dir", str(self.data_dir),
                         "--ssh-host", "127.0.0.1", "--ssh-port", str(self.ssh_port),
                         "--http-host", "127.0.0.1", "--http-port", str(self.http_port),
                         "--traefik-api-port", str(self.api_port), "--log-format", "json",
                         "--api-port", str(self.gitd_api_port),
                         *extra_args),
            stdout=logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logfile.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text().splitlines():
                if '"listening"' in line:
                    self.instance = json.loads(line)["instance"]
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"gitd serve exited:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"gitd serve did not start:\n{self.log_path.read_text()}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL gitd alone (its managed Traefik is in the same group: end it too)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text() if getattr(self, "log_path", None) else ""

    # clients

    def ssh_config(self, key: Path) -> Path:
        """Written whole by a rename when it changes: parallel clients (a
        push in a thread) read it while another call writes it."""
        path = self.root / f"ssh_config_{key.name}"
        text = ("Host paas\n  HostName 127.0.0.1\n"
                f"  Port {self.ssh_port}\n  User git\n  IdentityFile {key}\n"
                "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
                "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
                "  PreferredAuthentications publickey\n")
        if not path.exists() or path.read_text() != text:
            temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
            temporary.write_text(text)
            os.replace(temporary, path)
        return path

    def ssh(self, *args: str, key: Path | None = None, input: str | bytes | None = None,
            tty: bool = False, timeout: float = 180) -> subprocess.CompletedProcess:
        config = self.ssh_config(key or self.admin_key)
        argv = ["ssh", "-F", str(config)] + (["-tt"] if tty else ["-T"]) + ["paas", *args]
        if isinstance(input, str):
            input = input.encode()
        result = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
        return _decoded(result)

    def git_env(self, key: Path | None = None) -> dict:
        config = self.ssh_config(key or self.admin_key)
        return dict(os.environ, GIT_SSH_COMMAND=f"ssh -F {config}", **GIT_ENV)

    def remote(self, app: str) -> str:
        return f"ssh://git@paas/{app}"

    def push(self, repo: Path, app: str, refspec: str = "main", key: Path | None = None,
             timeout: float = 300, extra: tuple = ()) -> subprocess.CompletedProcess:
        result = subprocess.run(["git", "push", *extra, self.remote(app), refspec], cwd=repo,
                                env=self.git_env(key), capture_output=True, timeout=timeout)
        return _decoded(result)

    def push_async(self, repo: Path, app: str, refspec: str = "main") -> subprocess.Popen:
        """A `git push` left running (for tests that kill gitd under it)."""
        return subprocess.Popen(["git", "push", self.remote(app), refspec], cwd=repo,
                                env=self.git_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    # http through Traefik

    def get(self, host: str, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def host(self, app: str) -> str:
        return f"{app}.localhost"

    def wait_for(self, host: str, expected: str, timeout: float = 20.0) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        last = (0, "")
        while time.monotonic() < deadline:
            try:
                last = self.get(host)
            except OSError as exc:
                last = (0, str(exc))
            if last[0] == 200 and expected in last[1]:
                return last
            time.sleep(0.2)
        return last

    # state

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "gitd.db")

    def containers(self, client, app: str | None = None, all: bool = True) -> list:
        labels = [f"gitd.instance={self.instance}"] + ([f"gitd.app={app}"] if app else [])
        for _ in range(10):  # a container retired in the background may go between list and inspect
            try:
                return client.containers.list(all=all, filters={"label": labels})
            except docker.errors.NotFound:
                time.sleep(0.05)
        return client.containers.list(all=all, filters={"label": labels})

    def live_seq(self, app: str) -> str | None:
        with self.db() as db:
            row = db.execute("SELECT live_seq FROM apps WHERE name = ?", [app]).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def live_containers(self, client, app: str) -> list:
        """The live release's containers (older ones may still be draining)."""
        seq = self.live_seq(app)
        return [c for c in self.containers(client, app) if c.labels.get("gitd.seq") == seq]

    def wait_retired(self, client, app: str, timeout: float = 60.0) -> list:
        """A push returns at live; the old containers drain and stop in the
        background. Wait (bounded) until only the live ones are left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seq = self.live_seq(app)
            left = self.containers(client, app)
            if all(c.labels.get("gitd.seq") == seq for c in left):
                return left
            time.sleep(0.1)
        return self.containers(client, app)

    def services(self, client, app: str | None = None) -> list:
        """This gitd's swarm services (of `app`)."""
        labels = [f"gitd.instance={self.instance}"] + ([f"gitd.app={app}"] if app else [])
        return client.services.list(filters={"label": labels})

    def wait_services(self, client, app: str, timeout: float = 60.0) -> list:
        """On a swarm: wait (bounded) until only the live deploy's services are left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seq = self.live_seq(app)
            left = self.services(client, app)
            if all(s.attrs["Spec"]["Labels"].get("gitd.seq") == seq for s in left):
                return left
            time.sleep(0.1)
        return self.services(client, app)

    def cleanup(self, client) -> None:
        """Remove what this gitd made: its containers by label, its images by
        the ids its releases recorded and by label."""
        self.kill()
        if not self.instance:
            return
        label = {"label": [f"gitd.instance={self.instance}"]}
        try:  # swarm services first: the swarm would replace their containers
            services = client.services.list(filters=label)
        except docker.errors.APIError:  # not a swarm manager
            services = []
        for service in services:
            try:
                service.remove()
            except docker.errors.NotFound:
                pass
        for _ in range(300 if services else 0):  # their tasks' containers go on their own
            if not self.containers(client):
                break
            time.sleep(0.1)
        for c in self.containers(client):
            try:
                c.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:  # the swarm removing it meanwhile
                if "already in progress" not in str(exc):
                    raise
        image_ids = set()
        try:
            with self.db() as conn:
                rows = conn.execute("SELECT image, image_id FROM releases").fetchall()
                apps = [r[0] for r in conn.execute("SELECT DISTINCT app FROM releases")]
            for app in apps:  # every tag of this gitd's apps (app.json services' too)
                for image in client.images.list(name=f"gitd/{app}"):
                    for tag in image.tags:
                        if tag.startswith(f"gitd/{app}:"):
                            try:  # untag: an image another test's app shares stays
                                client.images.remove(tag)
                            except docker.errors.APIError:
                                pass
            for tag, image_id in rows:
                if tag:
                    try:
                        client.images.remove(tag)
                    except docker.errors.APIError:
                        pass
                if image_id:
                    image_ids.add(image_id)
        except sqlite3.Error:
            pass
        for image in client.images.list(filters={"label": [f"gitd.instance={self.instance}"]}):
            image_ids.add(image.id)
        for image_id in image_ids:
            try:
                client.images.remove(image_id, force=True)
            except docker.errors.APIError:
                pass
        for network in client.networks.list(filters=label):
            try:
                network.remove()
            except docker.errors.APIError:
                pass
        for volume in client.volumes.list(filters=label):
            try:
                volume.remove(force=True)
            except docker.errors.APIError:
                pass


def start_external_traefik(gitd: Gitd) -> subprocess.Popen:
    """Traefik in a process of its own, as systemd's traefik.service runs it,
    with the static config gitd renders for external mode."""
    from gitd.core.config import Settings
    from gitd.core.store import Store
    from gitd.traefik import ping, render_static_config

    settings = Settings(http_host="127.0.0.1", http_port=gitd.http_port,
                        traefik_api_port=gitd.api_port, instance=Store(gitd.data_dir / "gitd.db").instance)
    config = gitd.root / "traefik-external.yml"
    config.write_text(render_static_config(settings, mode="external"))
    log = open(gitd.root / "traefik-external.log", "wb")
    proc = subprocess.Popen([shutil.which("traefik"), f"--configFile={config}"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ping(f"http://127.0.0.1:{gitd.api_port}"):
        time.sleep(0.1)
    return proc


def new_gitd(root: Path) -> Gitd:
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    admin = make_key(root, "admin")
    subprocess.run(gitd_command("init", "--data-dir", str(data), "--admin-key", f"{admin}.pub"),
                   check=True, capture_output=True)
    return Gitd(root=root, data_dir=data, admin_key=admin, ssh_port=free_port(),
                http_port=free_port(), api_port=free_port())


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env=dict(os.environ, **GIT_ENV)).stdout


def make_repo(path: Path, files: dict[str, str], message: str = "initial") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if not (path / ".git").exists():
        git(path, "init", "-q", "-b", "main")
    commit(path, files, message)
    return path


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    for name, content in files.items():
        target = repo / name
        if content is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def _decoded(result):
    result.stdout = result.stdout.decode("utf-8", "replace") if isinstance(result.stdout, bytes) else result.stdout
    result.stderr = result.stderr.decode("utf-8", "replace") if isinstance(result.stderr, bytes) else result.stderr
    return result


class Load:
    """Bounded HTTP load through Traefik on 127.0.0.1: `clients` threads each
    send a request, keep its outcome (and when it started), then wait `interval`."""

    def __init__(self, gitd: Gitd, host: str, clients: int = 4, interval: float = 0.02,
                 max_seconds: float = 120.0, path: str = "/"):
        self.gitd, self.host, self.path = gitd, host, path
        self.clients, self.interval, self.max_seconds = clients, interval, max_seconds
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: set[str] = set()
        self.outcomes: list[tuple[float, str | None]] = []  # (started, failure or None)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def request(self) -> tuple[int, str]:
        """One request: (status, body)."""
        return self.gitd.get(self.host, self.path, timeout=10)

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                status, body = self.request()
                failure = None if status == 200 else f"status {status}"
            except (OSError, ValueError, IndexError) as exc:  # the last two: a cut-off answer
                failure, body = f"{type(exc).__name__}: {exc}", ""
            with self._lock:
                self.outcomes.append((started, failure))
                if failure:
                    self.failures.append(failure)
                else:
                    self.ok += 1
                    self.bodies.add(body.strip())
            time.sleep(self.interval)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def failed_between(self, since: float = 0.0, until: float = float("inf")) -> list[str]:
        """The failures of requests started in [since, until] (monotonic)."""
        with self._lock:
            return [f for started, f in self.outcomes if f and since <= started <= until]

    def __enter__(self):
        for _ in range(self.clients):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(15)

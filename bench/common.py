"""Shared by the benchmarks: a real gitd, a local base image, HTTP load."""

from __future__ import annotations

import contextlib
import http.client
import shutil
import ssl
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from tests.e2e.harness import free_port, new_gitd  # noqa: E402,F401

BASE_IMAGE = "gitd-bench/busybox:latest"
# seconds between measured pushes to one app: the last push's old
# containers drain (3 s) and retire meanwhile, as between a user's pushes;
# back to back, their removal (a change of Traefik's routes) lands inside
# the next push and holds its route change for Traefik's throttle
SETTLE = 5.0


def build_base_image(client) -> str:
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy("/bin/busybox", Path(ctx) / "busybox")
        (Path(ctx) / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\n')
        image, _ = client.images.build(path=ctx, tag=BASE_IMAGE, labels={"gitd.bench": "base"}, rm=True)
    return image.id


@contextmanager
def single_node_swarm(client):
    """This engine as a one-node swarm for the benchmark (advertised on
    127.0.0.1); left again afterwards if it was not one before."""
    made = client.info().get("Swarm", {}).get("LocalNodeState") == "inactive"
    if made:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    try:
        yield
    finally:
        if made:
            client.swarm.leave(force=True)


@contextmanager
def bench_gitd(tmp: Path, config: str = "", https: bool = False, scheduler: str = "docker",
               **env):
    """A gitd for a benchmark; `config` is written to its gitd.toml."""
    client = docker.from_env()
    base_id = build_base_image(client)
    server = new_gitd(tmp / "gitd")
    if config:
        (server.data_dir / "gitd.toml").write_text(config)
    extra: tuple = ()
    if https:
        server.https_port = free_port()
        extra = ("--https-port", str(server.https_port))
    with contextlib.ExitStack() as stack:
        if scheduler == "swarm":
            stack.enter_context(single_node_swarm(client))
            extra += ("--scheduler", "swarm")
            env.setdefault("GITD_REGISTRY_PORT", str(free_port()))
        server.start(extra_env=env, extra_args=extra)
        try:
            yield server, client
        finally:
            server.stop()
            server.cleanup(client)
        try:
            client.images.remove(base_id, force=True)
        except docker.errors.APIError:
            pass


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class SNIConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 presenting `sni` (a hostname) in the handshake."""

    def __init__(self, address: str, port: int, sni: str, context: ssl.SSLContext, timeout: float):
        super().__init__(address, port, timeout=timeout, context=context)
        self.sni = sni

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.sni)


class HttpLoad:
    """Steady load through Traefik on 127.0.0.1: `keepalive` clients reuse a
    connection, `fresh` clients open one per request. Bounded in time."""

    def __init__(self, port: int, host: str, keepalive: int = 3, fresh: int = 3,
                 rate_per_client: float = 15.0, max_seconds: float = 600.0,
                 tls: ssl.SSLContext | None = None):
        self.port, self.host, self.tls = port, host, tls
        self.keepalive, self.fresh = keepalive, fresh
        self.interval = 1.0 / rate_per_client
        self.max_seconds = max_seconds
        self.sent = 0
        self.failed: list[str] = []
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._threads: list[threading.Thread] = []

    def _record(self, started: float, error: str | None) -> None:
        with self._lock:
            self.sent += 1
            if error:
                self.failed.append(error)
            else:
                self.latencies.append(time.monotonic() - started)

    def _client(self, reuse: bool) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not self._running.wait(0.2):
                continue
            started = time.monotonic()
            error = None
            try:
                if conn is None:
                    conn = self._connection()
                conn.request("GET", "/", headers={"Host": self.host})
                resp = conn.getresponse()
                resp.read()
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
                if not reuse or resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                error = type(exc).__name__
                if conn:
                    conn.close()
                conn = None
            self._record(started, error)
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        return SNIConnection("127.0.0.1", self.port, self.host, self.tls, timeout=10)

    def pause(self) -> None:
        """No new requests until resume() (the clients stay)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def __enter__(self):
        self.started = time.monotonic()
        for reuse, count in ((True, self.keepalive), (False, self.fresh)):
            for _ in range(count):
                thread = threading.Thread(target=self._client, args=(reuse,), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        self.elapsed = time.monotonic() - self.started

    def summary(self) -> dict:
        return {
            "sent": self.sent,
            "failed": len(self.failed),
            "rate": self.sent / self.elapsed if self.elapsed else 0,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "errors": sorted(set(self.failed))[:5],
        }


def wait_answer(port: int, host: str, expected: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/", headers={"Host": host})
            body = conn.getresponse().read().decode()
            conn.close()
            if expected in body:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{host} did not answer {expected!r}")

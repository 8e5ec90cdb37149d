"""The HTTP API under load (issue #23): with --apps apps (50), --rate
requests/s (200) of `GET /api/v1/apps` and as many of one deployment's
status (`GET /api/v1/deployments/{id}`) for --seconds (30), each from its own
paced keep-alive clients:

- p50/p99 latency of each, beside the same list over `ssh paas apps:list
  --json` (one ssh run each, handshake included: what a script pays);
- errors (any answer but 200, or none);
- `ssh paas apps:list` while the load runs (median and max of 10);
- gitd's RSS idle with the API on (after the apps are made), and after the load.

    python bench/api.py [--apps 50] [--rate 200] [--seconds 30]

Goals: 0 errors; apps:list under load < 100 ms; idle RSS < 80 MB. The apps
are created, not deployed (one is pushed, for its deployment); everything
made is removed by label at the end, also when it fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import bench_gitd, percentile  # noqa: I001 - first: puts the repo on sys.path
from scale import app_files, rss_mb

from tests.e2e.harness import make_repo, unique_app

GOALS = {"errors": 0, "apps:list ms": 100.0, "idle rss mb": 80.0}
CLIENTS = 4  # per route


class PacedLoad:
    """`rate` GETs a second of `path`, spread over CLIENTS keep-alive clients."""

    def __init__(self, port: int, path: str, token: str, rate: float, seconds: float):
        self.port, self.path, self.token = port, path, token
        self.interval, self.seconds = CLIENTS / rate, seconds
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(CLIENTS)]

    def client(self, index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        started = time.monotonic()
        due = started + index * self.interval / CLIENTS
        while due < started + self.seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            error = None
            try:
                conn.request("GET", self.path, headers={"Authorization": f"Bearer {self.token}"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    error = f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                error = repr(exc)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self.lock:
                if error:
                    self.errors.append(error)
                else:
                    self.latencies.append((time.monotonic() - sent) * 1000)
            due += self.interval
        conn.close()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def ssh_ms(gitd, *args: str, runs: int) -> list[float]:
    argv = ["ssh", "-F", str(gitd.ssh_config(gitd.admin_key)), "-T", "paas", *args]
    subprocess.run(argv, capture_output=True)  # warm
    times = []
    for _ in range(runs):
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True)
        times.append((time.monotonic() - started) * 1000)
        if result.returncode != 0:
            raise SystemExit(result.stderr)
    return times


def prepare(gitd, tmp: Path, apps: int) -> int:
    """`apps` apps, the first pushed once; its deployment's id."""
    names = [unique_app("api") for _ in range(apps)]
    for name in names:
        created = gitd.ssh("apps:create", name)
        if created.returncode != 0:
            raise SystemExit(created.stderr)
    pushed = gitd.push(make_repo(tmp / "app", app_files("bench")), names[0])
    if pushed.returncode != 0:
        raise SystemExit(pushed.stderr)
    deployments = json.loads(gitd.ssh("deployments", names[0], "--json").stdout)
    return deployments[0]["id"]


def run(apps: int, rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, bench_gitd(Path(tmp)) as (gitd, _client):
        deployment = prepare(gitd, Path(tmp), apps)
        token = gitd.ssh("tokens:create", "--name", "bench").stdout.strip().splitlines()[-1]
        time.sleep(2)
        idle_rss = rss_mb(gitd.proc.pid)
        ssh_json = ssh_ms(gitd, "apps:list", "--json", runs=20)
        loads = {path: PacedLoad(gitd.gitd_api_port, path, token, rate, seconds)
                 for path in ("/api/v1/apps", f"/api/v1/deployments/{deployment}")}
        for load in loads.values():
            load.start()
        time.sleep(min(5.0, seconds / 3))
        under_load = ssh_ms(gitd, "apps:list", runs=10)
        for load in loads.values():
            load.join()
        report(apps, rate, seconds, loads, ssh_json, under_load, idle_rss,
               rss_mb(gitd.proc.pid))


def report(apps, rate, seconds, loads, ssh_json, under_load, idle_rss, loaded_rss) -> None:
    print(f"gitd API, {apps} apps, {rate:.0f} req/s per route for {seconds:.0f} s "
          f"({CLIENTS} keep-alive clients each)")
    print(f"{'route':34} | {'requests':>8} | {'errors':>6} | {'p50 ms':>7} | {'p99 ms':>7}")
    errors = 0
    for path, load in loads.items():
        errors += len(load.errors)
        print(f"{'GET ' + path:34} | {len(load.latencies) + len(load.errors):8d} | "
              f"{len(load.errors):6d} | {percentile(load.latencies, 50):7.1f} | "
              f"{percentile(load.latencies, 99):7.1f}")
    print(f"{'ssh paas apps:list --json (idle)':34} | {len(ssh_json):8d} | {0:6d} | "
          f"{percentile(ssh_json, 50):7.1f} | {percentile(ssh_json, 99):7.1f}")
    print(f"ssh paas apps:list under load: median {statistics.median(under_load):.0f} ms, "
          f"max {max(under_load):.0f} ms (goal < {GOALS['apps:list ms']:.0f} ms)")
    print(f"gitd RSS: idle {idle_rss:.1f} MB (goal < {GOALS['idle rss mb']:.0f} MB), "
          f"after the load {loaded_rss:.1f} MB")
    first = [e for load in loads.values() for e in load.errors][:5]
    print(f"errors: {errors} (goal {GOALS['errors']})" + (f", first: {first}" if first else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    run(args.apps, args.rate, args.seconds)


if __name__ == "__main__":
    main()

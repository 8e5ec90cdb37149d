"""Many apps on one box (issue #21): what one more app costs, at 1, 30, 100
and 300 busybox-sized apps, each deployed, every figure beside its value at
1 app in the same run:

- push: `git push` of a one-line change to one app until it returns and the
  new version answers (median of --rounds, SETTLE seconds apart), and the seconds the push itself
  reports for Traefik to route the new containers (its config reload);
- by hand, at the same count: `docker build` + `docker run` of such a change
  until it answers (bench/push.py's baseline): what the engine itself takes
  with that many apps' networks, containers and rules beside it;
- `ssh paas apps:list` round trip (median of 10, handshake included);
- gitd's RSS, and its growth per app since 1 app;
- Traefik's RSS, and its API's answer time for every router (`/api/http/routers`);
- a restart of gitd (SIGTERM, start) until every app answers through Traefik.

    python bench/scale.py [--apps 300] [--marks 1,30,100,300] [--parallel 4] [--rounds 3]

Goals: push at 300 apps <= 1.2x at 1 app; apps:list < 100 ms; every app
served within 10 s of a restart; RSS growth < 0.5 MB per app. 300 apps take
a while and a few GB of memory (a container shim each): `--apps 100` for a
smaller run. Everything it made is removed by label at the end, also when
it fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import BASE_IMAGE, SETTLE, bench_gitd, wait_answer  # noqa: I001 - first: puts the repo on sys.path
from push import by_hand

from tests.e2e.harness import commit, make_repo, unique_app

GOALS = {"push ratio": 1.2, "apps:list ms": 100.0, "restart s": 10.0, "rss mb per app": 0.5}
ROUTED = re.compile(r"Traefik routes .* to the new containers \(([0-9.]+)s\)")


def app_files(version: str) -> dict:
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}\nRUN mkdir -p /www\nCOPY index.html /www/index.html\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n'),
        "index.html": f"{version}\n"}


class Fleet:
    """The apps of the run: the measured one first, then the crowd."""

    def __init__(self, gitd, tmp: Path, parallel: int):
        self.gitd, self.tmp, self.parallel = gitd, tmp, parallel
        self.env = gitd.git_env()  # written once: safe for parallel pushes
        self.apps: list[str] = []
        self.pushes = 0

    def push(self, repo: Path, app: str) -> subprocess.CompletedProcess:
        pushed = subprocess.run(["git", "push", self.gitd.remote(app), "main"], cwd=repo,
                                env=self.env, capture_output=True, text=True, timeout=600)
        if pushed.returncode != 0:
            raise SystemExit(f"push of {app} failed:\n{pushed.stderr}")
        return pushed

    def grow_to(self, count: int) -> None:
        new = [unique_app("sc") for _ in range(count - len(self.apps))]
        for app in new:
            created = self.gitd.ssh("apps:create", app)
            if created.returncode != 0:
                raise SystemExit(created.stderr)

        def deploy(app: str) -> None:
            self.push(make_repo(self.tmp / app, app_files(f"page of {app}")), app)
        with ThreadPoolExecutor(self.parallel) as pool:
            list(pool.map(deploy, new))
        self.apps += new

    def timed_pushes(self, rounds: int) -> tuple[list[float], list[float]]:
        """(seconds to return and answer, Traefik's reported routing seconds)
        of `rounds` pushes to the measured app."""
        app = self.apps[0]
        repo = self.tmp / app
        took, routed = [], []
        for _ in range(rounds):
            time.sleep(SETTLE)
            self.pushes += 1
            version = f"measured v{self.pushes}"
            commit(repo, app_files(version), version)
            started = time.monotonic()
            pushed = self.push(repo, app)
            wait_answer(self.gitd.http_port, self.gitd.host(app), version)
            took.append(time.monotonic() - started)
            match = ROUTED.search(pushed.stderr)
            routed.append(float(match.group(1)) if match else float("nan"))
        return took, routed

    def all_answer(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout

        def answers(app: str) -> bool:
            while time.monotonic() < deadline:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.gitd.http_port, timeout=2)
                    conn.request("GET", "/", headers={"Host": self.gitd.host(app)})
                    if conn.getresponse().status == 200:
                        return True
                except OSError:
                    pass
                finally:
                    conn.close()
                time.sleep(0.05)
            return False
        with ThreadPoolExecutor(16) as pool:
            return all(pool.map(answers, self.apps))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def traefik_pid(gitd_pid: int) -> int | None:
    """The managed Traefik: a child of gitd's process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, fields = text.split("(", 1)[1].rsplit(")", 1)[0], text.rsplit(")", 1)[1].split()
        if int(fields[1]) == gitd_pid and name == "traefik":
            return int(stat.parent.name)
    return None


def routers_api_ms(gitd) -> tuple[float, int]:
    """(ms, routers) for Traefik's whole router list, as the API serves it."""
    url = f"http://127.0.0.1:{gitd.api_port}/api/http/routers?per_page=10000"
    times, count = [], 0
    for _ in range(5):
        started = time.monotonic()
        with urllib.request.urlopen(url, timeout=30) as resp:
            count = len(json.load(resp))
        times.append((time.monotonic() - started) * 1000)
    return statistics.median(times), count


def apps_list_ms(gitd) -> float:
    argv = ["ssh", "-F", str(gitd.ssh_config(gitd.admin_key)), "-T", "paas", "apps:list"]
    subprocess.run(argv, capture_output=True)  # warm
    times = []
    for _ in range(10):
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True)
        times.append((time.monotonic() - started) * 1000)
        if result.returncode != 0:
            raise SystemExit(result.stderr)
    return statistics.median(times)


def restart_seconds(gitd, fleet: Fleet) -> float:
    """SIGTERM, start again, until every app answers through Traefik."""
    gitd.stop()
    started = time.monotonic()
    gitd.start(timeout=120)
    if not fleet.all_answer(timeout=120):
        raise SystemExit("not every app answered within 120 s of a restart")
    return time.monotonic() - started


def measure(gitd, client, fleet: Fleet, rounds: int) -> dict:
    took, routed = fleet.timed_pushes(rounds)
    hand = by_hand(client, fleet.tmp / f"hand-{len(fleet.apps)}", rounds)
    figures = {"apps": len(fleet.apps), "push s": statistics.median(took),
               "by hand s": statistics.median(hand),
               "traefik routes s": statistics.median(routed),
               "apps:list ms": apps_list_ms(gitd), "gitd rss mb": rss_mb(gitd.proc.pid)}
    pid = traefik_pid(gitd.proc.pid)
    figures["traefik rss mb"] = rss_mb(pid) if pid else float("nan")
    figures["routers api ms"], figures["routers"] = routers_api_ms(gitd)
    figures["restart s"] = restart_seconds(gitd, fleet)
    return figures


def report(rows: list[dict]) -> None:
    base = rows[0]
    print(f"\neach figure (ratio to 1 app); goals at the most apps: push <= "
          f"{GOALS['push ratio']}x, apps:list < {GOALS['apps:list ms']:.0f} ms, restart < "
          f"{GOALS['restart s']:.0f} s, gitd RSS < {GOALS['rss mb per app']} MB per app\n")
    print(f"| {'apps':>4} | {'push s':>12} | {'by hand s':>12} | {'traefik routes s':>16} | "
          f"{'apps:list ms':>13} | "
          f"{'restart s':>9} | {'gitd RSS MB':>11} | {'MB/app':>6} | {'traefik RSS MB':>14} | "
          f"{'routers API ms':>14} |")
    print("|" + "|".join("-" * (w + 2) for w in (4, 12, 12, 16, 13, 9, 11, 6, 14, 14)) + "|")
    for row in rows:
        per_app = ((row["gitd rss mb"] - base["gitd rss mb"]) / (row["apps"] - base["apps"])
                   if row["apps"] > base["apps"] else 0.0)
        print(f"| {row['apps']:4} | {row['push s']:5.2f} ({row['push s'] / base['push s']:4.2f}x) | "
              f"{row['by hand s']:5.2f} ({row['by hand s'] / base['by hand s']:4.2f}x) | "
              f"{row['traefik routes s']:16.2f} | "
              f"{row['apps:list ms']:4.0f} ({row['apps:list ms'] / base['apps:list ms']:4.2f}x) | "
              f"{row['restart s']:9.1f} | {row['gitd rss mb']:11.1f} | {per_app:6.2f} | "
              f"{row['traefik rss mb']:14.1f} | {row['routers api ms']:6.1f} ({row['routers']:4}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=300, help="at most this many apps (1-300)")
    parser.add_argument("--marks", default="1,30,100,300",
                        help="app counts to measure at (those up to --apps)")
    parser.add_argument("--parallel", type=int, default=4, help="pushes at once while growing")
    parser.add_argument("--rounds", type=int, default=3, help="measured pushes per mark")
    args = parser.parse_args()
    most = max(1, min(args.apps, 300))
    marks = sorted({m for m in (int(x) for x in args.marks.split(",")) if 1 <= m <= most} | {1})
    rounds = max(1, min(args.rounds, 10))
    parallel = max(1, min(args.parallel, 8))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, bench_gitd(Path(tmp)) as (gitd, client):
        fleet = Fleet(gitd, Path(tmp), parallel)
        for mark in marks:
            started = time.monotonic()
            fleet.grow_to(mark)
            print(f"{mark} apps deployed ({time.monotonic() - started:.0f} s); measuring",
                  flush=True)
            rows.append(measure(gitd, client, fleet, rounds))
            print(json.dumps(rows[-1]), flush=True)
    report(rows)


if __name__ == "__main__":
    main()

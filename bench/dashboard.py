"""The dashboard's apps page: time to first byte with 50 apps (goal under
100 ms on this machine) and its weight, beside baselines from the same run
and the same gitd: the API's app list (GET /api/v1/apps, no per-app detail)
and the apps page while only one app exists.

    python bench/dashboard.py [--apps 50] [--deployed 3] [--runs 40]

It starts its own gitd (managed Traefik, a local base image), creates the
apps (the first `--deployed` of them pushed, so they have containers),
logs in with a token over HTTP, and measures from the request sent to the
status line read (the server's whole answer is rendered before its first
byte), sequentially, after two warm-up requests. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

from common import bench_gitd, percentile  # noqa: I001 - first: puts the repo on sys.path
from scale import app_files

from tests.e2e.harness import make_repo, unique_app


def ttfb_ms(port: int, path: str, headers: dict, runs: int) -> tuple[list[float], int]:
    """Times to first byte of `runs` GETs (after 2 warm-ups), and the body's size."""
    times, size = [], 0
    for i in range(runs + 2):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        elapsed = (time.perf_counter() - started) * 1000
        body = response.read()
        conn.close()
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:200]!r}")
        if i >= 2:
            times.append(elapsed)
        size = len(body)
    return times, size


def log_in(port: int, token: str) -> str:
    """The session cookie for `token`, as a browser gets it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/dashboard/login")
    form = conn.getresponse().read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)[1]
    body = urllib.parse.urlencode({"csrf": csrf, "token": token})
    conn.request("POST", "/dashboard/login", body=body,
                 headers={"Content-Type": "application/x-www-form-urlencoded",
                          "Cookie": f"gitd_login={csrf}"})
    answer = conn.getresponse()
    answer.read()
    cookie = re.search(r"gitd_session=([^;]+)", answer.getheader("Set-Cookie") or "")
    if answer.status != 303 or not cookie:
        raise SystemExit(f"login failed: {answer.status}")
    return cookie[1]


def create_apps(gitd, tmp: Path, names: list[str], deployed: int) -> None:
    for name in names:
        created = gitd.ssh("apps:create", name)
        if created.returncode != 0:
            raise SystemExit(created.stderr)
    for i, name in enumerate(names[:deployed]):
        pushed = gitd.push(make_repo(tmp / f"app{i}", app_files(f"bench {i}")), name)
        if pushed.returncode != 0:
            raise SystemExit(pushed.stderr)


def figures(label: str, times: list[float], size: int) -> str:
    return (f"{label:<44} median {statistics.median(times):6.1f} ms  "
            f"p95 {percentile(times, 95):6.1f} ms  max {max(times):6.1f} ms  {size / 1024:6.1f} KiB")


def run(apps: int, deployed: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, bench_gitd(Path(tmp)) as (gitd, _client):
        port = gitd.gitd_api_port
        names = [unique_app("dash") for _ in range(apps)]
        create_apps(gitd, Path(tmp), names[:1], min(deployed, 1))
        token = gitd.ssh("tokens:create", "--name", "bench").stdout.strip().splitlines()[-1]
        cookie = {"Cookie": f"gitd_session={log_in(port, token)}"}
        one = ttfb_ms(port, "/dashboard/", cookie, runs)
        create_apps(gitd, Path(tmp), names[1:], max(deployed - 1, 0))
        time.sleep(2)
        many = ttfb_ms(port, "/dashboard/", cookie, runs)
        api = ttfb_ms(port, "/api/v1/apps", {"Authorization": f"Bearer {token}"}, runs)
        page = ttfb_ms(port, f"/dashboard/apps/{names[0]}", cookie, runs)
        css = ttfb_ms(port, "/dashboard/static/dashboard.css", {}, 3)[1]
        js = ttfb_ms(port, "/dashboard/static/dashboard.js", {}, 3)[1]
    print(f"dashboard, {runs} sequential GETs each, time to first byte (status line read):")
    print(figures(f"apps page, {apps} apps ({deployed} deployed)", *many))
    print(figures("baseline: apps page, 1 app (deployed)", *one))
    print(figures(f"baseline: GET /api/v1/apps, {apps} apps", *api))
    print(figures("app page (deployed app)", *page))
    print(f"goal: apps page under 100 ms with {apps} apps: "
          f"{'met' if statistics.median(many[0]) < 100 else 'NOT met'} (median)")
    print(f"page weight: apps page {many[1] / 1024:.1f} KiB HTML + {css / 1024:.1f} KiB CSS "
          f"(the script, {js / 1024:.1f} KiB, loads only on an app page with a deploy "
          "running); no images, fonts or third-party requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--deployed", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    run(args.apps, args.deployed, args.runs)


if __name__ == "__main__":
    main()

"""This checkout beside an earlier commit of gitd, in the same run: two
gitds side by side on the same engine (each with its own Traefik), pushes
to each in turn, so both see the same machine. For a change meant to leave
speed alone (a restructuring), the ratios should sit at 1 within noise.

    python bench/versions.py [--base c150c73] [--rounds 5]

Prints, per side: push to live and push return (a one-line change to a
small cached Dockerfile app), and `ssh paas apps:list` (handshake included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, bench_gitd  # noqa: I001 - first: puts the repo on sys.path
from push import push_to_live

from tests.e2e import harness


def checkout(base: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), base],
                   check=True, capture_output=True)
    return into


def command_for(source: Path):
    """harness.gitd_command for the gitd in `source` (flags it lacks left out)."""
    helped = subprocess.run([sys.executable, "-P", "-m", "gitd", "serve", "--help"],
                            env={**os.environ, "PYTHONPATH": str(source)},
                            capture_output=True, text=True).stdout

    def command(*args: str) -> list[str]:
        argv = list(args)
        if "--api-port" in argv and "--api-port" not in helped:
            at = argv.index("--api-port")
            del argv[at:at + 2]
        return ["env", f"PYTHONPATH={source}", sys.executable, "-P", "-m", "gitd", *argv]
    return command


@contextlib.contextmanager
def gitd_from(source: Path, tmp: Path):
    original = harness.gitd_command
    harness.gitd_command = command_for(source)
    try:
        with bench_gitd(tmp) as (server, client):
            harness.gitd_command = original
            yield server
    finally:
        harness.gitd_command = original


def apps_list_ms(gitd, times: int = 9) -> float:
    took = []
    for _ in range(times):
        started = time.monotonic()
        assert gitd.ssh("apps:list").returncode == 0
        took.append((time.monotonic() - started) * 1000)
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="c150c73")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        base = checkout(args.base, tmp / "base-src")
        try:
            with gitd_from(base, tmp / "a") as old, gitd_from(ROOT, tmp / "b") as new:
                sides = {"base": old, "this": new}
                live = {name: [] for name in sides}
                returned = {name: [] for name in sides}
                listed = {name: [] for name in sides}
                for _ in range(args.rounds):
                    for name, gitd in sides.items():
                        one_live, one_returned = push_to_live(gitd, tmp / name, 1)
                        live[name] += one_live
                        returned[name] += one_returned
                        listed[name].append(apps_list_ms(gitd, 3))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           capture_output=True)
    print(f"base {args.base} beside this checkout, {args.rounds} rounds, alternating; medians")
    print("| figure | base | this | this / base |")
    print("|---|---|---|---|")
    for label, figures, unit in (("push to live", live, "s"), ("push return", returned, "s"),
                                 ("ssh apps:list", listed, "ms")):
        a, b = statistics.median(figures["base"]), statistics.median(figures["this"])
        print(f"| {label} | {a:.2f} {unit} | {b:.2f} {unit} | {b / a:.2f} |")


if __name__ == "__main__":
    main()

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
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, bench_gitd  # noqa: I001 - first: puts the repo on sys.path
from push import push_to_live

from tests.e2e import harness


@contextlib.contextmanager
def gitd_from(source: Path, tmp: Path):
    original = harness.gitd_command
    harness.gitd_command = harness.gitd_command_of(source)
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
        base = harness.source_at(args.base, tmp / "base-src")
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
    print(f"base {args.base} beside this checkout, {args.rounds} rounds, alternating; medians")
    print("| figure | base | this | this / base |")
    print("|---|---|---|---|")
    for label, figures, unit in (("push to live", live, "s"), ("push return", returned, "s"),
                                 ("ssh apps:list", listed, "ms")):
        a, b = statistics.median(figures["base"]), statistics.median(figures["this"])
        print(f"| {label} | {a:.2f} {unit} | {b:.2f} {unit} | {b / a:.2f} |")


if __name__ == "__main__":
    main()

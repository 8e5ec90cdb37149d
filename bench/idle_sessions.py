"""`help` latency with 50 idle git sessions open, beside the same with none
open, against one real gitd in the same run.

Each idle session is a real `ssh ... git-upload-pack APP` that reads the ref
advertisement and then never sends a want: what a stalled or hostile client
does. Before each session got a thread of its own, a dozen of these froze
every command for everyone.

    python bench/idle_sessions.py [--idle 50] [--samples 20] [--source DIR]

--source runs the gitd of another checkout (e.g. one before this change) to
compare; a `help` that does not answer within --bound seconds is counted as
taking the bound, and said so.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import percentile  # noqa: I001

from tests.e2e.harness import make_key, new_gitd, unique_app


def help_latencies(gitd, samples: int, bound: float) -> tuple[list[float], int]:
    """(latencies, how many did not answer within `bound` seconds)."""
    times, stuck = [], 0
    for _ in range(samples):
        started = time.monotonic()
        try:
            result = gitd.ssh("help", timeout=bound)
            assert result.returncode == 0, result.stderr
        except subprocess.TimeoutExpired:
            stuck += 1
        times.append(time.monotonic() - started)
    return times, stuck


def open_idle(config: Path, app: str, count: int) -> list[subprocess.Popen]:
    procs = []
    for _ in range(count):
        procs.append(subprocess.Popen(
            ["ssh", "-F", str(config), "-T", "paas", f"git-upload-pack '{app}'"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    # a session is open once its refs are advertised; a starved server never
    # gets to some of them, so wait a bounded time and count
    waiting = {proc.stdout.fileno(): proc for proc in procs}
    deadline = time.monotonic() + 20
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(list(waiting), [], [], 0.5)
        for fd in ready:
            waiting.pop(fd)
    print(f"{len(procs) - len(waiting)} of {count} idle sessions open "
          f"({len(waiting)} still waiting for the server after 20 s)")
    return procs


def summary(times: list[float]) -> str:
    return (f"median {statistics.median(times) * 1000:7.1f} ms  "
            f"p95 {percentile(times, 95) * 1000:7.1f} ms  max {max(times) * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=50)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--bound", type=float, default=30.0)
    parser.add_argument("--source", help="checkout whose gitd to run (default: this one)")
    args = parser.parse_args()
    os.chdir(args.source or Path(__file__).resolve().parents[1])  # `python -m gitd` runs from here
    with tempfile.TemporaryDirectory() as tmp:
        gitd = new_gitd(Path(tmp) / "gitd")
        # the idle sessions come from a key of their own: the per-key caps
        # are raised so that all of them are let in (the point is starvation)
        gitd.start(extra_env={"GITD_MAX_SESSIONS_PER_KEY": str(args.idle + 10),
                              "GITD_MAX_CONNECTIONS_PER_KEY": str(args.idle + 10),
                              "GITD_MAX_SESSIONS": str(args.idle + 20),
                              "GITD_IDLE_TIMEOUT": "600"})
        procs = []
        try:
            app = unique_app("idle")
            assert gitd.ssh("apps:create", app).returncode == 0
            idler = make_key(Path(tmp), "idler")
            added = gitd.ssh("keys:add", "idler", "--admin", input=(Path(tmp) / "idler.pub").read_text())
            assert added.returncode == 0, added.stderr
            config = gitd.ssh_config(idler)
            gitd.ssh("help")  # warm up
            baseline, _ = help_latencies(gitd, args.samples, args.bound)
            procs = open_idle(config, app, args.idle)
            loaded, stuck = help_latencies(gitd, args.samples, args.bound)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(10)
            gitd.stop(timeout=10)
    ratio = statistics.median(loaded) / statistics.median(baseline)
    print(f"help, no idle sessions:        {summary(baseline)}")
    print(f"help, {args.idle} idle git sessions: {summary(loaded)}")
    print(f"ratio (median, idle/none):     {ratio:.2f}x")
    if stuck:
        print(f"{stuck} of {args.samples} `help` calls did not answer within {args.bound:g}s "
              "(counted as the bound)")


if __name__ == "__main__":
    main()

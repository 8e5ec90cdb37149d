"""Backup and restore of a ~1 GB PostgreSQL database through gitd
(`services:backup` streamed over SSH, `services:restore` into a fresh
database then swapped in) beside pg_dump / pg_restore run by hand with
`docker exec` on the same service container, in the same run.

    python bench/services.py [--gb 1.0] [--rounds 2]

Uses the local gitd-ci/postgres image (bash .ci/images/build). Loads the
machine for a few minutes; cleans up after itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import bench_gitd  # noqa: I001

from tests.e2e.harness import unique_app

IMAGE = "gitd-ci/postgres:latest"
ROW_BYTES = 240  # on disk (heap and primary key) per generated row, measured


def psql(container: str, sql: str, db: str) -> str:
    return subprocess.run(["docker", "exec", container, "psql", "-U", "postgres", "-d", db,
                           "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def timed(argv: list[str], stdin=None, stdout=None) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[:6]} failed: {result.stderr.decode()[-800:]}")
    return took


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    rows = int(args.gb * 1024**3 / ROW_BYTES)
    with tempfile.TemporaryDirectory(prefix="gitd-bench-svc-") as tmp, \
            bench_gitd(Path(tmp), GITD_SERVICE_IMAGES=f"postgres={IMAGE}") as (gitd, client):
        ssh = ["ssh", "-F", str(gitd.ssh_config(gitd.admin_key)), "-T", "paas"]
        name = unique_app("bench")
        db = name.replace("-", "_")
        assert gitd.ssh("services:create", "postgres", name).returncode == 0
        container = f"gitd-{gitd.instance}-svc-{name}"
        print(f"generating {rows:,} rows (~{args.gb:g} GB) in {name} ...", flush=True)
        started = time.monotonic()
        psql(container, "CREATE TABLE big (id bigint PRIMARY KEY, a text, b text, n float8); "
                        f"INSERT INTO big SELECT g, md5(g::text), repeat(md5((g * 7)::text), 4), "
                        f"random() FROM generate_series(1, {rows}) g", db)
        size = int(psql(container, f"SELECT pg_database_size('{db}')", db))
        print(f"  database size {size / 1024**3:.2f} GB, made in {time.monotonic() - started:.0f}s")

        gitd_dump, hand_dump = Path(tmp) / "gitd.dump", Path(tmp) / "hand.dump"
        by_hand = ["docker", "exec", container, "pg_dump", "-U", "postgres", "-Fc",
                   "--no-owner", "--no-privileges", db]
        restore_by_hand = ["docker", "exec", "-i", container, "pg_restore", "-U", "postgres",
                           "-d", "by_hand", "--no-owner", "--no-privileges", "--exit-on-error"]
        # the machine is shared: each figure is the best of `rounds`, in alternating order
        times: dict[str, list[float]] = {"gb": [], "hb": [], "gr": [], "hr": []}
        for n in range(args.rounds):
            order = ("g", "h") if n % 2 == 0 else ("h", "g")
            for who in order:
                if who == "g":
                    with open(gitd_dump, "wb") as out:
                        times["gb"].append(timed(ssh + ["services:backup", name], stdout=out))
                else:
                    with open(hand_dump, "wb") as out:
                        times["hb"].append(timed(by_hand, stdout=out))
            for who in order:
                if who == "g":
                    with open(gitd_dump, "rb") as src:
                        times["gr"].append(timed(ssh + ["services:restore", name], stdin=src))
                else:
                    psql(container, "CREATE DATABASE by_hand", "postgres")
                    with open(hand_dump, "rb") as src:
                        times["hr"].append(timed(restore_by_hand, stdin=src))
                    psql(container, "DROP DATABASE by_hand", "postgres")
        gitd_backup, hand_backup = min(times["gb"]), min(times["hb"])
        gitd_restore, hand_restore = min(times["gr"]), min(times["hr"])
        count = int(psql(container, "SELECT count(*) FROM big", db))
        assert count == rows, (count, rows)

        print(f"\ndump size: gitd {os.path.getsize(gitd_dump) / 1024**2:.0f} MB, "
              f"by hand {os.path.getsize(hand_dump) / 1024**2:.0f} MB")
        print(f"{'':28}{'gitd':>10}{'by hand':>10}{'ratio':>8}")
        for label, g, h in (("backup (pg_dump -Fc)", gitd_backup, hand_backup),
                            ("restore (pg_restore)", gitd_restore, hand_restore)):
            print(f"{label:28}{g:9.1f}s{h:9.1f}s{g / h:8.2f}")
        print(f"best of {args.rounds} rounds; all: " + ", ".join(
            f"{k}={'/'.join(f'{t:.1f}' for t in v)}" for k, v in times.items()))
        print("gitd backup: streamed over SSH; gitd restore: into a fresh database, "
              "table count checked, renamed into place, old database dropped")
        gitd.ssh("services:destroy", name, "--force")


if __name__ == "__main__":
    main()

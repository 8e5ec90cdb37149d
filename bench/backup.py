"""gitd backup and gitd restore (issue #26) for --apps apps (20) and a
PostgreSQL service holding --mb MB (1024) of rows, beside what an admin
would do by hand in the same run: `tar czf` of the data dir (not a
consistent copy while gitd serves) plus `pg_dump -Fc` of the database, and
`tar xzf` plus `pg_restore`.

    python bench/backup.py [--apps 20] [--mb 1024]

Figures: backup time and archive size (taken while gitd serves); restore
time (the archive verified and the data dir written); then, with the
engine emptied of everything that gitd made, the time from `gitd serve` on
the restored dir until every app answers and the rows are back. Uses the
local gitd-ci/postgres image (bash .ci/images/build); cleans up by label.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import bench_gitd  # first: puts the repo on sys.path
from scale import app_files

from tests.e2e.harness import Gitd, free_port, gitd_command, make_repo, unique_app

IMAGE = "gitd-ci/postgres:latest"
ROW_BYTES = 240  # on disk per generated row (bench/services.py measured it)


def timed(argv: list[str], **kw) -> float:
    started = time.monotonic()
    kw.setdefault("stdout", subprocess.PIPE)
    result = subprocess.run(argv, stderr=subprocess.PIPE, check=False, **kw)
    if result.returncode != 0:
        raise SystemExit(f"{argv[:6]} failed: {result.stderr.decode()[-800:]}")
    return time.monotonic() - started


def psql(container: str, sql: str, db: str) -> str:
    return subprocess.run(["docker", "exec", container, "psql", "-U", "postgres", "-d", db,
                           "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def mb(path: Path) -> float:
    return os.path.getsize(path) / 1024**2


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--apps", type=int, default=20)
    p.add_argument("--mb", type=float, default=1024)
    args = p.parse_args()
    rows = int(args.mb * 1024**2 / ROW_BYTES)
    with tempfile.TemporaryDirectory(prefix="gitd-bench-backup-") as tmp, \
            bench_gitd(Path(tmp), GITD_SERVICE_IMAGES=f"postgres={IMAGE}") as (gitd, client):
        tmp = Path(tmp)
        apps = [unique_app("bk") for _ in range(args.apps)]
        print(f"pushing {args.apps} apps ...", flush=True)
        for app in apps:
            assert gitd.ssh("apps:create", app).returncode == 0
            repo = make_repo(tmp / "repos" / app, app_files(app))
            assert gitd.push(repo, app).returncode == 0
        db = unique_app("bkdb")
        assert gitd.ssh("services:create", "postgres", db).returncode == 0
        container, database = f"gitd-{gitd.instance}-svc-{db}", db.replace("-", "_")
        print(f"generating {rows:,} rows (~{args.mb:g} MB) ...", flush=True)
        psql(container, "CREATE TABLE big (id bigint PRIMARY KEY, a text, b text, n float8); "
                        f"INSERT INTO big SELECT g, md5(g::text), repeat(md5((g * 7)::text), 4), "
                        f"random() FROM generate_series(1, {rows}) g", database)

        archive, tarball, dump = tmp / "gitd.tar.gz", tmp / "by-hand.tar.gz", tmp / "by-hand.dump"
        backup = timed(gitd_command("backup", "--data-dir", str(gitd.data_dir), "--to", str(archive)))
        tar = timed(["tar", "czf", str(tarball), "-C", str(gitd.data_dir), "."])
        with open(dump, "wb") as out:
            pg_dump = timed(["docker", "exec", container, "pg_dump", "-U", "postgres", "-Fc",
                             "--no-owner", "--no-privileges", database], stdout=out)

        # restore: the data dir only, then the apps and the rows on an emptied engine
        untar_dir = tmp / "untarred"
        untar_dir.mkdir()
        untar = timed(["tar", "xzf", str(tarball), "-C", str(untar_dir)])
        target = tmp / "restored" / "data"
        target.parent.mkdir()
        restore = timed(gitd_command("restore", "--from", str(archive), "--data-dir", str(target)))
        psql(container, "CREATE DATABASE by_hand", "postgres")
        with open(dump, "rb") as src:
            pg_restore = timed(["docker", "exec", "-i", container, "pg_restore", "-U", "postgres",
                                "-d", "by_hand", "--no-owner", "--no-privileges",
                                "--exit-on-error"], stdin=src)
        gitd.stop()
        gitd.cleanup(client)
        restored = Gitd(root=target.parent, data_dir=target, admin_key=gitd.admin_key,
                        ssh_port=free_port(), http_port=free_port(), api_port=free_port())
        try:
            started = time.monotonic()
            restored.start(extra_env={"GITD_SERVICE_IMAGES": f"postgres={IMAGE}"}, timeout=120)
            for app in apps:
                restored.wait_for(restored.host(app), app, timeout=1800)
            back = time.monotonic() - started
            count = int(psql(container, "SELECT count(*) FROM big", database))
            assert count == rows, (count, rows)
        finally:
            restored.stop()
            restored.cleanup(client)

        print(f"\n{args.apps} apps, database of {args.mb:g} MB ({rows:,} rows)")
        print(f"{'':34}{'gitd':>10}{'by hand':>10}")
        print(f"{'backup (s)':34}{backup:10.1f}{tar + pg_dump:10.1f}   tar {tar:.1f} + pg_dump {pg_dump:.1f}")
        print(f"{'archive size (MB)':34}{mb(archive):10.1f}{mb(tarball) + mb(dump):10.1f}"
              f"   tar {mb(tarball):.1f} + dump {mb(dump):.1f}")
        print(f"{'restore, data dir (s)':34}{restore:10.1f}{untar + pg_restore:10.1f}"
              f"   untar {untar:.1f} + pg_restore {pg_restore:.1f}")
        print(f"{'serve until all apps answer (s)':34}{back:10.1f}{'':>10}"
              "   (rebuilds, dump load, deploys)")
        print("by hand, tar of a serving data dir is not a consistent copy of gitd.db")


if __name__ == "__main__":
    main()

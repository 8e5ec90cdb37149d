"""Growth: release rows and logs trimmed, repository quota, repository gc."""

import os
import subprocess
import time

import pytest
from dulwich.repo import Repo

from gitd import gitserve, repos
from gitd.core.errors import GitdError
from gitd.core.store import Store
from tests.e2e.harness import GIT_ENV


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gitd.db")
    s.create_app("hello")
    return s


def test_rows_beyond_the_history_go_and_logs_outside_rollback_are_cut(store):
    for n in range(1, 13):
        store.new_release("hello", status="failed" if n % 3 else "succeeded", log="x" * 10_000)
    store.new_release("hello", status="building", log="in progress")  # v13
    store.update_release("hello", 1, status="building")  # interrupted long ago: never deleted here
    gone = store.trim_releases("hello", keep={3, 12}, newest=5, log_tail=100)
    left = {r.version: r for r in store.releases("hello")}
    assert sorted(left) == [1, 3, 9, 10, 11, 12, 13]
    assert gone == 6
    assert len(left[3].log) == 10_000 and len(left[12].log) == 10_000  # rollback needs them
    assert left[11].log.startswith("(log trimmed)") and len(left[11].log) < 200
    assert left[13].log == "in progress"
    # numbering continues after the trim
    assert store.new_release("hello").version == 14


def test_the_repo_quota_refuses_once_over_and_shrinks_the_pack_allowance(tmp_path):
    path = gitserve.create_repo(tmp_path, "hello").path
    used = repos.size(path)
    assert repos.push_allowance(path, "hello", used + 1000, 10**9) == 1000
    assert repos.push_allowance(path, "hello", 10**9, 500) == 500
    with pytest.raises(GitdError, match="max_repo_bytes"):
        repos.push_allowance(path, "hello", used, 10**9)


def test_gc_packs_loose_objects_prunes_old_unreachable_ones_and_keeps_the_rest(tmp_path):
    env = {**GIT_ENV, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    work, bare = tmp_path / "work", tmp_path / "hello.git"
    work.mkdir()

    def git(*args, cwd=work, **kw):
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                              **kw).stdout.decode().strip()

    git("init", "-q", "--bare", str(bare))
    git("init", "-q", "-b", "main")
    for n in range(5):  # small pushes arrive as loose objects
        (work / f"f{n}").write_text(str(n))
        git("add", ".")
        git("commit", "-qm", f"c{n}")
        git("push", "-q", str(bare), "main")
    old = git("hash-object", "-w", "--stdin", cwd=bare, input=b"unreachable and old")
    young = git("hash-object", "-w", "--stdin", cwd=bare, input=b"unreachable and young")
    old_path = bare / "objects" / old[:2] / old[2:]
    os.utime(old_path, (time.time() - 2 * repos.PRUNE_GRACE,) * 2)
    head = git("rev-parse", "main")
    repo = Repo(str(bare))
    assert repo.object_store.count_loose_objects() > 10
    repo.close()

    repos.collect(bare, "hello")  # below the thresholds: nothing done
    assert old_path.exists()
    with_thresholds(loose=1, run=lambda: repos.collect(bare, "hello"))

    repo = Repo(str(bare))
    assert repo.object_store.count_loose_objects() == 0
    assert repo.object_store.count_pack_files() == 1
    assert old.encode() not in repo.object_store
    assert young.encode() in repo.object_store  # a push may still need it
    assert repo.refs[b"refs/heads/main"] == head.encode()
    repo.close()
    assert git("fsck", "--no-dangling", cwd=bare) == ""


def with_thresholds(loose: int, run) -> None:
    saved = repos.GC_LOOSE
    repos.GC_LOOSE = loose
    try:
        run()
    finally:
        repos.GC_LOOSE = saved

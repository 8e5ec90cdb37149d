"""git over gitd keeps its promises while packs are copied rather than
re-encoded: clones (whole, from one pack or several, shallow), fetches, thin
pushes, deletes and non-fast-forward refusal, checked by `git fsck`."""

import subprocess

import pytest

from tests.e2e.harness import commit, git, make_repo, unique_app

pytestmark = pytest.mark.e2e


def fsck(path) -> None:
    result = subprocess.run(["git", "-C", str(path), "fsck", "--strict", "--no-dangling"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stderr and "missing" not in result.stdout, result.stderr


def run_git(gitd, *args, cwd=None):
    result = subprocess.run(["git", *args], cwd=cwd, env=gitd.git_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def history(repo, start: int, count: int) -> None:
    """Commits that edit, add and rename files: deltas in the pack."""
    body = "\n".join(f"line {n} of a file that grows" for n in range(200))
    for n in range(start, start + count):
        files = {f"src/file{n % 7}.txt": body + f"\nedit {n}\n", f"docs/note{n % 3}.md": f"note {n}\n"}
        if n % 5 == 4 and (repo / f"src/file{n % 7}.txt").exists():
            git(repo, "mv", f"src/file{n % 7}.txt", f"src/moved{n}.txt")
            files = {f"src/moved{n}.txt": body + f"\nmoved at {n}\n"}
        commit(repo, files, f"commit {n}")


def test_clone_fetch_shallow_thin_push_delete_and_refusal_keep_repositories_sound(gitd, tmp_path):
    app = unique_app("git")
    assert gitd.ssh("apps:create", app).returncode == 0
    served = gitd.data_dir / "repos" / f"{app}.git"
    repo = make_repo(tmp_path / "src", {"README": "hello\n"})
    history(repo, 0, 40)
    run_git(gitd, "push", gitd.remote(app), "main:feature", cwd=repo)
    fsck(served)

    # a plain clone: the one stored pack as it is
    run_git(gitd, "clone", "-q", "-b", "feature", gitd.remote(app), str(tmp_path / "c1"))
    fsck(tmp_path / "c1")
    assert git(tmp_path / "c1", "rev-parse", "HEAD") == git(repo, "rev-parse", "main")

    # a thin push of more commits, then an incremental fetch
    history(repo, 40, 10)
    pushed = run_git(gitd, "push", gitd.remote(app), "main:feature", cwd=repo)
    fsck(served)
    run_git(gitd, "fetch", "-q", "origin", cwd=tmp_path / "c1")
    fsck(tmp_path / "c1")
    assert git(tmp_path / "c1", "rev-parse", "origin/feature") == git(repo, "rev-parse", "main")
    assert "Building" not in pushed.stderr  # not the deploy branch

    # a clone from two packs: entries copied, deltas pointed at their bases anew
    run_git(gitd, "clone", "-q", "-b", "feature", gitd.remote(app), str(tmp_path / "c2"))
    fsck(tmp_path / "c2")
    assert git(tmp_path / "c2", "rev-list", "--count", "HEAD").strip() == "51"

    # shallow, then deepened (dulwich has no --deepen; --depth does it)
    run_git(gitd, "clone", "-q", "--depth", "2", "-b", "feature", gitd.remote(app), str(tmp_path / "s"))
    fsck(tmp_path / "s")
    assert git(tmp_path / "s", "rev-list", "--count", "HEAD").strip() == "2"
    run_git(gitd, "fetch", "-q", "--depth", "7", cwd=tmp_path / "s")
    fsck(tmp_path / "s")
    assert git(tmp_path / "s", "rev-list", "--count", "HEAD").strip() == "7"

    # history rewritten: refused without --force, taken with it
    git(repo, "reset", "-q", "--hard", "HEAD~3")
    commit(repo, {"other.txt": "rewritten\n"}, "rewritten")
    refused = subprocess.run(["git", "push", gitd.remote(app), "main:feature"], cwd=repo,
                             env=gitd.git_env(), capture_output=True, text=True)
    assert refused.returncode != 0 and "non-fast-forward" in refused.stderr
    run_git(gitd, "push", "--force", gitd.remote(app), "main:feature", cwd=repo)
    ls = run_git(gitd, "ls-remote", gitd.remote(app), cwd=repo).stdout
    assert git(repo, "rev-parse", "main").strip() in ls

    # a second branch, then deleted
    run_git(gitd, "push", gitd.remote(app), "main:topic", cwd=repo)
    assert "refs/heads/topic" in run_git(gitd, "ls-remote", gitd.remote(app), cwd=repo).stdout
    run_git(gitd, "push", gitd.remote(app), ":topic", cwd=repo)
    assert "refs/heads/topic" not in run_git(gitd, "ls-remote", gitd.remote(app), cwd=repo).stdout
    fsck(served)
    gitd.ssh("apps:destroy", app, "--force")


def test_fetches_after_merges_rewrites_and_across_branches_bring_what_is_missing(gitd, tmp_path):
    """A fetch walks from the client's haves, not the whole history: a merge,
    a force-push rewriting history and several branches at once each leave
    the clone complete (`git fsck --strict`) and at the pushed tips."""
    app = unique_app("fetch")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / "src", {"README": "hello\n"})
    history(repo, 0, 30)
    git(repo, "branch", "topic")
    run_git(gitd, "push", gitd.remote(app), "main:feature", "topic:topic", cwd=repo)
    clone = tmp_path / "c"
    run_git(gitd, "clone", "-q", "-b", "feature", gitd.remote(app), str(clone))

    def fetched_matches(*branches: str) -> None:
        run_git(gitd, "fetch", "-q", "--prune", "origin", cwd=clone)
        fsck(clone)
        for local, remote in branches:
            assert git(clone, "rev-parse", f"origin/{remote}") == git(repo, "rev-parse", local)

    # a merge of a branch the client already has half of
    git(repo, "checkout", "-q", "topic")
    for n in range(6):
        commit(repo, {f"topic/part{n % 2}.txt": f"topic change {n}\n"}, f"topic {n}")
    git(repo, "checkout", "-q", "main")
    history(repo, 30, 4)
    git(repo, "merge", "-q", "--no-ff", "-m", "merge topic", "topic")
    run_git(gitd, "push", gitd.remote(app), "main:feature", "topic:topic", cwd=repo)
    fetched_matches(("main", "feature"), ("topic", "topic"))

    # history rewritten below what the client has, then force-pushed
    git(repo, "reset", "-q", "--hard", "HEAD~2")
    history(repo, 200, 3)
    run_git(gitd, "push", "--force", gitd.remote(app), "main:feature", cwd=repo)
    fetched_matches(("main", "feature"))

    # several new branches at once, one of them off old history
    git(repo, "checkout", "-q", "-b", "old", "HEAD~20")
    history(repo, 300, 3)
    git(repo, "checkout", "-q", "main")
    history(repo, 400, 2)
    run_git(gitd, "push", gitd.remote(app), "main:feature", "old:old", "main:copy", cwd=repo)
    fetched_matches(("main", "feature"), ("old", "old"), ("main", "copy"))
    gitd.ssh("apps:destroy", app, "--force")

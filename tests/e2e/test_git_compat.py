"""gitd behaves as git's own server does, for what developers and CI run
every day: each operation runs against gitd and against git's
`git-upload-pack`/`git-receive-pack` on a bare repository (over file://,
so the pack protocol, not a local copy) in the same run, from clients in
the same state, and the results are compared: exit status, refs, shallow
boundaries, whether the checkout is complete, `git fsck`.

git's server is configured as gitd chose to behave (uploadpack.allowFilter
and allowReachableSHA1InWant for partial clones, receive.shallowUpdate for
pushes from shallow clones); push options stay at git's default (refused).
Branches other than main are pushed where no deploy is wanted."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, git, make_repo, unique_app

pytestmark = pytest.mark.e2e

SIDES = ("gitd", "git")
GIT_SERVER_CONFIG = {"uploadpack.allowFilter": "true",
                     "uploadpack.allowReachableSHA1InWant": "true",
                     "receive.shallowUpdate": "true"}


class Pair:
    """One app on gitd and one bare repository served by git, and a
    client directory per side for each name: `run` does the same thing on
    both sides, `{url}` standing for the side's remote."""

    def __init__(self, gitd, root: Path, git_config: dict | None = None):
        self.gitd = gitd
        self.root = root
        self.app = unique_app("compat")
        created = gitd.ssh("apps:create", self.app)
        assert created.returncode == 0, created.stderr
        bare = root / "git-server.git"
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "--bare", "-b", "main", str(bare))
        for name, value in (GIT_SERVER_CONFIG if git_config is None else git_config).items():
            git(bare, "config", name, value)
        self.stored = {"gitd": gitd.data_dir / "repos" / f"{self.app}.git", "git": bare}
        self.urls = {"gitd": gitd.remote(self.app), "git": f"file://{bare}"}

    def client(self, side: str, name: str) -> Path:
        return self.root / side / name

    def copy_client(self, source: Path, name: str) -> None:
        for side in SIDES:
            self.client(side, name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, self.client(side, name), symlinks=True)

    def run(self, *args: str, cwd: str | None = None, protocol: int | None = None,
            timeout: float = 120) -> dict:
        results = {}
        for side in SIDES:
            where = self.client(side, cwd) if cwd else self.root / side
            where.mkdir(parents=True, exist_ok=True)
            argv = ["git"] + (["-c", f"protocol.version={protocol}"] if protocol is not None else [])
            argv += [arg.replace("{url}", self.urls[side]) for arg in args]
            results[side] = subprocess.run(argv, cwd=where, env=self.gitd.git_env(),
                                           capture_output=True, text=True, timeout=timeout)
        return results

    def same(self, *args: str, cwd: str | None = None, protocol: int | None = None,
             ok: bool = True) -> dict:
        """Run on both sides; the same exit status, success when `ok`."""
        results = self.run(*args, cwd=cwd, protocol=protocol)
        codes = {side: r.returncode for side, r in results.items()}
        detail = {side: r.stderr[-1500:] for side, r in results.items()}
        assert codes["gitd"] == codes["git"], (args, codes, detail)
        assert (codes["gitd"] == 0) == ok, (args, codes, detail)
        return results

    def same_server_state(self) -> dict:
        states = {side: repo_state(self.stored[side], bare=True) for side in SIDES}
        assert states["gitd"] == states["git"]
        return states["gitd"]

    def same_client_state(self, name: str) -> dict:
        states = {side: repo_state(self.client(side, name)) for side in SIDES}
        assert states["gitd"] == states["git"]
        return states["gitd"]


def repo_state(path: Path, bare: bool = False) -> dict:
    """What must agree: refs, the shallow boundary, the commit count of
    each ref, a clean `git fsck`, and a complete checkout."""
    git_dir = path if bare else path / ".git"
    refs = git(path, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    # gitd's bare repository has no remote-tracking refs, git's neither
    counts = {ref.split()[0]: git(path, "rev-list", "--count", ref.split()[1]).strip()
              for ref in refs if not ref.startswith("refs/tags/")}
    shallow = git_dir / "shallow"
    fsck = subprocess.run(["git", "fsck", "--no-dangling"], cwd=path, capture_output=True,
                          text=True)
    # objects a partial clone has not fetched (yet), listed without fetching them
    listed = git(path, "rev-list", "--objects", "--missing=print", "--all").splitlines()
    state = {"refs": sorted(refs), "counts": counts, "fsck": fsck.returncode,
             "missing": sorted(line for line in listed if line.startswith("?")),
             "shallow": sorted(shallow.read_text().split()) if shallow.exists() else []}
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    if not bare:
        state["head"] = git(path, "rev-parse", "HEAD").strip()
        status = git(path, "status", "--porcelain")
        assert status == "", status  # every file checked out, none missing
        state["files"] = sorted(git(path, "ls-files", "-s").splitlines())
    return state


def history(repo: Path, start: int, count: int, branch_files: str = "src") -> None:
    for n in range(start, start + count):
        commit(repo, {f"{branch_files}/file{n % 4}.txt": f"version {n}\n" * 50,
                      f"docs/note{n % 3}.md": f"note {n}\n"}, f"commit {n}")


@pytest.fixture
def source(tmp_path) -> Path:
    """The developer's repository: a history on `work`, with tags."""
    repo = make_repo(tmp_path / "source", {"README": "hello\n"})
    git(repo, "checkout", "-q", "-b", "work")
    commit(repo, {"edge/limit.txt": "x" * 99 + "\n", "edge/under.txt": "x" * 98 + "\n"},
           "files at blob:limit=100 and just under")
    history(repo, 0, 12)
    git(repo, "tag", "-a", "v1", "-m", "release 1")
    git(repo, "tag", "light", "HEAD~3")
    return repo


def test_shallow_clone_fetch_deepen_and_unshallow_match_git(gitd, source, tmp_path):
    pair = Pair(gitd, tmp_path / "pair")
    pair.copy_client(source, "dev")
    pair.same("push", "{url}", "work", "--tags", cwd="dev")
    pair.same_server_state()

    for protocol in (0, 2):
        name = f"shallow-v{protocol}"
        pair.same("clone", "-q", "--depth=1", "-b", "work", "{url}", name, protocol=protocol)
        assert len(pair.same_client_state(name)["shallow"]) == 1
    history(source, 12, 4)
    for side in SIDES:  # the same new commits reach both servers
        git(pair.client(side, "dev"), "pull", "-q", "--ff-only", str(source), "work")
    pair.same("push", "{url}", "work", cwd="dev")
    for protocol in (0, 2):
        name = f"shallow-v{protocol}"
        pair.same("fetch", "-q", "origin", cwd=name, protocol=protocol)  # into a shallow clone
        pair.same("merge", "-q", "--ff-only", "origin/work", cwd=name)
        pair.same_client_state(name)
        before = pair.same_client_state(name)["counts"]["refs/remotes/origin/work"]
        pair.same("fetch", "-q", "--deepen=3", cwd=name, protocol=protocol)
        deepened = pair.same_client_state(name)["counts"]["refs/remotes/origin/work"]
        assert int(deepened) == int(before) + 3
        pair.same("fetch", "-q", "--depth=6", cwd=name, protocol=protocol)
        pair.same_client_state(name)
        pair.same("fetch", "-q", "--unshallow", "--tags", cwd=name, protocol=protocol)
        state = pair.same_client_state(name)
        whole = git(source, "rev-list", "--count", "work").strip()
        assert state["shallow"] == [] and state["counts"]["refs/heads/work"] == whole


def test_push_from_a_shallow_ci_checkout_matches_git(gitd, source, tmp_path):
    """A CI checkout (depth 1 of the forge's repository) pushed where the
    history is (git accepts it by default), and to an empty app, which
    becomes shallow at the checkout's boundary; clones of it are shallow."""
    pair = Pair(gitd, tmp_path / "pair")
    pair.copy_client(source, "dev")
    history(source, 12, 2)
    for side in SIDES:
        git(pair.client(side, "dev"), "pull", "-q", "--ff-only", str(source), "work")
    pair.same("push", "{url}", "work", cwd="dev")  # the forge's history, pushed before
    ci = tmp_path / "ci"
    git(tmp_path, "clone", "-q", "--depth=1", "-b", "work", f"file://{source}", str(ci))
    commit(ci, {"built-by": "ci\n"}, "made in CI")
    pair.copy_client(ci, "ci")
    pair.same("push", "{url}", "HEAD:refs/heads/work", cwd="ci")
    assert pair.same_server_state()["shallow"] == []  # the server had the history below

    empty = Pair(gitd, tmp_path / "empty")
    empty.copy_client(ci, "ci")
    empty.same("push", "{url}", "HEAD:refs/heads/work", cwd="ci")
    state = empty.same_server_state()
    assert state["shallow"] == [git(source, "rev-parse", "work").strip()]
    empty.same("clone", "-q", "-b", "work", "{url}", "clone")
    assert empty.same_client_state("clone")["shallow"] == state["shallow"]
    commit(ci, {"built-by": "ci again\n"}, "next CI build")
    empty.copy_client(ci, "ci2")
    empty.same("push", "{url}", "HEAD:refs/heads/work", cwd="ci2")
    empty.same_server_state()
    empty.same("pull", "-q", "--ff-only", cwd="clone")
    empty.same_client_state("clone")
    empty.same("fetch", "-q", "--depth=1", cwd="clone")
    empty.same_client_state("clone")

    # git's server at its default refuses in words; gitd accepts (above)
    strict = Pair(gitd, tmp_path / "strict", git_config={})
    strict.copy_client(ci, "ci")
    refused = strict.run("push", "{url}", "HEAD:refs/heads/work", cwd="ci")
    assert refused["git"].returncode != 0 and "shallow update not allowed" in refused["git"].stderr


@pytest.mark.parametrize("spec", ["blob:none", "tree:0", "blob:limit=100"])
def test_partial_clone_checks_out_completely_like_git(gitd, source, tmp_path, spec):
    pair = Pair(gitd, tmp_path / "pair")
    pair.copy_client(source, "dev")
    pair.same("push", "{url}", "work", "--tags", cwd="dev")
    for protocol in (0, 2):
        name = f"partial-v{protocol}"
        pair.same("clone", "-q", f"--filter={spec}", "-b", "work", "{url}", name,
                  protocol=protocol)
        pair.same_client_state(name)
        pair.same("checkout", "-q", "v1~5", cwd=name)  # more blobs fetched on demand
        pair.same_client_state(name)
        pair.same("log", "-p", "--format=%H", "-3", cwd=name)  # old versions, fetched


def test_wants_by_id_are_served_only_when_a_ref_reaches_them_like_git(gitd, source, tmp_path):
    """A commit holding a secret is force-pushed away; its objects stay
    stored. Fetched by id over protocol v0 (gitd answers in v0): refused by
    both servers, "not our ref"; a blob of the history, reached from the
    branch, is served by both to a partial clone. (git 2.39's own server
    is laxer: its v0 check looks at commits only and serves the secret
    blob by id, and its protocol v2 serves any object by id; gitd refuses
    every object no ref reaches.)"""
    pair = Pair(gitd, tmp_path / "pair")
    pair.copy_client(source, "dev")
    pair.same("push", "{url}", "work", cwd="dev")
    for name in ("early", "early-again"):  # the second skips the walk: every object was reached
        pair.same("clone", "-q", "-b", "work", "{url}", name, protocol=0)
        pair.same_client_state(name)
    commit(source, {"secret.env": "API_KEY=hunter2\n"}, "oops")
    secret = git(source, "rev-parse", "work").strip()
    secret_blob = git(source, "rev-parse", "work:secret.env").strip()
    for side in SIDES:
        git(pair.client(side, "dev"), "pull", "-q", "--ff-only", str(source), "work")
    pair.same("push", "{url}", "work", cwd="dev")
    for side in SIDES:
        git(pair.client(side, "dev"), "reset", "-q", "--hard", "work~1")
    pair.same("push", "--force", "{url}", "work", cwd="dev")

    pair.same("clone", "-q", "-b", "work", "{url}", "late", protocol=0)
    for side in SIDES:  # a clone gets what the refs reach, not every stored object
        held = subprocess.run(["git", "cat-file", "-e", secret], cwd=pair.client(side, "late"))
        assert held.returncode != 0, side
    results = pair.same("fetch", "origin", secret, cwd="late", protocol=0, ok=False)
    assert all(f"not our ref {secret}" in r.stderr for r in results.values()), results
    pair.same_client_state("late")

    old_blob = git(source, "rev-parse", "work~4:docs/note0.md").strip()
    pair.same("clone", "-q", "--filter=blob:none", "--no-checkout", "-b", "work", "{url}",
              "partial", protocol=0)
    shown = pair.same("cat-file", "-p", old_blob, cwd="partial", protocol=0)
    assert all(r.stdout == git(source, "cat-file", "-p", old_blob) for r in shown.values())
    refused = pair.run("cat-file", "-p", secret_blob, cwd="partial", protocol=0)["gitd"]
    assert refused.returncode != 0 and f"not our ref {secret_blob}" in refused.stderr
    assert "hunter2" not in refused.stdout


def test_tags_atomic_force_delete_and_push_options_match_git(gitd, source, tmp_path):
    pair = Pair(gitd, tmp_path / "pair")
    pair.copy_client(source, "dev")
    pair.same("push", "{url}", "work", "work~2:refs/heads/feature", cwd="dev")
    pair.same("push", "{url}", "--tags", cwd="dev")
    pair.same_server_state()
    pair.same("clone", "-q", "-b", "work", "{url}", "clone")
    assert "refs/tags/v1" in " ".join(pair.same_client_state("clone")["refs"])

    # --atomic: all or nothing, with one non-fast-forward among them
    pair.same("push", "--atomic", "{url}", "work~1:refs/heads/work", "work:refs/heads/feature",
              cwd="dev", ok=False)
    pair.same_server_state()
    pair.same("push", "--atomic", "{url}", "work:refs/heads/feature", "work~6:refs/heads/old",
              cwd="dev")
    pair.same_server_state()

    # a non-fast-forward: refused, then forced
    pair.same("push", "{url}", "work~5:refs/heads/feature", cwd="dev", ok=False)
    pair.same("push", "--force", "{url}", "work~5:refs/heads/feature", cwd="dev")
    pair.same("push", "{url}", "+work~1:refs/heads/old", "--force-with-lease", cwd="dev")
    pair.same_server_state()

    # delete a branch and a tag
    pair.same("push", "{url}", ":refs/heads/feature", ":refs/tags/light", cwd="dev")
    pair.same("push", "{url}", "--delete", "old", cwd="dev")
    pair.same_server_state()
    pair.same("fetch", "-q", "--prune", "--prune-tags", "--tags", "origin", cwd="clone")
    pair.same_client_state("clone")

    # push options: git's server refuses them unless configured to accept
    results = pair.same("push", "-o", "ci.skip", "{url}", "work:refs/heads/opt", cwd="dev",
                        ok=False)
    assert all("does not support push options" in r.stderr for r in results.values())
    pair.same_server_state()


def test_shallow_push_deploys_releases_and_rolls_back(gitd, tmp_path):
    """The deploy branch pushed from depth-1 CI checkouts into an empty app:
    built from the pushed tree, released, and rolled back."""
    app = unique_app("shallowci")
    assert gitd.ssh("apps:create", app).returncode == 0
    forge = make_repo(tmp_path / "forge", {"README": "history\n"})
    history(forge, 0, 3)
    commit(forge, web_app("ci v1"), "v1")
    ci = tmp_path / "ci1"
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{forge}", str(ci))
    first = gitd.push(ci, app, "HEAD:main")
    assert first.returncode == 0, first.stderr
    assert gitd.get(gitd.host(app)) == (200, "ci v1\n")

    commit(forge, web_app("ci v2"), "v2")
    ci = tmp_path / "ci2"  # deep enough to see what it builds on (else git says "fetch first")
    git(tmp_path, "clone", "-q", "--depth=2", f"file://{forge}", str(ci))
    second = gitd.push(ci, app, "HEAD:main")
    assert second.returncode == 0, second.stderr
    assert gitd.get(gitd.host(app)) == (200, "ci v2\n")

    rolled = gitd.ssh("releases:rollback", app, "v1")
    assert rolled.returncode == 0, rolled.stderr
    assert gitd.get(gitd.host(app)) == (200, "ci v1\n")
    served = gitd.data_dir / "repos" / f"{app}.git"
    fsck = subprocess.run(["git", "fsck"], cwd=served, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    # the second checkout's boundary is the first's commit, which gitd has whole
    assert (served / "shallow").read_text().split() == [git(forge, "rev-parse", "HEAD~1").strip()]


LARGE_MB = 256
# gitd's peak resident memory over the push, above what it held before, in
# MB whatever the file's size: the object store streams a large blob and the
# SSH channel holds at most its window (before, asyncssh's channel queued the
# whole push: +254 MB for 256 MB; before the streaming store, 3.3x the file)
RSS_BOUND_MB = 64


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def test_a_file_of_hundreds_of_mb_is_pushed_and_cloned_in_bounded_memory(gitd, tmp_path):
    pair = Pair(gitd, tmp_path / "pair")
    repo = make_repo(pair.client("gitd", "dev"), {"README": "big\n"})
    pair.client("git", "dev").parent.mkdir(parents=True)
    pair.client("git", "dev").symlink_to(repo)  # pushes read the client, never change it
    with open(repo / "big.bin", "wb") as f:  # incompressible: the pack is as large
        for _ in range(LARGE_MB):
            f.write(os.urandom(1 << 20))
    git(repo, "config", "core.compression", "0")  # the client's zlib is not what is measured
    git(repo, "add", "big.bin")
    git(repo, "commit", "-q", "-m", "a large file")
    blob = git(repo, "rev-parse", "HEAD:big.bin").strip()
    (repo / "big.bin").unlink()

    pid = gitd.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak (VmHWM)
    base = _rss_mb(pid, "VmRSS")
    peak = [base]
    done = threading.Event()

    def sample():  # VmHWM says the same; sampled too in case clear_refs is refused
        while not done.wait(0.05):
            peak[0] = max(peak[0], _rss_mb(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        pair.same("push", "{url}", "main:refs/heads/big", cwd="dev")
    finally:
        done.set()
        sampler.join()
    peak_mb = max(peak[0], _rss_mb(pid, "VmHWM"))
    print(f"push of {LARGE_MB} MB: gitd RSS {base:.0f} MB before, peak {peak_mb:.0f} MB "
          f"(both pushes took {time.monotonic() - started:.1f} s)")
    assert peak_mb - base < RSS_BOUND_MB, (base, peak_mb)
    refs = {side: git(pair.stored[side], "for-each-ref") for side in SIDES}
    assert refs["gitd"] == refs["git"]

    # cloned back whole: index-pack checks every object's id as it arrives
    cloned = subprocess.run(["git", "clone", "-q", "--bare", "-b", "big", pair.urls["gitd"],
                             str(tmp_path / "clone.git")], env=gitd.git_env(),
                            capture_output=True, text=True, timeout=300)
    assert cloned.returncode == 0, cloned.stderr
    assert git(tmp_path / "clone.git", "cat-file", "-s", blob).strip() == str(LARGE_MB << 20)
    fsck = subprocess.run(["git", "fsck", "--connectivity-only"], cwd=tmp_path / "clone.git",
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr

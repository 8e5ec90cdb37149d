"""gitd.missing: the commits a fetch sends are exactly `git rev-list wants
--not haves`, found without walking the haves' whole history."""

import pytest
from dulwich.repo import Repo

from gitd.missing import BoundedMissingObjectFinder, missing_commits
from tests.fakes import run_git

def git(path, *args, when: int | None = None) -> str:
    return run_git(path, *args, when=when, text=True).stdout.strip()


def commit(path, name: str, when: int) -> str:
    (path / f"{name}.txt").write_text(f"{name}\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", name, when=when)
    return git(path, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """main: 60 commits; a topic branch off commit 20 merged at 45; a
    rewritten branch off 30; `skewed` has commits dated before their parents.
    Made once (about 250 git runs): the tests only read it."""
    path = tmp_path_factory.mktemp("history") / "r"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    when = 1_700_000_000
    for n in range(20):
        commit(path, f"m{n}", when + n * 60)
    git(path, "branch", "topic")
    for n in range(20, 45):
        commit(path, f"m{n}", when + n * 60)
        if n == 30:
            git(path, "branch", "rewritten")
    git(path, "checkout", "-q", "topic")
    for n in range(8):
        commit(path, f"t{n}", when + 1300 + n * 60)
    git(path, "checkout", "-q", "main")
    git(path, "merge", "-q", "--no-ff", "-m", "merge topic", "topic", when=when + 45 * 60)
    for n in range(46, 60):
        commit(path, f"m{n}", when + n * 60)
    git(path, "checkout", "-q", "rewritten")
    for n in range(5):
        commit(path, f"r{n}", when + 4000 + n * 60)
    git(path, "checkout", "-q", "-b", "skewed", "main")
    for n in range(6):  # clocks gone back a day
        commit(path, f"s{n}", when - 86400 + n)
    git(path, "checkout", "-q", "main")
    return path


def rev(path, name: str) -> bytes:
    return git(path, "rev-parse", name).encode()


def rev_list(path, wants, haves) -> set[bytes]:
    out = git(path, "rev-list", *wants, "--not", *haves, "--") if wants else ""
    return {line.encode() for line in out.split()}


CASES = [
    (["main"], ["main~10"]),                 # a fetch of a few new commits
    (["main"], ["main~20"]),                 # across the merge
    (["main"], ["topic"]),                   # the client had the merged branch
    (["main"], ["topic~3", "main~30"]),      # several haves
    (["rewritten"], ["main"]),               # a force-push: the new tip forks below the old
    (["main"], ["rewritten"]),
    (["main", "rewritten", "topic"], ["main~5"]),  # several branches
    (["skewed"], ["main~2"]),                # commits dated before their parents
    (["main~10"], ["main"]),                 # nothing missing
    (["main"], []),                          # a clone
]


@pytest.mark.parametrize("wants,haves", CASES)
def test_missing_commits_are_those_rev_list_names(history, wants, haves):
    store = Repo(str(history)).object_store
    missing, boundary = missing_commits(store, [rev(history, w) for w in wants],
                                        [rev(history, h) for h in haves])
    assert missing == rev_list(history, wants, haves)
    have_ancestry = rev_list(history, haves, []) if haves else set()
    assert boundary <= have_ancestry
    for sha in missing:  # the boundary is every parent of a missing commit the client has
        assert {p for p in store[sha].parents if p in have_ancestry} <= boundary


def test_a_have_dated_before_its_parents_costs_bytes_never_objects(history):
    """The client's tip dated a day before the history it sits on: the walk
    may take commits the client has for missing ones (sent again, as with
    git's own walk without a commit-graph), but leaves none out."""
    store = Repo(str(history)).object_store
    missing, _ = missing_commits(store, [rev(history, "main")], [rev(history, "skewed")])
    assert missing >= rev_list(history, ["main"], ["skewed"])
    assert missing <= rev_list(history, ["main"], [])


def test_the_walk_stops_near_the_haves(history):
    """A fetch of the last commit parses a handful of commits, not all 80."""
    store = Repo(str(history)).object_store
    parsed = []
    missing, _ = missing_commits(store, [rev(history, "main")], [rev(history, "main~1")],
                                 get_parents=lambda c: parsed.append(c.id) or c.parents)
    assert missing == {rev(history, "main")}
    assert len(parsed) < 15


def test_finder_sends_the_new_commits_trees_and_blobs_only(history):
    store = Repo(str(history)).object_store
    finder = BoundedMissingObjectFinder(store, haves=[rev(history, "main~1")], wants=[rev(history, "main")])
    sent = {sha for sha, _hint in finder}
    head = store[rev(history, "main")]
    assert sent == {head.id, head.tree, store[head.tree][b"m59.txt"][1]}


def test_a_clone_walks_only_once_objects_are_asked_for(history):
    store = Repo(str(history)).object_store
    parsed = []
    finder = BoundedMissingObjectFinder(store, haves=[], wants=[rev(history, "main")],
                                        get_parents=lambda c: parsed.append(c.id) or c.parents)
    assert not parsed and not finder.get_remote_has()
    sent = {sha for sha, _hint in finder}
    assert rev_list(history, ["main"], []) <= sent and len(parsed) == len(rev_list(history, ["main"], []))

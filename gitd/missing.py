"""Which commits a fetch must send: walked down from the wants and the
client's haves together, newest first, stopping where only commits the
client has are left.

dulwich's MissingObjectFinder first collects every ancestor of the haves
(the whole history, one parsed commit each), then walks the wants down to
that set: a fetch of a few new commits of a long history spent nearly all
its time in the first walk. This is how `git rev-list wants --not haves`
works instead: both walks go in commit-date order, a have's mark spreads to
its parents (and to anything already walked below them), and the walk stops
once every commit still queued is the client's, plus a few more steps
(SLOP) for clocks that went backwards.

A commit dated wrongly can make the walk take a commit the client has for a
missing one: the pack then carries objects the client already has, which
costs bytes, never correctness. A commit is never left out unless it is an
ancestor of a have.
"""

from __future__ import annotations

import heapq
import stat
from collections.abc import Callable, Iterable

from dulwich.object_store import MissingObjectFinder, _split_commits_and_tags
from dulwich.objects import Commit, Tag

SLOP = 5  # commits walked after only the client's are queued, as git does


def missing_commits(store, wants: Iterable[bytes], haves: Iterable[bytes],
                    shallow: frozenset = frozenset(),
                    get_parents: Callable = lambda commit: commit.parents) -> tuple[set, set]:
    """(commits reachable from `wants` and not from `haves`, the client's
    commits directly below them) -- what dulwich's _collect_ancestors
    returns, without walking the whole history of `haves`."""
    theirs: dict[bytes, bool] = {}  # sha -> the client has it
    parents_of: dict[bytes, list[bytes]] = {}  # walked commits
    queue: list[tuple[int, int, bytes, Commit]] = []
    queued_ours: set[bytes] = set()
    order = 0

    def push(sha: bytes) -> None:
        nonlocal order
        order += 1
        commit = store[sha]  # parsed once: kept until it is walked
        heapq.heappush(queue, (-commit.commit_time, order, sha, commit))
        if not theirs[sha]:
            queued_ours.add(sha)

    def mark_theirs(sha: bytes) -> None:
        stack = [sha]
        while stack:
            sha = stack.pop()
            if theirs.get(sha):
                continue
            seen = sha in theirs
            theirs[sha] = True
            queued_ours.discard(sha)
            if sha in parents_of:  # walked already: its parents are the client's too
                stack.extend(parents_of[sha])
            elif not seen:
                push(sha)

    for sha in haves:
        theirs[sha] = True
        push(sha)
    for sha in wants:
        if sha not in theirs:
            theirs[sha] = False
            push(sha)

    slop = SLOP
    while queue:
        if not queued_ours:
            slop -= 1
            if slop < 0:
                break
        else:
            slop = SLOP
        _time, _order, sha, commit = heapq.heappop(queue)
        if sha in parents_of:
            continue
        queued_ours.discard(sha)
        parents = [] if sha in shallow else list(get_parents(commit))
        parents_of[sha] = parents
        for parent in parents:
            if theirs[sha]:
                mark_theirs(parent)
            elif parent not in theirs:
                theirs[parent] = False
                push(parent)

    missing = {sha for sha in parents_of if not theirs[sha]}
    missing.update(sha for sha in wants if not theirs[sha])  # a want never walked (cannot happen)
    boundary = {parent for sha in missing for parent in parents_of.get(sha, ()) if theirs[parent]}
    boundary.update(sha for sha in wants if theirs[sha])
    return missing, boundary


def shared_trees(store, trees: list[bytes], have_trees: list[bytes], into: set[bytes]) -> None:
    """Add to `into` the objects of `have_trees` (the client's) that
    `trees` (to be sent) share with them, found by walking both only where
    they differ: an unchanged directory is one id, not its whole content.

    dulwich lists the client's trees whole (every tree object of the
    boundary commits parsed, through delta chains). An object the client has
    at another path (a moved directory) is not found and is sent again:
    bytes, never correctness."""
    walked: set[bytes] = set()

    def walk(tree: bytes, theirs: list[bytes]) -> None:
        if tree in into or tree in walked:
            return
        walked.add(tree)
        their_dirs: dict[bytes, list[bytes]] = {}
        for have in theirs:
            for name, mode, sha in store[have].iteritems():
                into.add(sha)
                if stat.S_ISDIR(mode):
                    their_dirs.setdefault(name, []).append(sha)
        for name, mode, sha in store[tree].iteritems():
            if stat.S_ISDIR(mode) and sha not in into and name in their_dirs:
                walk(sha, their_dirs[name])

    into.update(have_trees)
    for tree in trees:
        if have_trees:
            walk(tree, have_trees)


class BoundedMissingObjectFinder(MissingObjectFinder):
    """dulwich's MissingObjectFinder with its commit walk replaced by
    missing_commits: the same objects to send, the same interface. Without
    haves (a clone) the walk waits for the first object asked for: a plain
    clone is sent the stored pack instead (gitd.gitserve) and needs none."""

    def __init__(self, object_store, haves, wants, *, shallow=None, progress=None,
                 get_tagged=None, get_parents=lambda commit: commit.parents) -> None:
        self.object_store = object_store
        self._get_parents = get_parents
        have_commits, have_tags, have_others = _split_commits_and_tags(
            object_store, haves, unknown="ignore")
        want_commits, want_tags, want_others = _split_commits_and_tags(
            object_store, wants, unknown="error")
        self._walk_args = (want_commits, have_commits, frozenset(shallow or ()))
        self.remote_has: set[bytes] = set(have_tags)
        self.sha_done = set(self.remote_has)
        self.objects_to_send = {(sha, None, Tag.type_num, False) for sha in want_tags - have_tags}
        self.objects_to_send.update((sha, None, None, False) for sha in want_others - have_others)
        self.progress = progress or (lambda _message: None)
        self._tagged = (get_tagged and get_tagged()) or {}
        if have_commits:
            self._walk()

    def _walk(self) -> None:
        wants, haves, shallow = self._walk_args
        self._walk_args = None
        store = self.object_store
        missing, common = missing_commits(store, wants, haves, shallow, self._get_parents)
        self.remote_has.update(common)
        shared_trees(store, [store[sha].tree for sha in missing],
                     [store[sha].tree for sha in common], self.remote_has)
        self.sha_done.update(self.remote_has)
        self.objects_to_send.update((sha, None, Commit.type_num, False) for sha in missing)

    def __next__(self):
        if self._walk_args is not None:
            self._walk()
        return super().__next__()

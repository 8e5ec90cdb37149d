"""Whether the refs reach an object: what a fetch may ask for by id.

git's uploadpack.allowReachableSHA1InWant, as gitd serves it: a partial
clone fetches the blobs its checkout lacks by id, and `git fetch origin
<sha>` names a commit. Objects no ref reaches stay in the store (a
force-pushed-away commit, a refused push's pack) and must not be served:
they may hold what was pushed away on purpose.

A plain clone walks all history to find what the refs reach (3 s for
50,000 objects). Where they reach every stored object, the answer is every
stored object, and the walk's result says so: it is remembered for that
state of the refs and the store (`known_all_reached`), and the next clone
sends the store as it is (0.06 s to list).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections import deque
from collections.abc import Iterable

from dulwich.objects import S_ISGITLINK, Blob, Commit, Tag, Tree

from gitd import packs


def unreachable(store, tips: Iterable[bytes], wanted: Iterable[bytes],
                boundary: frozenset = frozenset(), limit: int | None = None) -> set[bytes]:
    """The ids of `wanted` that no tip reaches (held or not). Walked
    breadth first from the tips (tags peeled), each commit's tree before its
    parents, and only while some wanted id is still unmet: the blobs of a
    partial clone's checkout are met in the tips' trees. Trees are read only
    when a tree or blob is wanted. Commits of this repository's shallow
    `boundary` have no parents here. Past `limit` objects met, what is not
    met yet counts as unreached."""
    left = set(wanted)
    absent = {sha for sha in left if sha not in store}
    left -= absent
    with_trees = any(packs.object_info(store, sha)[0] in (Tree.type_num, Blob.type_num)
                     for sha in left)
    seen: set[bytes] = set()
    queue = deque(tips)
    while queue and left and (limit is None or len(seen) <= limit):
        sha = queue.popleft()
        if sha in seen or sha not in store:
            continue
        seen.add(sha)
        left.discard(sha)
        kind = packs.object_info(store, sha)[0]
        if kind == Tag.type_num:
            queue.appendleft(store[sha].object[1])
        elif kind == Commit.type_num:
            commit = store[sha]
            if with_trees:
                _walk_tree(store, commit.tree, left, seen, limit)
            if sha not in boundary:
                queue.extend(commit.parents)
        elif kind == Tree.type_num and with_trees:
            _walk_tree(store, sha, left, seen, limit)
    return left | absent


def _walk_tree(store, root: bytes, left: set, seen: set, limit: int | None) -> None:
    """Meets every tree and blob under `root` not seen yet, until none is
    left (or `limit` objects were met)."""
    stack = [root]
    while stack and left and (limit is None or len(seen) <= limit):
        sha = stack.pop()
        if sha in seen or sha not in store:
            continue
        seen.add(sha)
        left.discard(sha)
        for _name, mode, entry in store[sha].iteritems():
            if stat.S_ISDIR(mode):
                stack.append(entry)
            elif not S_ISGITLINK(mode):
                left.discard(entry)


ALL_REACHED_FILE = "gitd-all-reached"  # in the repository's dir: the state last found so


def store_state(repo, refs: dict, listing: tuple | None = None) -> str:
    """A digest of what reachability depends on: `refs` (as advertised),
    and the store's packs and loose objects by name (`listing`: from
    packs.stored_listing, else looked at now)."""
    pack_names, loose = listing or packs.stored_listing(repo.object_store)
    digest = hashlib.sha256()
    for name, sha in sorted(refs.items()):
        digest.update(b"ref %s %s\n" % (name, sha))
    for name in sorted(pack_names):
        digest.update(f"pack {name}\n".encode())
    for sha in sorted(loose):
        digest.update(b"loose %s\n" % sha)
    return digest.hexdigest()


def known_all_reached(repo, state: str) -> bool:
    try:
        with open(os.path.join(repo.controldir(), ALL_REACHED_FILE)) as f:
            return f.read(100).strip() == state
    except OSError:
        return False


def remember_if_all_reached(repo, refs: dict, state: str, sent: list[bytes]) -> None:
    """After a plain clone's walk from every ref of `refs` (`sent`: what it
    found), begun in `state`: remember that state when the walk found every
    stored object and the store did not change meanwhile."""
    if set(sent) != packs.stored_ids(repo.object_store) or store_state(repo, refs) != state:
        return
    _write_state(repo, state)


def _write_state(repo, state: str) -> None:
    path = os.path.join(repo.controldir(), ALL_REACHED_FILE)
    staged = f"{path}.{os.getpid()}.tmp"
    try:
        with open(staged, "w") as f:
            f.write(state + "\n")
        os.replace(staged, path)
    except OSError:  # a full disk: the next clone walks again
        with contextlib.suppress(OSError):
            os.unlink(staged)


CARRY_LIMIT = 10_000  # commits and trees met, at most, to carry "all reached" over a push (~1 s)
CARRY_MOST_STORED = 2_000  # objects a push stored, at most, for it to try (a first push of a
# big history is walked by the next clone instead: the push would pay the walk)


def remember_empty(repo) -> None:
    """A new repository: nothing stored, all of it reached; its pushes carry that over."""
    _write_state(repo, store_state(repo, dict(repo.get_refs())))


class PushCarry:
    """"Every stored object reached", carried over a push rather than
    walked for again at the next clone: when it held before the push, it
    holds after if the refs now reach every old tip and every object the
    push stored. A fast-forward's walk meets its new commits and their trees
    only."""

    def __init__(self, repo):
        self.repo = repo
        self.refs = dict(repo.get_refs())
        # what is old is what the state was read from: a pack stored meanwhile is checked
        listing = packs.stored_listing(repo.object_store)
        self.held = not repo.get_shallow() and known_all_reached(repo, store_state(repo, self.refs, listing))
        self.packs, self.loose = listing

    def after_push(self) -> None:
        if not self.held or self.repo.get_shallow():
            return
        store = self.repo.object_store
        stored = packs.count_in_packs(store, but=self.packs) + store.count_loose_objects() - len(self.loose)
        if stored > CARRY_MOST_STORED:
            return
        refs = dict(self.repo.get_refs())
        state = store_state(self.repo, refs)
        added = packs.stored_ids(self.repo.object_store, but=self.packs) - self.loose
        wanted = set(self.refs.values()) | added
        if unreachable(self.repo.object_store, set(refs.values()), wanted, limit=CARRY_LIMIT):
            return
        if store_state(self.repo, refs) == state:
            _write_state(self.repo, state)

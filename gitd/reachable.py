"""Whether the refs reach an object: what a fetch may ask for by id.

git's uploadpack.allowReachableSHA1InWant, as gitd serves it: a partial
clone fetches the blobs its checkout lacks by id, and `git fetch origin
<sha>` names a commit. Objects no ref reaches stay in the store (a
force-pushed-away commit, a refused push's pack) and must not be served:
they may hold what was pushed away on purpose.
"""

from __future__ import annotations

import stat
from collections import deque
from collections.abc import Iterable

from dulwich.objects import S_ISGITLINK, Blob, Commit, Tag, Tree

from gitd import packs


def unreachable(store, tips: Iterable[bytes], wanted: Iterable[bytes],
                boundary: frozenset = frozenset()) -> set[bytes]:
    """The ids of `wanted` that no tip reaches (held or not). Walked
    breadth first from the tips (tags peeled), each commit's tree before its
    parents, and only while some wanted id is still unmet: the blobs of a
    partial clone's checkout are met in the tips' trees. Trees are read only
    when a tree or blob is wanted. Commits of this repository's shallow
    `boundary` have no parents here."""
    left = set(wanted)
    absent = {sha for sha in left if sha not in store}
    left -= absent
    with_trees = any(packs.object_info(store, sha)[0] in (Tree.type_num, Blob.type_num)
                     for sha in left)
    seen: set[bytes] = set()
    queue = deque(tips)
    while queue and left:
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
                _walk_tree(store, commit.tree, left, seen)
            if sha not in boundary:
                queue.extend(commit.parents)
        elif kind == Tree.type_num and with_trees:
            _walk_tree(store, sha, left, seen)
    return left | absent


def _walk_tree(store, root: bytes, left: set, seen: set) -> None:
    """Meets every tree and blob under `root` not seen yet, until none is left."""
    stack = [root]
    while stack and left:
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

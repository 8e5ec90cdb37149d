"""Shallow histories, on both sides of the wire.

A repository is shallow when some of its commits have parents it does not
hold; git lists those commits (the boundary) in the repository's `shallow`
file and treats them as having no parents. gitd's repositories become
shallow when a shallow clone (a CI checkout) is pushed to an app that lacks
the history below it: the build needs only the pushed commit's tree.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from dulwich.objects import Commit, Tag

MAX_CLIENT_SHALLOW = 100_000  # `shallow` lines one request may send


def new_boundary(store, client_shallow: Iterable[bytes], ours: set[bytes]) -> set[bytes]:
    """The commits of a pusher's boundary that are now this store's too:
    held, not yet listed, and missing a parent. A commit whose parents are
    all here (the app had the history) needs nothing."""
    boundary = set()
    for sha in client_shallow:
        if sha in ours or sha not in store:
            continue
        commit = store[sha]
        if isinstance(commit, Commit) and any(parent not in store for parent in commit.parents):
            boundary.add(sha)
    return boundary


def _peeled_commit(store, sha: bytes) -> bytes | None:
    obj = store[sha]
    while isinstance(obj, Tag):
        obj = store[obj.object[1]]
    return obj.id if isinstance(obj, Commit) else None


def find_shallow(store, heads: Iterable[bytes], depth: int,
                 ours: frozenset = frozenset()) -> tuple[set[bytes], set[bytes]]:
    """(the client's boundary, the commits above it) for a fetch of `depth`
    commits from `heads`: what dulwich's find_shallow computes, walked
    breadth first so each commit is judged at its smallest depth, and
    stopping at this repository's own boundary `ours` (those commits are
    the client's boundary too: their parents cannot be sent)."""
    depth_of: dict[bytes, int] = {}
    todo: deque[tuple[bytes, int]] = deque()
    for head in heads:
        sha = _peeled_commit(store, head)
        if sha is not None and sha not in depth_of:
            depth_of[sha] = 1
            todo.append((sha, 1))
    boundary = set()
    while todo:
        sha, level = todo.popleft()
        if level >= depth or sha in ours:
            boundary.add(sha)
            continue
        for parent in store[sha].parents:
            if parent not in depth_of:
                depth_of[parent] = level + 1
                todo.append((parent, level + 1))
    return boundary, set(depth_of) - boundary

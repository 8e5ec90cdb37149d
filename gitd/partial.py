"""Partial clones: git's object filters (`git clone --filter=...`) applied
to what a fetch sends, with git's meaning.

dulwich's own filtering differs from git's: for `tree:<depth>` it sends the
wanted commits alone, without their history, and counts depth from the
root tree inclusive; `blob:limit=<n>` keeps blobs of exactly n bytes. Here:

- `blob:none` omits every blob, `blob:limit=<n>` blobs of n bytes or more;
- `tree:<depth>` omits trees and blobs at `depth` or deeper, the root tree
  of a commit being at depth 0 (`tree:0` sends commits and tags only);
- `combine:` omits what any of its filters omits.

Commits and tags are always sent. The client fetches what it lacks later,
by id (gitd.gitserve serves such wants whole).
"""

from __future__ import annotations

import stat
from collections import deque

from dulwich.object_filters import (BlobLimitFilter, BlobNoneFilter, CombineFilter, FilterSpec,
                                    TreeDepthFilter)
from dulwich.objects import S_ISGITLINK, Blob, Commit, Tag, Tree

from gitd import packs

SUPPORTED = (BlobNoneFilter, BlobLimitFilter, TreeDepthFilter, CombineFilter)


def unsupported(spec: FilterSpec) -> str | None:
    """The name of a filter gitd does not serve (sparse:oid), else None."""
    if isinstance(spec, CombineFilter):
        return next(filter(None, map(unsupported, spec.filters)), None)
    return None if isinstance(spec, SUPPORTED) else spec.to_spec_string()


def _parts(spec: FilterSpec) -> list[FilterSpec]:
    return [p for s in spec.filters for p in _parts(s)] if isinstance(spec, CombineFilter) else [spec]


def filtered(store, object_ids: list, spec: FilterSpec) -> list:
    """`object_ids` ((sha, (type_num, name) or None) pairs, as dulwich's
    MissingObjectFinder yields them) less what `spec` omits."""
    parts = _parts(spec)
    tree_limits = [p.max_depth for p in parts if isinstance(p, TreeDepthFilter)]
    limit = min(tree_limits) if tree_limits else None
    blob_limits = [p.limit for p in parts if isinstance(p, BlobLimitFilter)]
    no_blobs = any(isinstance(p, BlobNoneFilter) for p in parts)
    kinds = {sha: (hint[0] if hint else None) or packs.object_info(store, sha)[0]
             for sha, hint in object_ids}
    depth = _depths(store, [sha for sha, kind in kinds.items() if kind == Commit.type_num],
                    limit) if limit is not None else None
    kept = []
    for sha, hint in object_ids:
        kind = kinds[sha]
        if kind not in (Commit.type_num, Tag.type_num):
            if depth is not None and sha not in depth:
                continue
            if kind == Blob.type_num and (no_blobs or (  # sized without inflating it
                    blob_limits and packs.object_info(store, sha)[1] >= min(blob_limits))):
                continue
        kept.append((sha, hint))
    return kept


def _depths(store, commits: list[bytes], limit: int) -> dict[bytes, int]:
    """The trees and blobs of `commits` less than `limit` deep (smallest
    depth when reachable at several), read no deeper than that."""
    depth: dict[bytes, int] = {}
    todo: deque[tuple[bytes, int]] = deque()
    for sha in commits:
        todo.append((store[sha].tree, 0))
    while todo:
        sha, level = todo.popleft()
        if level >= limit or depth.get(sha, limit) <= level:
            continue
        depth[sha] = level
        tree = store[sha]
        if isinstance(tree, Tree):
            for _name, mode, entry in tree.iteritems():
                if stat.S_ISDIR(mode):
                    todo.append((entry, level + 1))
                elif not S_ISGITLINK(mode) and depth.get(entry, limit) > level + 1:
                    depth[entry] = level + 1
    return depth

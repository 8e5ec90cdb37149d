"""An app repository's growth: its size against the quota, and garbage
collection (loose objects packed, packs merged, unreachable objects pruned)."""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from dulwich.gc import garbage_collect
from dulwich.repo import Repo

from gitd.core.errors import GitdError

log = structlog.get_logger("gitd.repos")

# every push adds a pack: merge them once there are this many, or this many
# loose objects (git's own gc.auto thresholds are 50 packs, 6700 objects)
GC_PACKS = 10
GC_LOOSE = 500
# unreachable objects younger than this are kept: a push may be receiving a
# pack whose objects no ref points to yet
PRUNE_GRACE = 3600


def size(path: Path) -> int:
    """Bytes on disk under a repository (files only; symlinks not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def push_allowance(path: Path, app: str, max_repo_bytes: int, max_pack_bytes: int) -> int:
    """How many bytes the next pack may have: the per-pack limit, or less as
    the repository nears its quota. Refuses once it is over."""
    used = size(path)
    if used >= max_repo_bytes:
        raise GitdError(f"the repository of {app} holds {used // 2**20} MiB, at its quota of "
                        f"{max_repo_bytes // 2**20} MiB (setting max_repo_bytes): "
                        "nothing more can be pushed")
    return max(1, min(max_pack_bytes, max_repo_bytes - used))


def needs_gc(repo: Repo) -> bool:
    store = repo.object_store
    return store.count_pack_files() >= GC_PACKS or store.count_loose_objects() >= GC_LOOSE


def collect(path: Path, app: str) -> None:
    """Repack and prune one repository; a failure is logged, never raised
    (the push it follows has succeeded)."""
    try:
        repo = Repo(str(path))
    except Exception as exc:  # noqa: BLE001 - destroyed meanwhile
        log.info("repo gc skipped", app=app, error=str(exc))
        return
    try:
        if not needs_gc(repo):
            return
        stats = garbage_collect(repo, prune=True, grace_period=PRUNE_GRACE)
        log.info("repo gc", app=app, packs_before=stats.packs_before,
                 packs_after=stats.packs_after, pruned=len(stats.pruned_objects),
                 bytes_freed=stats.bytes_freed)
    except Exception as exc:  # noqa: BLE001
        log.warning("repo gc failed", app=app, error=str(exc))
    finally:
        repo.close()

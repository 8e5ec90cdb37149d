"""The build context: a commit's tree written out with dulwich (no git binary)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dulwich.objects import Commit, Tree
from dulwich.repo import Repo

from gitd.errors import BuildError

UNSAFE_NAMES = {b"", b".", b"..", b".git"}


def subtree(repo: Repo, commit_sha: bytes, subdir: str = "") -> Tree:
    commit = repo[commit_sha]
    if not isinstance(commit, Commit):
        raise BuildError(f"{commit_sha.decode()} is not a commit")
    tree = repo[commit.tree]
    for part in [p for p in subdir.strip("/").split("/") if p]:
        try:
            mode, sha = tree[part.encode()]
        except KeyError:
            raise BuildError(f"build directory {subdir!r} is not in commit {commit_sha.decode()[:8]}")
        if not stat.S_ISDIR(mode):
            raise BuildError(f"build directory {subdir!r} is not a directory")
        tree = repo[sha]
    return tree


def export(repo: Repo, tree: Tree, dest: Path) -> int:
    """Write `tree` under `dest`; returns the number of files written."""
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for entry in tree.iteritems():
        name, mode, sha = entry.path, entry.mode, entry.sha
        if name in UNSAFE_NAMES or b"/" in name or b"\0" in name:
            raise BuildError(f"refusing unsafe path {name!r} in the pushed tree")
        target = dest / os.fsdecode(name)
        if stat.S_ISDIR(mode):
            count += export(repo, repo[sha], target)
        elif stat.S_ISLNK(mode):
            os.symlink(repo[sha].data, target)
            count += 1
        elif stat.S_ISREG(mode):
            target.write_bytes(repo[sha].data)
            if mode & 0o111:
                target.chmod(0o755)
            count += 1
        # gitlinks (submodules) have no content here
    return count


def read_file(repo: Repo, tree: Tree, name: str) -> str | None:
    try:
        mode, sha = tree[name.encode()]
    except KeyError:
        return None
    if not stat.S_ISREG(mode):
        return None
    return repo[sha].data.decode("utf-8", "replace")

"""The build context: a commit's tree written out with dulwich (no git binary)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dulwich.objects import Commit, Tree
from dulwich.repo import Repo

from gitd.core.errors import BuildError, DiskFull, is_disk_full

UNSAFE_NAMES = {b"", b".", b"..", b".git"}
MAX_DEPTH = 200  # directories deep; removing the tree (shutil.rmtree) recurses


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


@dataclass(frozen=True)
class Limits:
    """How much a push may check out (max_export_files, max_export_bytes):
    a git bomb (a small pack whose trees expand to millions of files) stops
    at the limit instead of filling the disk."""
    files: int = 100_000
    bytes: int = 2 * 1024**3


class _Budget:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def take(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        if self.files > self.limits.files:
            raise BuildError(f"the pushed tree has more than {self.limits.files} files and "
                             "directories (max_export_files)")
        if self.bytes > self.limits.bytes:
            raise BuildError(f"the pushed tree holds more than {self.limits.bytes} bytes "
                             "(max_export_bytes)")


def export(repo: Repo, tree: Tree, dest: Path, limits: Limits = Limits()) -> int:
    """Write `tree` under `dest`; returns the number of files written.

    Nothing here follows a link: symlinks are written as links, and once all
    are written each must resolve inside `dest` (a link to /dev/zero or
    /etc/shadow would otherwise be read by whoever opens it next: the docker
    SDK reading `.dockerignore`, a buildpack's detect)."""
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(limits)
    links: list[Path] = []
    count = 0
    pending: list[tuple[Tree, Path, int]] = [(tree, dest, 0)]  # no recursion here
    try:
        while pending:
            current, where, depth = pending.pop()
            if depth > MAX_DEPTH:
                raise BuildError(f"the pushed tree nests directories more than {MAX_DEPTH} deep")
            for entry in current.iteritems():
                name, mode, sha = entry.path, entry.mode, entry.sha
                if name in UNSAFE_NAMES or b"/" in name or b"\0" in name:
                    raise BuildError(f"refusing unsafe path {name!r} in the pushed tree")
                target = where / os.fsdecode(name)
                if stat.S_ISDIR(mode):
                    budget.take(0)
                    target.mkdir()
                    pending.append((repo[sha], target, depth + 1))
                elif stat.S_ISLNK(mode):
                    data = repo[sha].data
                    budget.take(len(data))
                    os.symlink(data, target)
                    links.append(target)
                    count += 1
                elif stat.S_ISREG(mode):
                    blob = repo[sha]
                    budget.take(blob.raw_length())
                    target.write_bytes(blob.data)
                    if mode & 0o111:
                        target.chmod(0o755)
                    count += 1
                # gitlinks (submodules) have no content here
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull.at(dest, "the pushed tree could not be checked out") from None
        raise BuildError(f"cannot check out the pushed tree: {exc.strerror or exc}")
    root = os.path.realpath(dest)
    for link in links:
        resolved = os.path.realpath(link)
        if resolved != root and not resolved.startswith(root + os.sep):
            shown = os.path.relpath(link, dest)
            raise BuildError(f"refusing symlink {shown} -> {os.readlink(link)}: it points "
                             "outside the build directory")
    return count


def read_file(repo: Repo, tree: Tree, name: str) -> str | None:
    try:
        mode, sha = tree[name.encode()]
    except KeyError:
        return None
    if not stat.S_ISREG(mode):
        return None
    return repo[sha].data.decode("utf-8", "replace")

"""A read-only view of a build root for detectors: the names at its top and
small regular files read with a bound. Detection works on this view alone,
so a unit test can hand it a dict instead of a directory."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from gitd.core.errors import BuildError

MAX_MANIFEST_BYTES = 1024 * 1024  # a package.json or pyproject.toml beyond this is refused


@dataclass
class SourceView:
    files: dict[str, str | None] = field(default_factory=dict)  # name -> text (None: unread)
    dirs: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)  # symlinks at the top: never followed
    root: Path | None = None

    @classmethod
    def of(cls, files: dict[str, str], dirs: tuple[str, ...] = (),
           links: tuple[str, ...] = ()) -> "SourceView":
        return cls(files=dict(files), dirs=set(dirs), links=set(links))

    @classmethod
    def from_dir(cls, root: Path) -> "SourceView":
        view = cls(root=root)
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.is_symlink():
                    view.links.add(entry.name)
                elif entry.is_dir(follow_symlinks=False):
                    view.dirs.add(entry.name)
                elif entry.is_file(follow_symlinks=False):
                    view.files[entry.name] = None
        return view

    def has(self, name: str) -> bool:
        """A regular file or a symlink by that name at the top (a symlinked
        manifest is found, then refused when read)."""
        return name in self.files or name in self.links

    def read(self, name: str) -> str:
        if name in self.links:
            raise BuildError(f"{name} is a symlink: commit the file itself")
        if name not in self.files:
            raise BuildError(f"no {name}")
        text = self.files[name]
        if text is None:
            text = self._read_from_disk(name)
            self.files[name] = text
        if len(text.encode()) > MAX_MANIFEST_BYTES:
            raise BuildError(f"{name} is larger than {MAX_MANIFEST_BYTES // 1024} KiB")
        return text

    def read_json(self, name: str) -> dict:
        try:
            data = json.loads(self.read(name))
        except (ValueError, RecursionError) as exc:
            raise BuildError(f"{name} is not valid JSON: {exc}")
        if not isinstance(data, dict):
            raise BuildError(f"{name} is not a JSON object")
        return data

    def read_toml(self, name: str) -> dict:
        try:
            return tomllib.loads(self.read(name))
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            raise BuildError(f"{name} is not valid TOML: {exc}")

    def _read_from_disk(self, name: str) -> str:
        path = self.root / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise BuildError(f"cannot read {name}: {exc.strerror}")
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise BuildError(f"{name} is not a regular file")
            data = handle.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise BuildError(f"{name} is larger than {MAX_MANIFEST_BYTES // 1024} KiB")
        return data.decode("utf-8", "replace")

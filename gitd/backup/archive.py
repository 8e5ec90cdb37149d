"""The backup archive: a gzip'd tar of regular files and directories whose
last member, manifest.json, names every file with its size and sha256.

Reading never trusts the archive: `verify` reads it whole and refuses it
(GitdError) before anything is written when a member is not a plain file or
directory, has an absolute name or `..`, is not in the manifest (or the
manifest names a file that is missing), differs from its checksum, or goes
past the bounds on sizes and counts; a truncated or bit-flipped archive
fails there too (gzip's CRC, tar's headers, the checksums). `extract` checks
the same again while it writes, since the file may change between two reads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gitd.core.errors import GitdError

FORMAT = 1
MANIFEST = "manifest.json"
CHUNK = 1024 * 1024
# bounds on what an archive may hold (module attributes: tests lower them)
MAX_MEMBERS = 1_000_000
MAX_MEMBER_BYTES = 256 * 1024**3
MAX_TOTAL_BYTES = 1024**4
MAX_MANIFEST_BYTES = 256 * 1024**2
MAX_NAME = 1024


@dataclass
class Source:
    """One file to archive: `name` (relative, posix) read from `path`."""
    name: str
    path: Path


def write(dest: Path, sources: Iterable[Source], meta: dict) -> dict:
    """Write the archive to `dest` atomically (a temp file beside it, then a
    rename), mode 0600. Returns the manifest."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw:
            files = {}
            # no file name in gzip's header: nothing there goes unchecked
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw) as gz, \
                    tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for source in sources:
                    check_name(source.name)
                    if source.name in files or source.name == MANIFEST:
                        raise GitdError(f"{source.name} twice in the archive")
                    try:
                        files[source.name] = (
                            _add_dir(tar, source) if source.path.is_dir()
                            and not source.path.is_symlink() else _add_file(tar, source))
                    except FileNotFoundError:  # removed since it was listed (a route file
                        continue  # of a swarm task that ended): no longer part of the data
                manifest = {**meta, "format": FORMAT, "files": files}
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest


def _add_file(tar: tarfile.TarFile, source: Source) -> dict:
    """The file as it is now: a file that changes size while it is read
    fails the backup rather than storing a torn copy."""
    with open(source.path, "rb", opener=_no_follow) as fh:
        st = os.fstat(fh.fileno())
        info = tarfile.TarInfo(source.name)
        info.size, info.mode, info.mtime = st.st_size, 0o600, int(st.st_mtime)
        hashing = _HashingReader(fh, st.st_size, source.name)
        tar.addfile(info, hashing)
        if fh.read(1):
            raise GitdError(f"{source.name} grew while it was backed up: run the backup again")
    return {"size": st.st_size, "sha256": hashing.hexdigest()}


def _add_dir(tar: tarfile.TarFile, source: Source) -> dict:
    info = tarfile.TarInfo(source.name)
    info.type, info.mode = tarfile.DIRTYPE, 0o700
    tar.addfile(info)
    return {"dir": True}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    tar.addfile(info, io.BytesIO(data))


def _no_follow(path, flags):
    return os.open(path, flags | os.O_NOFOLLOW)


class _HashingReader:
    def __init__(self, fh, size: int, name: str):
        self.fh, self.left, self.name = fh, size, name
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.fh.read(n)
        if len(data) < n:
            raise GitdError(f"{self.name} shrank while it was backed up: run the backup again")
        self.left -= len(data)
        self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def check_name(name: str) -> str:
    """A member name that stays inside the directory it is extracted to."""
    path = PurePosixPath(name)
    if (not name or len(name) > MAX_NAME or path.is_absolute() or ".." in path.parts
            or "\\" in name or "\0" in name or str(path) != name or name.startswith("./")):
        raise GitdError(f"refused: the archive holds a member named {name!r} "
                        "(absolute, with '..' or not plain)")
    return name


def verify(path: Path, free_bytes: int | None = None) -> dict:
    """Read the whole archive and return its manifest, or refuse it."""
    return _read(path, free_bytes, None)


def extract(path: Path, pick: Callable[[str], Path | None]) -> dict:
    """Write each member to `pick(name)` (None: skip it), checking again as
    it goes. Returns the manifest.
    On failure, what was written stays for the caller to remove."""
    return _read(path, None, pick)


def _read(path: Path, free_bytes: int | None, pick) -> dict:
    try:
        # gzip's own reader: it checks the CRC and length at the end, which
        # tarfile's stream mode does not (a cut trailer would pass)
        with gzip.open(path, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                manifest = _walk(tar, free_bytes, pick)
            while gz.read(CHUNK):  # the rest (tar's padding) and the trailer
                pass
        return manifest
    except GitdError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        raise GitdError(f"refused: {path} is not a whole gitd backup ({type(exc).__name__}: "
                        f"{exc or 'unexpected end'}); nothing was changed") from None


def _walk(tar: tarfile.TarFile, free_bytes: int | None, pick) -> dict:
    seen: dict[str, dict] = {}
    manifest = None
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise GitdError(f"refused: more than {MAX_MEMBERS} members")
        name = check_name(member.name)
        if manifest is not None:
            raise GitdError(f"refused: {name} comes after the manifest")
        if member.isdir():
            if name in seen:
                raise GitdError(f"refused: {name} is in the archive twice")
            seen[name] = {"dir": True}
            target = pick(name) if pick else None
            if target is not None:
                target.mkdir(parents=True, exist_ok=True, mode=0o700)
            continue
        if not member.isfile():
            raise GitdError(f"refused: {name} is not a regular file or directory (links and "
                            "devices are not restored)")
        limit = MAX_MANIFEST_BYTES if name == MANIFEST else MAX_MEMBER_BYTES
        if member.size > limit:
            raise GitdError(f"refused: {name} is {member.size} bytes, past the bound of {limit}")
        total += member.size
        if total > MAX_TOTAL_BYTES or (free_bytes is not None and total > free_bytes):
            raise GitdError(f"refused: the archive unpacks to more than "
                            f"{min(MAX_TOTAL_BYTES, free_bytes or MAX_TOTAL_BYTES)} bytes"
                            + (" (the free space where it goes)" if free_bytes is not None else ""))
        if name in seen:
            raise GitdError(f"refused: {name} is in the archive twice")
        fh = tar.extractfile(member)
        if name == MANIFEST:
            manifest = _parse_manifest(fh.read())
            continue
        target = pick(name) if pick else None
        seen[name] = _copy(fh, member.size, target)
    if manifest is None:
        raise GitdError("refused: the archive has no manifest (truncated, or not a gitd backup)")
    listed = manifest["files"]
    for name in sorted(set(seen) | set(listed)):
        if name not in listed:
            raise GitdError(f"refused: {name} is not in the manifest")
        if name not in seen:
            raise GitdError(f"refused: {name} is in the manifest but not in the archive")
        entry = listed[name]
        if seen[name] != ({"dir": True} if entry.get("dir") is True else
                          {"size": entry.get("size"), "sha256": entry.get("sha256")}):
            raise GitdError(f"refused: {name} does not match its checksum in the manifest")
    return manifest


def _parse_manifest(data: bytes) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise GitdError("refused: the manifest is not JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise GitdError("refused: the manifest lists no files")
    if manifest.get("format") != FORMAT:
        raise GitdError(f"refused: archive format {manifest.get('format')!r}; this gitd reads "
                        f"format {FORMAT} (restore it with the gitd that wrote it, "
                        f"{manifest.get('gitd_version', 'unknown version')})")
    for name, entry in manifest["files"].items():
        check_name(name)
        if not isinstance(entry, dict):
            raise GitdError(f"refused: the manifest's entry for {name} is not an object")
    _check_left_out(manifest.get("volumes_left_out"))
    return manifest


def _check_left_out(left_out) -> None:
    """volume name -> why it is not in the archive: printed at the restore,
    so plain text of bounded size, no terminal escapes."""
    if left_out is None:
        return
    if not isinstance(left_out, dict) or len(left_out) > 10_000:
        raise GitdError("refused: the manifest's volumes_left_out is not a list of volumes")
    for volume, why in left_out.items():
        if not (isinstance(why, str) and _printable(volume, 200) and _printable(why, 1000)):
            raise GitdError("refused: the manifest's volumes_left_out holds a bad entry")


def _printable(text: str, most: int) -> bool:
    return 0 < len(text) <= most and text.isprintable()


def _copy(fh, size: int, target: Path | None) -> dict:
    digest = hashlib.sha256()
    out = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                0o600), "wb")
    try:
        got = 0
        while chunk := fh.read(CHUNK):
            got += len(chunk)
            digest.update(chunk)
            if out:
                out.write(chunk)
        if got != size:
            raise GitdError("refused: a member is shorter than its header says (truncated)")
    finally:
        if out:
            out.close()
    return {"size": size, "sha256": digest.hexdigest()}


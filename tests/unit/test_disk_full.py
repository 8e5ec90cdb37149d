"""Disk full (issue #26): where gitd writes during a push, ENOSPC is a
GitdError that names the filesystem, and nothing half-written is left."""

from __future__ import annotations

import errno
import io
import os
import sqlite3

import pytest
from dulwich.objects import Blob, Tree
from dulwich.repo import MemoryRepo, Repo

from buildpacks import dockerfile
from gitd import packs
from gitd.core.errors import BuildError, DiskFull, GitdError, is_disk_full
from hooks import checkout
from tests.fakes import run_git as git


def test_disk_full_names_the_filesystem_and_what_is_free(tmp_path):
    error = DiskFull.at(tmp_path / "x", "the pushed pack was not stored")
    assert isinstance(error, GitdError)
    assert error.message.startswith("no space left on device: the pushed pack was not stored: "
                                    "the filesystem mounted at ")
    assert f"(holding {tmp_path / 'x'})" in error.message
    assert "KiB free" in error.message


def test_what_counts_as_disk_full():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(ValueError("No space left on device"))


@pytest.fixture()
def pack_stream(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    git(source, "init", "-q", "-b", "main")
    (source / "a.txt").write_text("a\n" * 1000)
    git(source, "add", "-A")
    git(source, "commit", "-qm", "one")
    return git(source, "pack-objects", "--all", "--stdout", "-q").stdout


def receiving_store(tmp_path):
    repo = Repo.init_bare(str(tmp_path / "store.git"), mkdir=True)
    return packs.ReceivingObjectStore.from_config(repo.object_store.path, repo.get_config())


def no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fails", ["extend_pack", "write_pack_index"])
def test_a_pack_that_does_not_fit_is_refused_in_words_and_leaves_nothing(
        tmp_path, pack_stream, monkeypatch, fails):
    """The pack itself (extended as it is written), or its index after the
    pack was moved in: no tmp_pack_ file, no pack without its index."""
    store = receiving_store(tmp_path)
    monkeypatch.setattr(packs, fails, no_space)
    stream = io.BytesIO(pack_stream)
    with pytest.raises(OSError) as raised:  # what dulwich reports as the unpack status
        store.add_thin_pack(stream.read, lambda n: stream.read(min(n, 65536)))
    assert str(raised.value).startswith("no space left on device: the pushed pack was not stored")
    assert store.path in str(raised.value)
    assert os.listdir(os.path.join(store.path, "pack")) == []
    assert not [n for n in os.listdir(store.path) if n.startswith("tmp_")]


def test_another_error_storing_the_pack_is_left_as_it_was(tmp_path, pack_stream, monkeypatch):
    store = receiving_store(tmp_path)
    monkeypatch.setattr(packs, "write_pack_index", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EIO, "Input/output error")))
    stream = io.BytesIO(pack_stream)
    with pytest.raises(OSError) as raised:
        store.add_thin_pack(stream.read, lambda n: stream.read(min(n, 65536)))
    assert not isinstance(raised.value, packs.PackNotStored)
    assert os.listdir(os.path.join(store.path, "pack")) == []


def test_a_checkout_that_does_not_fit_says_so(tmp_path, monkeypatch):
    repo = MemoryRepo()
    blob = Blob.from_string(b"data")
    tree = Tree()
    tree.add(b"file", 0o100644, blob.id)
    repo.object_store.add_objects([(blob, None), (tree, None)])
    monkeypatch.setattr(checkout.Path, "write_bytes", no_space)
    with pytest.raises(DiskFull, match="the pushed tree could not be checked out"):
        checkout.export(repo, tree, tmp_path / "src")


def test_a_build_whose_output_tells_of_a_full_disk_says_so():
    lines = []
    watch = dockerfile._DiskFullWatch(lines.append)
    watch.emit("Step 2/3 : RUN dd if=/dev/zero of=/data/x")
    assert not watch.seen
    watch.emit("dd: error writing '/data/x': No space left on device")
    assert watch.seen
    assert len(lines) == 2  # every line still passes on
    with pytest.raises(BuildError):
        dockerfile._handle_chunk({"error": "The command ... returned a non-zero code: 1"},
                                 watch.emit)

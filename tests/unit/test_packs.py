"""gitd.packs: pack entries copied as stored make packs git accepts; a pushed
pack stream is read as dulwich reads it, and a broken one is refused."""

import hashlib
import io
import os
import zlib

import pytest
from dulwich.errors import ChecksumMismatch
from dulwich.pack import PackStreamCopier
from dulwich.repo import Repo

from gitd import packs
from tests.fakes import run_git as git


@pytest.mark.parametrize("distance", [1, 127, 128, 16511, 16512, 2 ** 21, 2 ** 35 + 7])
def test_ofs_delta_distances_round_trip(distance):
    encoded = packs._ofs(distance)
    assert packs._parse_ofs(memoryview(bytes(encoded)), 0) == (distance, len(encoded))


@pytest.mark.parametrize("kind,size", [(1, 0), (3, 15), (3, 16), (6, 2 ** 20 + 3), (7, 2 ** 40)])
def test_entry_headers_round_trip(kind, size):
    encoded = bytes(packs._header(kind, size))
    assert packs._parse_header(memoryview(encoded)) == (kind, size, len(encoded))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """30 commits packed with OFS deltas; made once (about 60 git runs): the tests only read it."""
    path = tmp_path_factory.mktemp("packs") / "r"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    body = "".join(f"line {n}\n" for n in range(300))
    for n in range(30):
        (path / f"f{n % 4}.txt").write_text(body + f"change {n}\n")
        git(path, "add", "-A")
        git(path, "commit", "-qm", f"c{n}")
    git(path, "repack", "-adq")  # one pack with OFS deltas
    return path


def index_pack(tmp_path, data: bytes) -> list[str]:
    """What `git index-pack` makes of a pack stream: its object names."""
    check = tmp_path / "check"
    check.mkdir()
    git(check, "init", "-q", "--bare")
    target = check / "out.pack"
    target.write_bytes(data)
    git(check, "index-pack", str(target))
    listed = git(check, "verify-pack", "-v", str(target.with_suffix(".idx")), text=True).stdout
    return sorted(line.split()[0] for line in listed.splitlines() if len(line.split()[0]) == 40)


@pytest.mark.parametrize("share", ["all", "some"])
def test_written_packs_hold_exactly_the_objects_asked_for(repo, tmp_path, share):
    store = Repo(str(repo)).object_store
    everything = sorted(sha for sha in store)
    wanted = everything if share == "all" else everything[::5]
    out = []
    packs.write_pack_reusing(out.append, store, [(sha, None) for sha in wanted])
    assert index_pack(tmp_path, b"".join(out)) == sorted(s.decode() for s in wanted)


def stream_records(copier_class, data: bytes, chunk: int = 65536):
    """What a copier records from `data` arriving `chunk` bytes at a time."""
    f = io.BytesIO(data)
    recorded = []

    class Recorder:
        def record(self, u):
            recorded.append((u.offset, u.pack_type_num, u.delta_base, u.decomp_len,
                             b"".join(u.decomp_chunks)))

    out = io.BytesIO()
    copier = copier_class(hashlib.sha1, f.read, lambda n: f.read(min(n, chunk)), out,
                          delta_iter=Recorder())
    copier.verify()
    assert out.getvalue() == data
    return recorded, len(copier)


@pytest.fixture(scope="module")
def pack_stream(repo):
    return git(repo, "pack-objects", "--all", "--stdout", "-q", "--delta-base-offset").stdout


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536])
def test_the_stream_reader_records_what_dulwichs_does(pack_stream, chunk):
    assert stream_records(packs._PackStreamCopier, pack_stream, chunk) == \
        stream_records(PackStreamCopier, pack_stream)


def test_the_stream_reader_takes_ref_deltas(repo):
    data = git(repo, "pack-objects", "--all", "--stdout", "-q").stdout  # REF_DELTA bases
    assert stream_records(packs._PackStreamCopier, data) == stream_records(PackStreamCopier, data)


@pytest.mark.parametrize("cut", [0, 5, 12, 13, 100, -21, -20, -1])
def test_a_truncated_stream_is_refused(pack_stream, cut):
    with pytest.raises((zlib.error, ChecksumMismatch, AssertionError)):
        stream_records(packs._PackStreamCopier, pack_stream[:cut])


def test_a_wrong_checksum_or_trailing_bytes_are_refused(pack_stream):
    with pytest.raises(ChecksumMismatch):
        stream_records(packs._PackStreamCopier, pack_stream[:-1] + bytes([pack_stream[-1] ^ 1]))
    with pytest.raises(ChecksumMismatch):
        stream_records(packs._PackStreamCopier, pack_stream + b"x" * 30)


@pytest.mark.parametrize("flip", [12, 13, 40, 200, 1000])
def test_a_corrupted_stream_is_refused(pack_stream, flip):
    data = bytearray(pack_stream)
    data[flip] ^= 0x5A
    with pytest.raises((zlib.error, ChecksumMismatch, ValueError)):
        stream_records(packs._PackStreamCopier, bytes(data))


def test_a_pushed_tree_that_does_not_parse_is_refused():
    from dulwich.errors import ObjectFormatException
    from dulwich.pack import UnpackedObject

    # made as ReceivingObjectStore makes it (no object format: dulwich's default)
    indexer = packs._ValidatingIndexer(io.BytesIO(), hashlib.sha1, resolve_ext_ref=None)
    broken = UnpackedObject(2, decomp_len=14)
    broken.obj_type_num, broken.obj_chunks = 2, [b"100644 x\x00abc"]  # a name without its id
    with pytest.raises(ObjectFormatException):
        indexer._result(broken)


def received(tmp_path, data: bytes):
    """The pack stream received by gitd's store: its index, as git reads it."""
    store_repo = Repo.init_bare(str(tmp_path / "store.git"), mkdir=True)
    store = packs.ReceivingObjectStore.from_config(store_repo.object_store.path,
                                                   store_repo.get_config())
    stream = io.BytesIO(data)
    pack = store.add_thin_pack(stream.read, lambda n: stream.read(min(n, 65536)))
    listed = git(tmp_path, "verify-pack", "-v", pack.data.path.replace(".pack", ".idx"),
                 text=True).stdout
    return sorted(line.split()[0] for line in listed.splitlines() if len(line.split()[0]) == 40)


@pytest.mark.parametrize("repetitive", [False, True])  # True: inflates in many steps per read
@pytest.mark.parametrize("delta_on_it", [False, True])
def test_a_large_blob_is_hashed_as_it_streams_and_indexed_right(tmp_path, delta_on_it,
                                                                 repetitive):
    """A blob over STREAMED_BLOB_BYTES is never held whole; one that is the
    base of a delta in the same pack is inflated again for it."""
    path = tmp_path / "big"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    size = packs.STREAMED_BLOB_BYTES + 4096
    big = hashlib.sha256(b"seed").digest() * (size // 32) if repetitive else os.urandom(size)
    (path / "big.bin").write_bytes(big)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "big")
    if delta_on_it:  # a small change: git stores one version as a delta of the other
        (path / "big.bin").write_bytes(big[:-100] + b"changed" + big[-93:])
        git(path, "commit", "-qam", "changed")
    data = git(path, "pack-objects", "--stdout", "--revs", "--delta-base-offset",
               input=b"HEAD\n").stdout
    assert received(tmp_path, data) == index_pack(tmp_path, data)

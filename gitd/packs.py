"""Packs in and out, with less per-object Python work than dulwich's defaults.

Out: upload-pack's pack is written by copying stored pack entries as they are.

dulwich's own writer inflates every object (and every reusable delta), then
deflates it again, one Python call chain per object: a clone of a real
project's history spent most of its time there. Stored entries are already
what the client wants: a whole object is copied byte for byte, a delta is
copied with its header rewritten to point at its base's new place in the
stream. Only an object whose stored delta base is not sent (or is stored in
another pack) is written whole, through dulwich. A plain clone of a
repository kept in one pack gets that pack file as it is.

In: see ReceivingObjectStore.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import struct
import tempfile
import zlib
from binascii import hexlify, unhexlify
from bisect import bisect_right
from contextlib import suppress

from dulwich.file import GitFile
from dulwich.object_store import PACK_MODE, DiskObjectStore, _bound_read_callables
from dulwich.errors import ObjectFormatException
from dulwich.object_format import DEFAULT_OBJECT_FORMAT
from dulwich.objects import Blob, ShaFile, Tree, object_class, parse_tree, sha_to_hex
from dulwich.errors import ApplyDeltaError, ChecksumMismatch
from dulwich.pack import (Pack, PackData, PackIndexer, PackStreamCopier, UnpackedObject,
                          apply_delta, extend_pack, write_pack_index)

from gitd.core.errors import DiskFull, is_disk_full

OFS_DELTA = 6
REF_DELTA = 7
FLUSH_BYTES = 1 << 20
INFLATED_KEEP_BYTES = 128 << 20  # inflated objects kept between the two passes of a receive
STREAMED_BLOB_BYTES = 8 << 20  # a received blob larger than this is never held whole
INFLATE_STEP = 1 << 20  # inflated at most at once while receiving
DELTA_CHAIN_LIMIT = 10_000  # bases followed to find a delta's type


class _PackEntries:
    """Where the objects of one stored pack start and end: from the whole
    index for a large share of the pack, else looked up one by one."""

    def __init__(self, pack, shas: list):
        self.offsets: dict[bytes, int] = {}
        self.sha_at: dict[int, bytes] = {}
        index = pack.index
        self.starts = None
        if len(shas) * 8 >= len(index):
            for binsha, offset, _crc in index.iterentries():
                sha = hexlify(binsha)
                self.offsets[sha] = offset
                self.sha_at[offset] = sha
            self.starts = sorted(self.sha_at)
        else:  # a small fetch: only its objects (a delta's base outside them goes whole)
            for sha in shas:
                with suppress(KeyError):
                    offset = index.object_offset(sha)
                    self.offsets[sha] = offset
                    self.sha_at[offset] = sha
        with open(pack.data.path, "rb") as f:
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.end = len(self.data) - 20  # the trailer checksum

    def entry(self, offset: int) -> memoryview:
        view = memoryview(self.data)
        if self.starts is not None:
            i = bisect_right(self.starts, offset)
            return view[offset:self.starts[i] if i < len(self.starts) else self.end]
        kind, _size, body = _parse_header(view[offset:offset + 32])
        if kind == OFS_DELTA:
            body = _parse_ofs(view[offset:offset + 64], body)[1]
        elif kind == REF_DELTA:
            body += 20
        inflate = zlib.decompressobj()
        at = offset + body
        while not inflate.eof and at < self.end:
            chunk_end = min(at + 65536, len(self.data))
            inflate.decompress(view[at:chunk_end], 1 << 20)
            while inflate.unconsumed_tail and not inflate.eof:
                inflate.decompress(inflate.unconsumed_tail, 1 << 20)
            at = chunk_end
        if not inflate.eof:
            raise ValueError(f"truncated pack entry at {offset}")
        return view[offset:at - len(inflate.unused_data)]

    def close(self) -> None:
        try:
            self.data.close()
        except BufferError:  # a view is still referenced: unmapped when collected
            pass


def _parse_header(raw: memoryview) -> tuple[int, int, int]:
    """(type, inflated size, header length) of a stored entry."""
    byte = raw[0]
    kind = (byte >> 4) & 7
    size = byte & 15
    shift, i = 4, 1
    while byte & 0x80:
        byte = raw[i]
        size |= (byte & 0x7F) << shift
        shift += 7
        i += 1
    return kind, size, i


def _parse_ofs(raw: memoryview, i: int) -> tuple[int, int]:
    """(distance back to the base, end of the field) of an OFS_DELTA."""
    byte = raw[i]
    distance = byte & 0x7F
    i += 1
    while byte & 0x80:
        byte = raw[i]
        distance = ((distance + 1) << 7) | (byte & 0x7F)
        i += 1
    return distance, i


def _header(kind: int, size: int) -> bytearray:
    out = bytearray()
    byte = (kind << 4) | (size & 15)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return out


def _ofs(distance: int) -> bytearray:
    out = bytearray([distance & 0x7F])
    distance >>= 7
    while distance:
        distance -= 1
        out.insert(0, 0x80 | (distance & 0x7F))
        distance >>= 7
    return out


def _stored_packs(container) -> list:
    return list(getattr(container, "packs", []))


def object_info(store, sha: bytes) -> tuple[int, int]:
    """(type, inflated size) of a stored object without inflating it: from
    its pack entry's header (a delta's size from the delta's own header,
    its first bytes inflated; its type from its base's entry) or from a
    loose object's header. A whole blob may be gigabytes."""
    for pack in _stored_packs(store):
        try:
            offset = pack.index.object_offset(sha)
        except KeyError:
            continue
        with open(pack.data.path, "rb") as f:
            return _entry_info(store, f, offset)
    loose = _loose_info(store, sha)
    if loose is not None:
        return loose
    kind, data = store.get_raw(sha)  # a store of another kind (in memory)
    return kind, len(data)


def _entry_info(store, f, offset: int) -> tuple[int, int]:
    size = None  # a delta's: its result's
    for _ in range(DELTA_CHAIN_LIMIT):
        head = os.pread(f.fileno(), 64, offset)
        kind, entry_size, body = _parse_header(head)
        if kind not in (OFS_DELTA, REF_DELTA):
            return kind, entry_size if size is None else size
        if kind == OFS_DELTA:
            distance, body = _parse_ofs(head, body)
        else:
            body += 20
        if size is None:
            size = _delta_target_size(f, offset + body)
        if kind == REF_DELTA:
            return object_info(store, hexlify(head[body - 20:body]))[0], size
        offset -= distance
    raise ValueError(f"delta chain longer than {DELTA_CHAIN_LIMIT} entries")


def _delta_target_size(f, at: int) -> int:
    """A delta starts with two sizes (its base's, then its result's), each
    a little-endian base-128 number: only those bytes are inflated."""
    inflate = zlib.decompressobj()
    out = b""
    while not inflate.eof and len(out) < 20:
        chunk = inflate.unconsumed_tail or os.pread(f.fileno(), 4096, at)
        if not inflate.unconsumed_tail:
            if not chunk:
                break
            at += len(chunk)
        out += inflate.decompress(chunk, 20 - len(out))
    sizes, i = [], 0
    for _ in range(2):
        value, shift = 0, 0
        while True:
            byte = out[i]
            value |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        sizes.append(value)
    return sizes[1]


def _loose_info(store, sha: bytes) -> tuple[int, int] | None:
    """A loose object's header (`blob 1234\\0`), the first bytes inflated."""
    path_of = getattr(store, "_get_shafile_path", None)
    if path_of is None:
        return None
    try:
        f = open(path_of(sha), "rb")
    except FileNotFoundError:
        return None
    with f:
        inflate = zlib.decompressobj()
        out = b""
        while b"\0" not in out and len(out) < 64 and not inflate.eof:
            chunk = inflate.unconsumed_tail or f.read(4096)
            if not chunk:
                break
            out += inflate.decompress(chunk, 64 - len(out))
    name, _, size = out.split(b"\0", 1)[0].partition(b" ")
    return object_class(name).type_num, int(size)


def stored_ids(store, but: frozenset = frozenset()) -> set[bytes]:
    """Every object the store holds, by hex id, from its pack indexes and
    its loose objects' file names: none is read. `but`: packs (pack_names)
    left out."""
    ids: set[bytes] = set()
    for pack in _stored_packs(store):
        if os.path.basename(pack._basename) not in but:
            ids.update(hexlify(binsha) for binsha, _offset, _crc in pack.index.iterentries())
    ids.update(getattr(store, "_iter_loose_objects", lambda: ())())
    return ids


def count_in_packs(store, but: frozenset = frozenset()) -> int:
    """How many objects the store's packs (but `but`) hold, from their indexes' headers."""
    return sum(len(pack.index) for pack in _stored_packs(store)
               if os.path.basename(pack._basename) not in but)


def pack_names(store) -> frozenset:
    """The packs the store reads: those whose index is in place too (a pack
    is moved in before its index)."""
    return frozenset(os.path.basename(pack._basename) for pack in _stored_packs(store))


def stored_listing(store) -> tuple[frozenset, frozenset]:
    """(pack_names, loose object ids): what the store holds, named, from one look."""
    return pack_names(store), frozenset(getattr(store, "_iter_loose_objects", lambda: ())())


def _whole_pack(container, shas: list):
    """The one stored pack that holds exactly `shas`, if there is one."""
    stored = _stored_packs(container)
    if len(stored) != 1 or len(stored[0].index) != len(shas):
        return None
    held = {hexlify(binsha) for binsha, _offset, _crc in stored[0].index.iterentries()}
    return stored[0] if held == set(shas) else None


def write_pack_reusing(write, container, object_ids, object_format=None) -> None:
    """Drop-in for dulwich.pack.write_pack_from_container: the same pack
    content, written from the stored entries."""
    shas = [oid for oid, _hint in object_ids] if object_ids and isinstance(object_ids[0], tuple) \
        else list(object_ids)
    whole = _whole_pack(container, shas)
    if whole is not None:  # a clone of a repository kept in one pack: the pack as it is
        with open(whole.data.path, "rb") as f:
            while chunk := f.read(FLUSH_BYTES):
                write(chunk)
        return
    wanted = set(shas)
    packs = [_PackEntries(p, shas) for p in _stored_packs(container)]
    try:
        placed: list[tuple[int, int, bytes]] = []  # (pack index, offset, sha)
        loose: list[bytes] = []
        for sha in shas:
            for n, pack in enumerate(packs):
                offset = pack.offsets.get(sha)
                if offset is not None:
                    placed.append((n, offset, sha))
                    break
            else:
                loose.append(sha)
        where = {sha: n for n, _, sha in placed}
        placed.sort()  # stored order: a pack's bases come before their OFS deltas
        checksum = hashlib.sha1()
        buf = bytearray(b"PACK" + struct.pack(">LL", 2, len(placed) + len(loose)))
        written: dict[bytes, int] = {}  # sha -> offset in the stream
        position = 0

        def emit(*parts) -> None:
            nonlocal position, buf
            for part in parts:
                buf += part
                position += len(part)
            if len(buf) >= FLUSH_BYTES:
                flush()

        def flush() -> None:
            nonlocal buf
            if buf:
                data = bytes(buf)
                checksum.update(data)
                write(data)
                buf = bytearray()

        position = len(buf)
        for n, offset, sha in placed:
            pack = packs[n]
            raw = pack.entry(offset)
            kind, size, head = _parse_header(raw)
            start = position
            if kind in (OFS_DELTA, REF_DELTA):
                if kind == OFS_DELTA:
                    distance, body = _parse_ofs(raw, head)
                    base = pack.sha_at.get(offset - distance)
                else:
                    base, body = hexlify(raw[head:head + 20]), head + 20
                if base in wanted and where.get(base) == n:
                    if base in written:
                        emit(_header(OFS_DELTA, size), _ofs(start - written[base]), raw[body:])
                    else:  # a base stored later (a completed thin pack): by name
                        emit(_header(REF_DELTA, size), unhexlify(base), raw[body:])
                else:
                    emit(*_whole(container, sha))
            else:
                emit(raw)
            written[sha] = start
        for sha in loose:
            emit(*_whole(container, sha))
        flush()
        write(checksum.digest())
    finally:
        for pack in packs:
            pack.close()


def _whole(container, sha: bytes) -> tuple[bytes, bytes]:
    kind, data = container.get_raw(sha)
    return bytes(_header(kind, len(data))), zlib.compress(data, 1)


# receive-pack

class _ValidatingIndexer(PackIndexer):
    """Index entries, and the check dulwich otherwise makes in a second full
    pass over the stored pack (every commit, tree and tag must parse), made
    while each object is resolved anyway. Blobs need no parsing.

    The copy pass has already inflated every object: up to `keep_bytes` of
    that is kept, so resolving deltas need not inflate it again."""

    def __init__(self, *args, keep_bytes: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._inflated: dict[int, UnpackedObject] = {}
        self._keep_bytes = keep_bytes
        self.streamed: dict[int, bytes] = {}  # offset -> sha of a large blob hashed by the copier

    def record(self, unpacked):
        if unpacked.offset in self.streamed:
            return  # indexed from its sha unless a delta needs it whole (_walk_all_chains)
        super().record(unpacked)
        if unpacked.decomp_chunks is not None and unpacked.decomp_len <= self._keep_bytes:
            self._keep_bytes -= unpacked.decomp_len
            unpacked.comp_chunks = None
            self._inflated[unpacked.offset] = unpacked

    def _walk_all_chains(self):
        for offset, sha in self.streamed.items():
            if offset in self._pending_ofs or sha in self._pending_ref:
                self._full_ofs.append((offset, Blob.type_num))  # a delta's base: inflated again
            else:
                yield sha, offset, None
        yield from super()._walk_all_chains()

    def _resolve_object(self, offset, obj_type_num, base_chunks):
        unpacked = self._inflated.pop(offset, None)
        if unpacked is None:
            return super()._resolve_object(offset, obj_type_num, base_chunks)
        if base_chunks is None:
            if unpacked.pack_type_num != obj_type_num:
                raise ApplyDeltaError(f"object at {offset} is not of the type expected")
            unpacked.obj_type_num, unpacked.obj_chunks = obj_type_num, unpacked.decomp_chunks
        else:
            unpacked.obj_type_num = obj_type_num
            unpacked.obj_chunks = apply_delta(base_chunks, unpacked.decomp_chunks)
            if obj_type_num != Blob.type_num and not sum(map(len, unpacked.obj_chunks)):
                raise ApplyDeltaError(f"delta resolved to empty payload for type {obj_type_num}")
        return unpacked

    def _result(self, unpacked):
        if unpacked.obj_type_num == Tree.type_num:  # what Tree parses, without a Tree per object
            try:
                parse_tree(b"".join(unpacked.obj_chunks),
                           sha_len=(self._object_format or DEFAULT_OBJECT_FORMAT).oid_length)
            except ValueError as exc:
                raise ObjectFormatException(exc) from exc
        elif unpacked.obj_type_num != Blob.type_num:
            ShaFile.from_raw_chunks(unpacked.obj_type_num, unpacked.obj_chunks,
                                    object_format=self._object_format)
        return super()._result(unpacked)


def _with_crc32(f, entries: list) -> list:
    """Objects resolved from what the copy pass inflated have no CRC32 of
    their stored bytes yet: computed here, over the pack file, in C."""
    if all(crc is not None for _sha, _offset, crc in entries):
        return entries
    size = os.fstat(f.fileno()).st_size
    with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as data:
        starts = sorted(offset for _sha, offset, _crc in entries)
        ends = dict(zip(starts, starts[1:] + [size - 20]))
        return [(sha, offset, crc if crc is not None else _crc32(f, data, offset, ends[offset]))
                for sha, offset, crc in entries]


def _crc32(f, data: mmap.mmap, start: int, end: int) -> int:
    """A large entry is read in parts rather than mapped: mapped pages
    count in the daemon's resident memory until they are unmapped."""
    if end - start <= FLUSH_BYTES:
        return zlib.crc32(data[start:end])
    crc = 0
    for at in range(start, end, FLUSH_BYTES):
        crc = zlib.crc32(os.pread(f.fileno(), min(FLUSH_BYTES, end - at), at), crc)
    return crc


class _PackStreamCopier(PackStreamCopier):
    """dulwich's PackStreamCopier with its per-object read path replaced:
    dulwich hands each object 64 KiB of the stream, then builds a new buffer
    from what zlib left unused and the rest (copies and a dozen Python calls
    per object). Here the stream sits in one buffer read through an offset,
    and zlib is given the object's data a window at a time. The wire is read
    only for bytes that must exist: never past the pack's trailer."""

    SLACK = 256  # zlib's framing beyond the data; a stream longer than that is fed in turns

    def read_objects(self, compute_crc32: bool = False):
        buf = bytearray()
        pos = 0

        def ensure(n: int) -> None:
            nonlocal buf
            while len(buf) - pos < n:
                data = self._read(self.read_some, max(n - (len(buf) - pos), 65536))
                if not data:
                    raise zlib.error("EOF before the end of the pack")
                buf += data

        def varint_end(at: int) -> int:
            ensure(at - pos + 1)
            while buf[at] & 0x80:
                at += 1
                ensure(at - pos + 1)
            return at + 1

        streamed = getattr(self._delta_iter, "streamed", None)
        ensure(12)
        if bytes(buf[:4]) != b"PACK" or struct.unpack(">L", buf[4:8])[0] not in (2, 3):
            raise AssertionError("not a pack stream")
        self._num_objects = struct.unpack(">L", buf[8:12])[0]
        pos = 12
        for _ in range(self._num_objects):
            if pos > (1 << 20):  # what was read is let go of between objects
                del buf[:pos]
                pos = 0
            offset = self._offset - (len(buf) - pos)
            ensure(20)  # an entry and the trailer follow: these bytes exist
            end = varint_end(pos)
            kind, size, _ = _parse_header(buf[pos:end])
            pos = end
            if kind == OFS_DELTA:
                end = varint_end(pos)
                delta_base = _parse_ofs(buf[pos:end], 0)[0]
                pos = end
            elif kind == REF_DELTA:
                ensure(20)
                delta_base = bytes(buf[pos:pos + 20])
                pos += 20
            elif kind in (1, 2, 3, 4):
                delta_base = None
            else:
                raise zlib.error(f"unknown object type {kind} in the pack")
            unpacked = UnpackedObject(kind, delta_base=delta_base, decomp_len=size,
                                      hash_func=self.hash_func)
            # a large blob is hashed as it streams by, not held (see _ValidatingIndexer)
            hashed = None
            if kind == Blob.type_num and size > STREAMED_BLOB_BYTES and streamed is not None:
                hashed = self.hash_func(b"blob %d\x00" % size)
            keep = hashed.update if hashed else unpacked.decomp_chunks.append
            inflate = zlib.decompressobj()
            got = 0
            while not inflate.eof:
                ensure(1)
                fed = min(len(buf) - pos, size - got + self.SLACK)
                with memoryview(buf) as view, view[pos:pos + fed] as window:
                    out = inflate.decompress(window, min(size - got + 1, INFLATE_STEP))
                    while True:
                        got += len(out)
                        if got > size:
                            raise zlib.error("decompressed data exceeds expected size")
                        if out:
                            keep(out)
                        if not inflate.unconsumed_tail or inflate.eof:
                            break
                        out = inflate.decompress(inflate.unconsumed_tail,
                                                 min(size - got + 1, INFLATE_STEP))
                pos += fed - len(inflate.unused_data)
                if hashed and pos > (1 << 20):  # a large object's stream is let go of as it goes
                    del buf[:pos]
                    pos = 0
            if got != size:
                raise zlib.error("decompressed data does not match expected size")
            unpacked.offset = offset
            if hashed:
                streamed[offset] = hashed.digest()
            yield unpacked
        ensure(20)
        if len(buf) - pos != 20:
            raise ChecksumMismatch(self.sha.hexdigest(), "bytes after the pack's checksum")
        pack_sha = bytes(self._trailer)
        if pack_sha != self.sha.digest():
            raise ChecksumMismatch(sha_to_hex(pack_sha), self.sha.hexdigest())


class ReceivingObjectStore(DiskObjectStore):
    """dulwich's object store, receiving a pushed pack in two passes over it
    (copy, then index and check) instead of three."""

    def add_thin_pack(self, read_all, read_some, progress=None, *, max_input_size=None):
        if max_input_size:
            read_all, read_some = _bound_read_callables(read_all, read_some, max_input_size)
        fd, path = tempfile.mkstemp(dir=self.path, prefix="tmp_pack_")
        try:
            with os.fdopen(fd, "w+b") as f:
                os.chmod(path, PACK_MODE)
                indexer = _ValidatingIndexer(f, self.object_format.hash_func,
                                             resolve_ext_ref=self.get_raw,
                                             keep_bytes=INFLATED_KEEP_BYTES)
                copier = _PackStreamCopier(self.object_format.hash_func, read_all, read_some, f,
                                          delta_iter=indexer)
                copier.verify(progress=progress)
                f.flush()
                f.seek(0)
                with PackData(path, file=f, object_format=self.object_format) as data:
                    indexer.set_pack_data(data)
                    entries, ext_refs = self._index_pack(indexer, len(copier))
                entries = _with_crc32(f, entries)
                # the bases a thin pack left out are appended from this store
                pack_sha, extra = extend_pack(f, ext_refs, get_raw=self.get_raw,
                                              compression_level=self.pack_compression_level,
                                              object_format=self.object_format)
                f.flush()
            return self._move_in(path, entries + extra, pack_sha)
        except BaseException as exc:  # no temp pack is left, whatever failed
            with suppress(FileNotFoundError):
                os.remove(path)
            if is_disk_full(exc):
                raise PackNotStored(self.path) from exc
            raise

    def _move_in(self, path: str, entries: list, pack_sha: bytes) -> Pack:
        entries.sort()
        base = self._get_pack_basepath(entries)
        name = os.path.basename(base)[len("pack-"):].encode("ascii")
        for pack in self.packs:
            if pack.name() == name:  # already here
                os.remove(path)
                return pack
        os.rename(path, base + ".pack")
        try:
            with GitFile(base + ".idx", "wb", mask=PACK_MODE,
                         fsync=self.fsync_object_files) as index:
                write_pack_index(index, entries, pack_sha, version=self.pack_index_version)
        except BaseException:  # a pack without its index is no object anyone can read
            with suppress(FileNotFoundError):
                os.remove(base + ".pack")
            raise
        pack = Pack(base, object_format=self.object_format)
        pack.check_length_and_checksum()
        self._add_cached_pack(os.path.basename(base), pack)
        return pack


class PackNotStored(OSError):
    """The pushed pack did not fit: dulwich reports an OSError's text as
    the push's unpack status, so this one's text names the filesystem."""

    def __init__(self, objects_dir: str):
        super().__init__(errno.ENOSPC, DiskFull.at(objects_dir, "the pushed pack was not "
                                                   "stored").message)

    def __str__(self) -> str:
        return self.strerror

"""Writing the pack upload-pack sends by copying stored pack entries as they are.

dulwich's own writer inflates every object (and every reusable delta), then
deflates it again, one Python call chain per object: a clone of a real
project's history spent most of its time there. Stored entries are already
what the client wants: a whole object is copied byte for byte, a delta is
copied with its header rewritten to point at its base's new place in the
stream. Only an object whose stored delta base is not sent (or is stored in
another pack) is written whole, through dulwich.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import zlib
from binascii import hexlify, unhexlify
from bisect import bisect_right

OFS_DELTA = 6
REF_DELTA = 7
FLUSH_BYTES = 1 << 20


class _PackEntries:
    """Where each object of one stored pack starts and ends."""

    def __init__(self, pack):
        self.offsets: dict[bytes, int] = {}
        self.sha_at: dict[int, bytes] = {}
        for binsha, offset, _crc in pack.index.iterentries():
            sha = hexlify(binsha)
            self.offsets[sha] = offset
            self.sha_at[offset] = sha
        self.starts = sorted(self.sha_at)
        with open(pack.data.path, "rb") as f:
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.end = len(self.data) - 20  # the trailer checksum

    def entry(self, offset: int) -> memoryview:
        i = bisect_right(self.starts, offset)
        end = self.starts[i] if i < len(self.starts) else self.end
        return memoryview(self.data)[offset:end]

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


def write_pack_reusing(write, container, object_ids, object_format=None) -> None:
    """Drop-in for dulwich.pack.write_pack_from_container: the same pack
    content, written from the stored entries."""
    shas = [oid for oid, _hint in object_ids] if object_ids and isinstance(object_ids[0], tuple) \
        else list(object_ids)
    wanted = set(shas)
    packs = [_PackEntries(p) for p in _stored_packs(container)]
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

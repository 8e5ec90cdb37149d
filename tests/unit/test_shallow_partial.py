"""gitd.shallow and gitd.partial: shallow boundaries and object filters with
git's meaning, on histories made in memory."""

import hashlib
import struct
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pytest
from dulwich.object_filters import parse_filter_spec
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob, Commit, Tag, Tree
from dulwich.repo import Repo

from gitd import packs, partial, reachable, shallow


def blob(store, data: bytes) -> bytes:
    b = Blob.from_string(data)
    store.add_object(b)
    return b.id


def tree(store, entries: dict) -> bytes:
    t = Tree()
    for name, (mode, sha) in entries.items():
        t.add(name, mode, sha)
    store.add_object(t)
    return t.id


def commit(store, tree_id: bytes, parents: list, n: int) -> bytes:
    c = Commit()
    c.tree, c.parents = tree_id, parents
    c.author = c.committer = b"t <t@t>"
    c.author_time = c.commit_time = 1_700_000_000 + n
    c.author_timezone = c.commit_timezone = 0
    c.message = f"c{n}".encode()
    store.add_object(c)
    return c.id


def project(store, n: int) -> bytes:
    """root: README (n bytes of x), src/ (main.c), src/lib/ (util.c)"""
    lib = tree(store, {b"util.c": (0o100644, blob(store, b"util %d" % n))})
    src = tree(store, {b"main.c": (0o100644, blob(store, b"main %d" % n)), b"lib": (0o40000, lib)})
    return tree(store, {b"README": (0o100644, blob(store, b"x" * n)), b"src": (0o40000, src)})


def linear(store, count: int) -> list[bytes]:
    shas = []
    for n in range(count):
        shas.append(commit(store, project(store, n + 1), shas[-1:], n))
    return shas


def test_find_shallow_takes_depth_from_the_heads_and_stops_at_our_boundary():
    store = MemoryObjectStore()
    c = linear(store, 6)
    assert shallow.find_shallow(store, [c[5]], 2) == ({c[4]}, {c[5]})
    assert shallow.find_shallow(store, [c[5]], 100) == (set(), set(c))  # the root has no parents
    # this repository is shallow at c[3]: the client's boundary is there too
    assert shallow.find_shallow(store, [c[5]], 100, frozenset({c[3]})) == ({c[3]}, {c[4], c[5]})


def test_find_shallow_judges_a_commit_at_its_smallest_depth():
    store = MemoryObjectStore()
    c = linear(store, 4)
    merge = commit(store, project(store, 9), [c[3], c[1]], 9)  # c[1] at depth 2 and 4
    boundary, above = shallow.find_shallow(store, [merge], 2)
    assert boundary == {c[3], c[1]} and above == {merge}


def test_a_pushed_boundary_is_recorded_only_where_a_parent_is_missing():
    store = MemoryObjectStore()
    c = linear(store, 3)
    orphan = commit(store, project(store, 7), [b"f" * 40], 7)  # its parent never arrived
    assert shallow.new_boundary(store, {c[2], orphan, b"e" * 40}, set()) == {orphan}
    assert shallow.new_boundary(store, {orphan}, {orphan}) == set()


def sent(store, wants: list[bytes]) -> list:
    """What a fetch of `wants` sends before filtering, with the finder's hints."""
    from gitd.missing import BoundedMissingObjectFinder
    return list(BoundedMissingObjectFinder(store, [], wants))


def kinds(store, objects: list) -> dict:
    names = {Commit.type_num: "commit", Tree.type_num: "tree", Blob.type_num: "blob"}
    out: dict = {}
    for sha, _hint in objects:
        out.setdefault(names[store[sha].type_num], set()).add(sha)
    return out


def test_tree_depth_is_counted_as_git_counts_it():
    store = MemoryObjectStore()
    c = linear(store, 3)
    everything = sent(store, [c[2]])
    root = {store[sha].tree for sha in c}
    for spec, expected_trees, blobs in (("tree:0", set(), 0), ("tree:1", root, 0),
                                        ("tree:2", None, 3 * 1)):
        kept = kinds(store, partial.filtered(store, everything, parse_filter_spec(spec)))
        assert kept["commit"] == set(c), spec  # the whole history, always
        if expected_trees is not None:
            assert kept.get("tree", set()) == expected_trees, spec
        else:  # root trees and src/ trees, not src/lib/
            assert len(kept["tree"]) == 6 and not any(
                b"util.c" in dict((n, s) for n, _m, s in store[t].iteritems()) for t in kept["tree"])
        assert len(kept.get("blob", ())) == blobs, spec


def test_blob_limit_omits_blobs_of_the_limit_and_more():
    store = MemoryObjectStore()
    c = linear(store, 1)
    kept = kinds(store, partial.filtered(store, sent(store, c), parse_filter_spec("blob:limit=6")))
    # README is 1 byte; main.c and util.c are 6 bytes ("main 1", "util 1"): omitted
    assert {store[b].data for b in kept["blob"]} == {b"x"}
    none = kinds(store, partial.filtered(store, sent(store, c), parse_filter_spec("blob:none")))
    assert "blob" not in none and len(none["tree"]) == 3


def test_combined_filters_omit_what_any_omits_and_sparse_is_refused():
    store = MemoryObjectStore()
    c = linear(store, 1)
    spec = parse_filter_spec("combine:tree:2+blob:none")
    kept = kinds(store, partial.filtered(store, sent(store, c), spec))
    assert "blob" not in kept and len(kept["tree"]) == 2
    assert partial.unsupported(spec) is None
    sparse = parse_filter_spec(b"sparse:oid=" + blob(store, b"src/\n"), object_store=store)
    assert partial.unsupported(sparse).startswith("sparse:oid")


BIG = 64 << 20


def _zero_blob_sha(size: int, tail: bytes = b"") -> bytes:
    digest = hashlib.sha1(b"blob %d\0" % (size + len(tail)))
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        digest.update(zeros)
    digest.update(tail)
    return digest.hexdigest().encode()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _big_pack(path: Path) -> tuple[bytes, bytes]:
    """A pack of a 64 MiB zero blob (whole) and the same plus one byte (an
    OFS delta against it); indexed by git. (whole sha, delta sha)"""
    deflate = zlib.compressobj(1)
    zeros = bytes(1 << 20)
    whole = packs._header(3, BIG) + b"".join(deflate.compress(zeros) for _ in range(BIG >> 20))
    whole += deflate.flush()
    # copy the base 64 KiB at a time (offset in 4 bytes, no size bytes: 64 KiB), insert "x"
    copies = b"".join(b"\x8f" + at.to_bytes(4, "little") for at in range(0, BIG, 1 << 16))
    delta = _varint(BIG) + _varint(BIG + 1) + copies + b"\x01x"
    entry = packs._header(packs.OFS_DELTA, len(delta)) + packs._ofs(len(whole)) + zlib.compress(delta)
    body = b"PACK" + struct.pack(">LL", 2, 2) + whole + entry
    pack = path / "objects" / "pack" / "pack-big.pack"
    pack.write_bytes(body + hashlib.sha1(body).digest())
    subprocess.run(["git", "index-pack", str(pack)], check=True, capture_output=True)
    return _zero_blob_sha(BIG), _zero_blob_sha(BIG, b"x")


def test_blob_limit_sizes_large_blobs_without_inflating_them(tmp_path):
    """A deployer's 64 MiB (or 4 GiB) zero blob is a few KB stored: a
    `blob:limit` clone must not make the daemon hold it inflated."""
    repo = Repo.init_bare(str(tmp_path / "r.git"), mkdir=True)
    whole, delta = _big_pack(tmp_path / "r.git")
    big_file = tmp_path / "zeros"
    with open(big_file, "wb") as f:
        f.truncate(BIG - 1)
    loose = subprocess.run(["git", "hash-object", "-w", str(big_file)], cwd=tmp_path / "r.git",
                           check=True, capture_output=True).stdout.strip()
    small = blob(repo.object_store, b"tiny")
    store = Repo(str(tmp_path / "r.git")).object_store
    assert store.contains_loose(loose) and not store.contains_loose(whole)

    tracemalloc.start()
    try:
        sizes = {sha: packs.object_info(store, sha) for sha in (whole, delta, loose, small)}
        kept = partial.filtered(store, [(whole, None), (delta, None), (loose, None),
                                        (small, None)], parse_filter_spec("blob:limit=1k"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sizes == {whole: (3, BIG), delta: (3, BIG + 1), loose: (3, BIG - 1), small: (3, 4)}
    assert kept == [(small, None)]
    assert peak < 1 << 20, peak


class CountingStore(MemoryObjectStore):
    def __init__(self):
        super().__init__()
        self.read: list[bytes] = []

    def __getitem__(self, sha):
        self.read.append(sha)
        return super().__getitem__(sha)


def test_only_what_the_refs_reach_may_be_wanted_by_id():
    """A commit force-pushed away (with a secret file) stays stored; it,
    its tree and its blob are refused by id, the history's are not."""
    store = MemoryObjectStore()
    c = linear(store, 4)
    secret_blob = blob(store, b"API_KEY=hunter2")
    gone = commit(store, tree(store, {b"secret": (0o100644, secret_blob)}), [c[3]], 9)
    gone_tree = store[gone].tree
    old_readme = store[store[c[0]].tree][b"README"][1]
    tips = [c[3]]  # the branch was forced back to c[3]
    assert reachable.unreachable(store, tips, [gone, gone_tree, secret_blob]) == \
        {gone, gone_tree, secret_blob}
    assert reachable.unreachable(store, tips, [c[0], old_readme]) == set()
    assert reachable.unreachable(store, tips, [b"1" * 40]) == {b"1" * 40}  # not held at all
    # an annotated tag reaches what it points at
    tag = Tag()
    tag.object, tag.name, tag.message = (Commit, gone), b"t", b"m"
    tag.tagger, tag.tag_time, tag.tag_timezone = b"t <t@t>", 1_700_000_000, 0
    store.add_object(tag)
    assert reachable.unreachable(store, [c[3], tag.id], [secret_blob]) == set()
    # a shallow repository's boundary has no parents here: below it is not reached
    assert reachable.unreachable(store, tips, [c[0]], frozenset({c[2]})) == {c[0]}
    assert reachable.unreachable(store, tips, [c[2]], frozenset({c[2]})) == set()


def test_a_checkout_blob_wanted_by_id_reads_the_tip_tree_only():
    store = CountingStore()
    c = linear(store, 50)
    readme = store[store[c[49]].tree][b"README"][1]
    store.read.clear()
    assert reachable.unreachable(store, [c[49]], [readme]) == set()
    assert c[49] in store.read and not set(store.read) & set(c[:49])  # no parent read
    # a wanted commit is walked to through commits alone
    store.read.clear()
    assert reachable.unreachable(store, [c[49]], [c[40]]) == set()
    read = list(store.read)
    assert all(isinstance(store[sha], Commit) for sha in read)


def _disk_repo(path: Path, commits: int) -> Repo:
    from tests.fakes import run_git
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    for n in range(commits):
        (path / "f.txt").write_text(f"{n}\n")
        run_git(path, "add", "-A")
        run_git(path, "commit", "-qm", f"c{n}", when=1_700_000_000 + n)
    run_git(path, "gc", "-q")
    return Repo(str(path))


def test_a_clone_remembers_every_object_reached_for_that_state_only(tmp_path):
    repo = _disk_repo(tmp_path / "r", 3)
    refs = repo.get_refs()
    stored = packs.stored_ids(repo.object_store)
    state = reachable.store_state(repo, refs)
    assert not reachable.known_all_reached(repo, state)
    reachable.remember_if_all_reached(repo, refs, state, sorted(stored)[1:])  # one object short
    assert not reachable.known_all_reached(repo, state)
    reachable.remember_if_all_reached(repo, refs, state, list(stored))
    assert reachable.known_all_reached(repo, state)
    # a force-push back: the same store, other refs
    forced = {**refs, b"refs/heads/main": repo[refs[b"refs/heads/main"]].parents[0]}
    assert not reachable.known_all_reached(repo, reachable.store_state(repo, forced))
    # an object stored since (a refused push's, say): not known, and a walk
    # begun before it came is not remembered
    stray = Blob.from_string(b"pushed, never referenced")
    repo.object_store.add_object(stray)
    assert not reachable.known_all_reached(repo, reachable.store_state(repo, refs))
    (Path(repo.controldir()) / reachable.ALL_REACHED_FILE).unlink()
    reachable.remember_if_all_reached(repo, refs, state, list(stored))
    assert not reachable.known_all_reached(repo, state)
    assert not reachable.known_all_reached(repo, reachable.store_state(repo, refs))


def _clone_walk(repo: Repo) -> None:
    """What a plain clone's walk remembers."""
    from dulwich.object_store import MissingObjectFinder
    refs = repo.get_refs()
    sent = [sha for sha, _ in MissingObjectFinder(repo.object_store, haves=[],
                                                   wants=list(set(refs.values())))]
    reachable.remember_if_all_reached(repo, refs, reachable.store_state(repo, refs), sent)


def _pushed(path: Path, repo: Repo, n: int, **files) -> bytes:
    """A commit made beside the repository and stored in it as a push would (a new pack)."""
    from tests.fakes import run_git
    (path / "f.txt").write_text(f"pushed {n}\n")
    for name, text in files.items():
        (path / name).write_text(text)
    run_git(path, "add", "-A")
    run_git(path, "commit", "-qm", f"p{n}", when=1_800_000_000 + n)
    return run_git(path, "rev-parse", "HEAD", text=True).stdout.strip().encode()


def test_every_object_reached_is_carried_over_a_fast_forward_and_nothing_else(tmp_path):
    """git commits in the repository itself: its objects and the branch's
    move are what a push stores and does."""
    from tests.fakes import run_git
    work = tmp_path / "r"
    repo = _disk_repo(work, 3)
    pushes = iter(range(100))

    def push(*extra, then=None) -> bool:
        carry = reachable.PushCarry(repo)
        _pushed(work, repo, next(pushes))
        for obj in extra:
            repo.object_store.add_object(obj)
        if then:
            then()
        carry.after_push()
        return reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))

    assert not push()  # not known before: nothing to carry
    _clone_walk(repo)
    assert push() and push()  # fast-forwards
    # a branch forced back past what it had: the commit is reached by nothing
    assert not push(then=lambda: run_git(work, "reset", "-q", "--hard", "HEAD~1"))
    _clone_walk(repo)
    assert not reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))
    run_git(work, "reflog", "expire", "--expire=now", "--all")
    run_git(work, "gc", "-q", "--prune=now")
    repo = Repo(str(work))
    _clone_walk(repo)  # all reached again once the commit is gone
    assert reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))
    # a push that stored an object no ref reaches
    assert not push(Blob.from_string(b"sent along, reached by nothing"))


def test_a_new_repository_is_all_reached_and_its_first_push_carries_that_over(tmp_path, monkeypatch):
    from gitd.gitserve import create_repo
    from tests.fakes import run_git

    repo = create_repo(tmp_path / "repos", "shop")
    assert reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))
    work = tmp_path / "work"
    _disk_repo(work, 3)
    carry = reachable.PushCarry(repo)
    run_git(work, "push", "-q", str(tmp_path / "repos" / "shop.git"), "main")
    carry.after_push()
    assert repo.get_refs()[b"refs/heads/main"]
    assert reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))
    # a push that stored more than CARRY_MOST_STORED objects is not even walked
    (work / "big.txt").write_text("big\n")
    run_git(work, "add", "-A")
    run_git(work, "commit", "-qm", "big", when=1_850_000_000)
    monkeypatch.setattr(reachable, "CARRY_MOST_STORED", 2)
    monkeypatch.setattr(reachable, "unreachable", lambda *a, **k: pytest.fail("walked"))
    carry = reachable.PushCarry(repo)
    run_git(work, "push", "-q", str(tmp_path / "repos" / "shop.git"), "main")
    carry.after_push()
    assert not reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))
    monkeypatch.undo()
    _clone_walk(repo)
    assert reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))
    # a push whose walk would meet more than CARRY_LIMIT objects is not carried
    (work / "more.txt").write_text("more\n")
    run_git(work, "add", "-A")
    run_git(work, "commit", "-qm", "more", when=1_900_000_000)
    monkeypatch.setattr(reachable, "CARRY_LIMIT", 1)
    carry = reachable.PushCarry(repo)
    run_git(work, "push", "-q", str(tmp_path / "repos" / "shop.git"), "main")
    carry.after_push()
    assert not reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))


UPLOAD_SHIM = '''\
import os, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from gitd import gitserve, reachable

walked = reachable.remember_if_all_reached
def counted(*args):
    with open({walks!r}, "a") as f:
        f.write("walk ")
    return walked(*args)
reachable.remember_if_all_reached = counted

class Out:
    def recv(self, size, timeout=None):
        return os.read(0, size)
    def write(self, data):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    def flush(self):
        sys.stdout.buffer.flush()
class Bridge(Out):
    def buffered(self):
        return Out()
    def write_err(self, data):
        sys.stderr.buffer.write(data)
gitserve.serve_upload_pack(gitserve.open_repo(Path(sys.argv[1]), sys.argv[2]), Bridge())
'''


def test_a_clone_skips_the_walk_only_where_every_stored_object_is_reached(tmp_path):
    """Through gitd's upload-pack and the real git client (git's ext::
    transport, no ssh): a refused push's pack, moved in before its index
    (as packs are stored), never comes with a clone, before or after."""
    import shutil
    import subprocess
    import sys

    from gitd.gitserve import create_repo
    from tests.fakes import run_git
    root = Path(__file__).resolve().parents[2]
    walks = tmp_path / "walks"
    shim = tmp_path / "shim.py"
    shim.write_text(UPLOAD_SHIM.format(root=str(root), walks=str(walks)))
    repos, work = tmp_path / "repos", tmp_path / "work"
    create_repo(repos, "app")
    _disk_repo(work, 3)
    run_git(work, "push", "-q", str(repos / "app.git"), "main")

    def clone(name: str, *args) -> Path:
        run_git(tmp_path, "-c", "protocol.ext.allow=always", "clone", "-q", "--mirror", *args,
                f"ext::{sys.executable} {shim} {repos} app", name)
        return tmp_path / name

    def walked() -> int:
        return walks.read_text().count("walk") if walks.exists() else 0

    run_git(clone("first"), "fsck", "--no-progress")
    assert walked() == 1  # git's own receive-pack stored the push: nothing carried
    run_git(clone("second"), "fsck", "--no-progress")
    assert walked() == 1  # every stored object was found reached: sent as stored
    secret = _pushed(work, None, 7, **{"secret.env": "API_KEY=hunter2\n"})
    good = run_git(work, "rev-parse", "HEAD~1", text=True).stdout.strip()
    name = run_git(work, "pack-objects", "-q", "--revs", str(tmp_path / "x"),
                   input=f"{secret.decode()}\n^{good}\n", text=True).stdout.strip()
    pack_dir = repos / "app.git" / "objects" / "pack"
    shutil.move(tmp_path / f"x-{name}.pack", pack_dir / f"pack-{name}.pack")  # its index not yet
    during = clone("during")
    assert walked() == 1  # a pack without its index is not stored yet: the shortcut, without it
    shutil.move(tmp_path / f"x-{name}.idx", pack_dir / f"pack-{name}.idx")  # and the push refused
    after = clone("after")
    assert walked() == 2  # stored now: a walk, which does not meet it
    again = clone("again")
    assert walked() == 3  # and so never the shortcut again
    for each in (during, after, again):
        assert subprocess.run(["git", "-C", str(each), "cat-file", "-e", secret.decode()]).returncode != 0
        run_git(each, "fsck", "--no-progress")
    shallow = clone("shallow", "--depth=1")  # never the shortcut: one commit
    assert run_git(shallow, "rev-list", "--count", "--all", text=True).stdout.strip() == "1"


def test_a_pack_stored_as_a_push_begins_is_checked_as_the_push_brought_it(tmp_path, monkeypatch):
    """Packs are stored without the app's lock: one that lands just after a
    push looked at the store (another, refused push's) is new to it, not old."""
    import shutil

    from gitd.gitserve import create_repo
    from tests.fakes import run_git
    repos, work = tmp_path / "repos", tmp_path / "work"
    repo = create_repo(repos, "app")
    _disk_repo(work, 2)
    run_git(work, "push", "-q", str(repos / "app.git"), "main")
    _clone_walk(repo)
    good = run_git(work, "rev-parse", "HEAD", text=True).stdout.strip()
    secret = _pushed(work, None, 8, **{"secret.env": "API_KEY=hunter2\n"}).decode()
    name = run_git(work, "pack-objects", "-q", "--revs", str(tmp_path / "x"),
                   input=f"{secret}\n^{good}\n", text=True).stdout.strip()
    run_git(work, "reset", "-q", "--hard", good)
    listing = packs.stored_listing

    def refused_push_lands_just_after(store):
        looked = listing(store)
        for ext in ("pack", "idx"):
            shutil.move(tmp_path / f"x-{name}.{ext}", Path(store.path) / "pack" / f"pack-{name}.{ext}")
        monkeypatch.setattr(packs, "stored_listing", listing)
        return looked
    monkeypatch.setattr(packs, "stored_listing", refused_push_lands_just_after)
    carry = reachable.PushCarry(repo)
    _pushed(work, None, 9)
    run_git(work, "push", "-q", str(repos / "app.git"), "main")  # a fast-forward
    carry.after_push()
    assert secret.encode() in packs.stored_ids(repo.object_store)
    assert not reachable.known_all_reached(repo, reachable.store_state(repo, repo.get_refs()))

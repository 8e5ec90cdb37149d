"""gitd backup / restore (issue #26) without Docker: the archive, its
manifest, and archives made to hurt (traversal, links, devices, truncation,
a flipped bit, a huge member, lies in the manifest)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile
from pathlib import Path

import pytest

from gitd import backup
from gitd.backup import archive
from gitd.core.config import load_settings
from gitd.core.errors import GitdError
from gitd.core.store import Store
from tests.fakes import FakeGitd, deployed


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data dir as gitd leaves it: a database, a repository, keys,
    certificates, and what a start makes again."""
    data = tmp_path / "data"
    (data / "repos" / "web.git" / "refs" / "heads").mkdir(parents=True)
    (data / "repos" / "web.git" / "refs" / "tags").mkdir()  # empty: kept
    (data / "repos" / "web.git" / "refs" / "heads" / "main").write_text("0" * 40 + "\n")
    (data / "ssh_host_ed25519_key").write_text("KEY")
    (data / "tls" / "custom").mkdir(parents=True)
    (data / "tls" / "acme.json").write_text('{"account": 1}')
    (data / "gitd.toml").write_text('domain = "example.test"\n')
    (data / "work" / "half-build").mkdir(parents=True)
    (data / "work" / "half-build" / "f").write_text("x")
    (data / "traefik").mkdir()
    (data / "traefik" / "traefik.log").write_text("noise")
    (data / "serving.json").write_text("{}")
    (data / "gcroots" / "web").mkdir(parents=True)
    (data / "gcroots" / "web" / "v1").symlink_to("/nix/store/nothing")
    (data / "outside").symlink_to("/etc")
    store = Store(data / "gitd.db")
    store.create_app("web")
    return data


def settings_for(data: Path):
    return load_settings(data_dir=data)


def write_backup(data: Path, dest: Path) -> dict:
    lines = []
    manifest = backup.backup(settings_for(data), dest, lines.append)
    assert any("wrote" in line for line in lines)
    return manifest


def test_backup_holds_the_state_and_leaves_out_what_a_start_remakes(data_dir, tmp_path):
    dest = tmp_path / "b.tar.gz"
    manifest = write_backup(data_dir, dest)
    files = manifest["files"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert manifest["format"] == archive.FORMAT and manifest["gitd_version"]
    for name in ("data/gitd.db", "data/ssh_host_ed25519_key", "data/tls/acme.json", "data/gitd.toml",
                 "data/repos/web.git/refs/heads/main"):
        assert "sha256" in files[name], name
    assert files["data/repos/web.git/refs/tags"] == {"dir": True}
    assert files["data/tls/acme.json"] == {
        "size": len('{"account": 1}'), "sha256": hashlib.sha256(b'{"account": 1}').hexdigest()}
    for left_out in ("data/work", "data/work/half-build/f", "data/traefik/traefik.log",
                     "data/serving.json", "data/outside", "data/gcroots/web/v1"):
        assert left_out not in files, left_out
    assert archive.verify(dest) == manifest
    assert not list(tmp_path.glob(".gitd-backup-*")) and not list(tmp_path.glob(".b.tar.gz.*"))


def test_the_database_copy_is_consistent_while_another_connection_writes(data_dir, tmp_path):
    writer = sqlite3.connect(data_dir / "gitd.db")
    writer.execute("CREATE TABLE t (n)")
    writer.execute("INSERT INTO t VALUES (1)")
    writer.commit()
    writer.execute("BEGIN")
    writer.execute("INSERT INTO t VALUES (2)")  # not committed: not in the copy
    copy = tmp_path / "copy.db"
    backup.copy_database(data_dir / "gitd.db", copy)
    writer.rollback()
    assert sqlite3.connect(copy).execute("SELECT n FROM t").fetchall() == [(1,)]
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600


def test_backup_refuses_a_place_inside_the_data_dir_or_no_gitd(data_dir, tmp_path):
    with pytest.raises(GitdError, match="outside the data dir"):
        backup.backup(settings_for(data_dir), data_dir / "tls" / "b.tar.gz", print)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GitdError, match="holds no gitd"):
        backup.backup(settings_for(tmp_path / "empty"), tmp_path / "b.tar.gz", print)
    assert not (tmp_path / "b.tar.gz").exists()


def test_restore_makes_the_data_dir_and_a_plan_for_the_next_start(data_dir, tmp_path):
    store = Store(data_dir / "gitd.db")
    release = store.new_release("web", kind="push", commit="a" * 40, status="succeeded")
    store.set_live("web", release.version, 1)
    store.create_app("never-deployed")
    dest = tmp_path / "b.tar.gz"
    write_backup(data_dir, dest)
    target = tmp_path / "new" / "data"
    target.parent.mkdir()
    lines = []
    plan = backup.restore(settings_for(target), dest, lines.append)
    assert plan == {"apps": ["web"], "services": [], "dumps": [], "volumes": [],
                    "volumes_left_out": {}}
    assert json.loads((target / "restore" / "pending.json").read_text()) == plan
    assert (target / "tls" / "acme.json").read_text() == '{"account": 1}'
    assert (target / "repos" / "web.git" / "refs" / "tags").is_dir()
    assert not (target / "outside").exists() and not (target / "work").exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert Store(target / "gitd.db").get_app("web").current_release == release.version
    assert any("gitd serve --data-dir" in line for line in lines)
    assert not [p for p in target.parent.iterdir() if p.name != "data"]


@pytest.mark.parametrize("occupant", ["gitd.db", "notes.txt"])
def test_restore_refuses_a_data_dir_that_holds_anything(data_dir, tmp_path, occupant):
    dest = tmp_path / "b.tar.gz"
    write_backup(data_dir, dest)
    target = tmp_path / "taken"
    target.mkdir()
    (target / occupant).write_text("mine")
    with pytest.raises(GitdError, match="holds a gitd" if occupant == "gitd.db" else "not empty"):
        backup.restore(settings_for(target), dest, print)
    assert [p.name for p in target.iterdir()] == [occupant]
    assert (target / occupant).read_text() == "mine"


# hostile archives

def hostile(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
            manifest: dict | None = "auto") -> Path:
    """An archive of `members` and a manifest listing every regular one
    truthfully (unless given)."""
    if manifest == "auto":
        manifest = {"format": archive.FORMAT, "files": {
            info.name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for info, data in members if info.isfile() and data is not None}}
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        if manifest is not None:
            raw = json.dumps(manifest).encode()
            info = tarfile.TarInfo(archive.MANIFEST)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def good_members() -> list:
    store_bytes = b"SQLite format 3\0" + b"\0" * 100
    return [(member("data/gitd.db"), store_bytes), (member("data/ssh_host_ed25519_key"), b"KEY")]


@pytest.mark.parametrize("bad, match", [
    ((member("data/../../etc/cron.d/x"), b"evil"), "'..'"),
    ((member("/etc/cron.d/x"), b"evil"), "absolute"),
    ((member("data/./x"), b"evil"), "not plain"),
    ((member("data/link", tarfile.SYMTYPE, "/etc/passwd"), None), "not a regular file"),
    ((member("data/hard", tarfile.LNKTYPE, "data/gitd.db"), None), "not a regular file"),
    ((member("data/dev", tarfile.CHRTYPE), None), "not a regular file"),
    ((member("data/fifo", tarfile.FIFOTYPE), None), "not a regular file"),
])
def test_members_that_would_escape_or_are_not_files_are_refused(tmp_path, bad, match):
    path = hostile(tmp_path / "h.tar.gz", good_members() + [bad])
    with pytest.raises(GitdError, match=match):
        archive.verify(path)
    assert_restore_refused(path, tmp_path)


def assert_restore_refused(path: Path, tmp_path: Path) -> None:
    """Refused by `gitd restore` too, with nothing written anywhere."""
    parent = tmp_path / "target-parent"
    parent.mkdir(exist_ok=True)
    with pytest.raises(GitdError, match="refused"):
        backup.restore(settings_for(parent / "data"), path, print)
    assert list(parent.iterdir()) == []


def test_a_truncated_archive_is_refused_before_anything_is_written(data_dir, tmp_path):
    dest = tmp_path / "b.tar.gz"
    write_backup(data_dir, dest)
    whole = dest.read_bytes()
    for cut in (len(whole) - 1, len(whole) // 2, 100, 10):
        cut_path = tmp_path / f"cut{cut}.tar.gz"
        cut_path.write_bytes(whole[:cut])
        with pytest.raises(GitdError, match="refused"):
            archive.verify(cut_path)
        assert_restore_refused(cut_path, tmp_path)


def test_a_flipped_bit_anywhere_is_refused_unless_it_changes_nothing(data_dir, tmp_path):
    """Some bits of a deflate stream do not change what it unpacks to (the
    padding of the last byte, codes of unused symbols): such an archive is
    still whole. Every other flip, gzip's header and trailer included, is
    refused."""
    dest = tmp_path / "b.tar.gz"
    write_backup(data_dir, dest)
    whole = dest.read_bytes()
    refused = 0
    for at in range(0, len(whole), 3):
        flipped = bytearray(whole)
        flipped[at] ^= 0x10
        path = tmp_path / "flip.tar.gz"
        path.write_bytes(bytes(flipped))
        try:
            archive.verify(path)
        except GitdError as exc:
            assert "refused" in str(exc)
            refused += 1
            continue
        assert gzip.decompress(bytes(flipped)) == gzip.decompress(whole), at
    assert refused > len(whole) / 3 * 0.9


def test_a_member_unlike_its_checksum_is_refused(tmp_path):
    members = good_members()
    manifest = {"format": archive.FORMAT, "files": {
        info.name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for info, data in members}}
    members[1] = (member("data/ssh_host_ed25519_key"), b"KEX")  # same size, other bytes
    path = hostile(tmp_path / "h.tar.gz", members, manifest)
    with pytest.raises(GitdError, match="does not match its checksum"):
        archive.verify(path)
    assert_restore_refused(path, tmp_path)


def test_members_and_manifest_must_agree(tmp_path):
    members = good_members()
    listed = {"format": archive.FORMAT, "files": {
        "data/gitd.db": {"size": len(members[0][1]),
                         "sha256": hashlib.sha256(members[0][1]).hexdigest()}}}
    with pytest.raises(GitdError, match="not in the manifest"):
        archive.verify(hostile(tmp_path / "a.tar.gz", members, listed))
    listed["files"]["data/missing"] = {"size": 1, "sha256": "0" * 64}
    with pytest.raises(GitdError, match="in the manifest but not in the archive"):
        archive.verify(hostile(tmp_path / "b.tar.gz", members[:1], listed))
    with pytest.raises(GitdError, match="no manifest"):
        archive.verify(hostile(tmp_path / "c.tar.gz", members, None))
    with pytest.raises(GitdError, match="twice"):
        archive.verify(hostile(tmp_path / "d.tar.gz", members + members[:1]))
    escaping = {"format": archive.FORMAT, "files": {"../x": {"size": 1, "sha256": "0" * 64}}}
    with pytest.raises(GitdError, match="'..'"):
        archive.verify(hostile(tmp_path / "e.tar.gz", [], escaping))


def test_a_member_after_the_manifest_is_refused(tmp_path):
    path = hostile(tmp_path / "h.tar.gz", good_members())
    with tarfile.open(path, "r:gz") as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    late = tmp_path / "late.tar.gz"
    with tarfile.open(late, "w:gz") as tar:
        for info, data in items + [(member("data/late"), b"x")]:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(GitdError, match="after the manifest"):
        archive.verify(late)


@pytest.mark.parametrize("left_out", [[1], ["ab"], {"v": 1}, {"v": "\x1b[2Jgone"}, {"": "x"},
                                      {"v": "x" * 2000}])
def test_a_manifest_whose_volumes_left_out_is_not_plain_text_is_refused(tmp_path, left_out):
    listed = {"format": archive.FORMAT, "files": {}, "volumes_left_out": left_out}
    with pytest.raises(GitdError, match="refused: the manifest's volumes_left_out"):
        archive.verify(hostile(tmp_path / "h.tar.gz", [], listed))


def test_a_newer_format_is_refused_in_words(tmp_path):
    path = hostile(tmp_path / "h.tar.gz", [], {"format": 99, "files": {}, "gitd_version": "9.0"})
    with pytest.raises(GitdError, match="format 99.*9.0"):
        archive.verify(path)


def test_huge_members_and_totals_are_refused(tmp_path, monkeypatch):
    path = hostile(tmp_path / "h.tar.gz", good_members() + [(member("data/big"), b"\0" * 5000)])
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 4096)
    with pytest.raises(GitdError, match="data/big is 5000 bytes, past the bound"):
        archive.verify(path)
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 1 << 30)
    with pytest.raises(GitdError, match="free space"):
        archive.verify(path, free_bytes=4000)
    monkeypatch.setattr(archive, "MAX_MEMBERS", 2)
    with pytest.raises(GitdError, match="more than 2 members"):
        archive.verify(path)


def test_a_file_that_changes_while_it_is_archived_fails_the_backup(tmp_path):
    grows = tmp_path / "grows"
    grows.write_bytes(b"a" * 10)

    class Growing(archive.Source):
        pass

    original = archive._HashingReader.read

    def read_then_grow(self, n=-1):
        data = original(self, n)
        with open(grows, "ab") as fh:
            fh.write(b"more")
        return data

    dest = tmp_path / "b.tar.gz"
    try:
        archive._HashingReader.read = read_then_grow
        with pytest.raises(GitdError, match="grew while it was backed up"):
            archive.write(dest, [archive.Source("data/grows", grows)], {})
    finally:
        archive._HashingReader.read = original
    assert not dest.exists() and [p.name for p in tmp_path.iterdir()] == ["grows"]


def test_a_file_removed_after_it_was_listed_is_left_out(tmp_path):
    kept = tmp_path / "kept"
    kept.write_text("x")
    manifest = archive.write(tmp_path / "a.tar.gz", [
        archive.Source("data/gone.yml", tmp_path / "gone.yml"),
        archive.Source("data/kept", kept)], {})
    assert list(manifest["files"]) == ["data/kept"]
    assert archive.verify(tmp_path / "a.tar.gz")["files"] == manifest["files"]


def test_archive_write_reads_no_link(tmp_path):
    (tmp_path / "real").write_text("secret")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError):
        archive.write(tmp_path / "b.tar.gz", [archive.Source("data/link", tmp_path / "link")], {})
    assert not (tmp_path / "b.tar.gz").exists()
    assert os.path.exists(tmp_path / "real")


# at the next start: the plan carried out, per app in words

class Engine:
    def __init__(self, images):
        self.images, self.pulled = set(images), []

    def has_image(self, ref):
        return ref in self.images

    def pull(self, ref, timeout, emit):
        self.pulled.append(ref)
        return "sha256:pulled"

    def tag(self, image_id, repository, tag):
        self.images.add(f"{repository}:{tag}")


class Pipeline:
    def __init__(self, fail_rebuild=False):
        self.calls, self.fail_rebuild = [], fail_rebuild

    def rebuild(self, release, repo, sink):
        self.calls.append(("rebuild", release.app, release.version))
        if self.fail_rebuild:
            raise GitdError("the build failed: no Dockerfile")

    def redeploy(self, app, sink, reason, trigger=None):
        self.calls.append(("redeploy", app, trigger))


class Restarting(FakeGitd):
    """The daemon as `backup.finish` sees it at start."""

    def __init__(self, store, settings, images, fail_rebuild=False):
        super().__init__(store, settings)
        self._engine, self.pipeline = Engine(images), Pipeline(fail_rebuild)

    @property
    def engine(self):
        return self._engine

    @contextlib.contextmanager
    def using_repo(self, app):
        yield


def repo_of(fake, app):
    from gitd import gitserve
    fake.settings.repos_dir.mkdir(exist_ok=True)
    gitserve.create_repo(fake.settings.repos_dir, app)


def plan_for(fake, apps):
    directory = fake.settings.data_dir / backup.RESTORE_DIR
    directory.mkdir(parents=True)
    (directory / backup.PENDING).write_text(json.dumps({"apps": apps, "services": []}))


def test_finish_redeploys_each_app_and_says_what_it_could_not(store, tmp_path):
    fake = Restarting(store, load_settings(data_dir=tmp_path), images={"sha256:abc"})
    deployed(store, "hello")  # its image is still here
    store.create_app("gone")
    deployed(store, "gone")
    store.update_release("gone", 1, image_id="sha256:gone")  # not on this engine: rebuilt
    repo_of(fake, "gone")
    store.create_app("no-repo")
    deployed(store, "no-repo")
    store.update_release("no-repo", 1, image_id="sha256:gone")
    store.create_app("pulled")
    release = store.new_release("pulled", kind="image", status="succeeded",
                                image_id="sha256:old", commit=None)
    store.set_live("pulled", release.version, 1)
    deployment = store.new_deployment("pulled", "image", image="registry.test/web:1")
    store.update_deployment(deployment.id, release=release.version)
    store.create_app("lost")
    lost = store.new_release("lost", kind="image", status="succeeded", image_id="sha256:lost",
                             commit=None)
    store.set_live("lost", lost.version, 1)
    plan_for(fake, ["hello", "gone", "pulled", "lost", "no-repo"])

    outcome = backup.finish(fake)

    assert outcome["app hello"] == "restored at v1 (its image was still here)"
    assert outcome["app gone"] == "restored at v1 (rebuilt from commit c0ffeec0)"
    assert outcome["app pulled"] == "restored at v1 (pulled registry.test/web:1 again)"
    assert outcome["app lost"].startswith("not restored: v1's image is not on this engine")
    assert outcome["app no-repo"] == ("not restored: its repository is not in the backup, so v1 "
                                      "cannot be rebuilt: push again")
    assert fake.engine.pulled == ["registry.test/web:1"]
    assert store.get_release("pulled", 1).image_id == "sha256:pulled"
    assert fake.pipeline.calls == [("redeploy", "hello", "restart"), ("rebuild", "gone", 1),
                                   ("redeploy", "gone", "restart"), ("redeploy", "pulled", "restart")]
    directory = tmp_path / backup.RESTORE_DIR
    assert json.loads((directory / backup.REPORT).read_text()) == outcome
    assert not (directory / backup.PENDING).exists()
    assert backup.finish(fake) == {}  # done once


def test_a_failed_rebuild_is_said_and_the_other_apps_still_come_back(store, tmp_path):
    fake = Restarting(store, load_settings(data_dir=tmp_path), images=set(), fail_rebuild=True)
    deployed(store, "hello")
    repo_of(fake, "hello")
    plan_for(fake, ["hello", "no-such-app"])
    outcome = backup.finish(fake)
    assert outcome["app hello"] == "not restored: the build failed: no Dockerfile"
    assert outcome["app no-such-app"].startswith("not restored:")
    assert ("redeploy", "hello", "restart") not in fake.pipeline.calls


def test_a_release_of_several_services_is_rebuilt_when_one_of_their_images_is_gone(store,
                                                                                   tmp_path):
    fake = Restarting(store, load_settings(data_dir=tmp_path), images={"sha256:front"})
    for app, back in (("kept", "sha256:front"), ("mono", "sha256:back")):
        store.create_app(app)
        deployed(store, app)
        store.update_release(app, 1, image_id="sha256:front", components={
            "frontend": {"image": f"gitd/{app}:v1-frontend", "image_id": "sha256:front"},
            "backend": {"image": f"gitd/{app}:v1-backend", "image_id": back}})
        repo_of(fake, app)
    plan_for(fake, ["kept", "mono"])
    outcome = backup.finish(fake)
    assert outcome["app kept"] == "restored at v1 (its image was still here)"
    assert outcome["app mono"] == "restored at v1 (rebuilt from commit c0ffeec0)"
    assert fake.pipeline.calls == [("redeploy", "kept", "restart"), ("rebuild", "mono", 1),
                                   ("redeploy", "mono", "restart")]


class VolumeEngine:
    """The engine as copy_volumes sees it: volumes, helper containers."""

    def __init__(self, volumes):
        self.volumes, self.created, self.removed = set(volumes), [], []

    def volume_exists(self, name):
        return name in self.volumes

    def create(self, spec):
        class Helper:
            def get_archive(self, path):
                return [b"tar of ", spec["mounts"][0]["source"].encode()], {}
        self.created.append(spec)
        return Helper()

    def remove(self, container):
        self.removed.append(container)


class OnASwarm(FakeGitd):
    def __init__(self, store, settings, volumes, here="manager-1"):
        super().__init__(store, settings)
        self._engine = VolumeEngine(volumes)
        self.scheduler = type("Scheduler", (), {"node_name": here})()

    @property
    def engine(self):
        return self._engine


def test_volumes_on_a_swarm_are_copied_on_this_node_and_the_others_said(store, tmp_path):
    settings = load_settings(data_dir=tmp_path, flags={"scheduler": "swarm"})
    # v-far: this node has a namesake, not the data of far's tasks
    fake = OnASwarm(store, settings, volumes={"v-hello", "v-pinned", "v-far"})
    for app, node in (("hello", None), ("pinned", "manager-1"), ("far", "worker-2")):
        if app != "hello":
            store.create_app(app)
        deployed(store, app)
        store.set_app_node(app, node)
        store.set_mounts(app, [{"type": "volume", "source": f"v-{app}", "target": "/data"},
                               {"type": "bind", "source": "/srv/x", "target": "/x"}])
    said = []
    copied, left_out = backup.copy_volumes(fake, tmp_path, said.append)
    assert [name for name, _ in copied] == ["v-hello", "v-pinned"]
    assert (tmp_path / "v-hello.tar").read_bytes() == b"tar of v-hello"
    assert list(left_out) == ["v-far"]
    assert left_out["v-far"] == ("volume v-far of far is on swarm node worker-2, which this "
                                 "node (manager-1) cannot read: not in the archive; copy it "
                                 "on worker-2")
    assert left_out["v-far"] in said
    assert len(fake.engine.removed) == 2  # each helper removed


def test_volumes_of_apps_placed_on_a_swarm_are_refused_under_docker_settings(store, tmp_path):
    fake = OnASwarm(store, load_settings(data_dir=tmp_path), volumes={"v-hello"})
    deployed(store, "hello")
    store.set_app_node("hello", "manager-1")
    store.set_mounts("hello", [{"type": "volume", "source": "v-hello", "target": "/data"}])
    with pytest.raises(GitdError, match=r'hello run\(s\) on swarm nodes, but these settings '
                                        r'say scheduler = "docker"'):
        backup.copy_volumes(fake, tmp_path, print)
    assert fake.engine.created == [] and list(tmp_path.glob("*.tar")) == []


def test_an_app_whose_volume_is_restored_on_a_swarm_runs_on_this_node(store, tmp_path):
    """Its recorded node is the old server's hostname: its tasks would wait
    for a node that is gone."""
    class FillingEngine(Engine, VolumeEngine):
        def __init__(self):
            Engine.__init__(self, {"sha256:abc"})
            VolumeEngine.__init__(self, set())

        def ensure_volume(self, name, labels):
            self.volumes.add(name)

        def create(self, spec):
            self.created.append(spec)
            return type("Helper", (), {"put_archive": lambda self, path, data: True})()

    settings = load_settings(data_dir=tmp_path, flags={"scheduler": "swarm"})
    fake = Restarting(store, settings, images={"sha256:abc"})
    fake._engine = FillingEngine()
    fake.scheduler = type("Scheduler", (), {"node_name": "new-server"})()
    deployed(store, "hello")
    store.set_app_node("hello", "old-server")
    store.set_mounts("hello", [{"type": "volume", "source": "v-hello", "target": "/data"}])
    plan_for(fake, ["hello"])
    (tmp_path / backup.RESTORE_DIR / "volumes").mkdir()
    (tmp_path / backup.RESTORE_DIR / "volumes" / "v-hello.tar").write_bytes(b"tar")
    outcome = backup.finish(fake)
    assert outcome["app hello"] == ("restored at v1 (its image was still here; volume v-hello "
                                    "restored; its tasks run on node new-server now, where its "
                                    "volumes are)")
    assert store.app_node("hello") == "new-server"


def test_a_volume_left_out_of_the_backup_is_said_at_the_restore(store, tmp_path):
    fake = Restarting(store, load_settings(data_dir=tmp_path), images={"sha256:abc"})
    deployed(store, "hello")
    store.set_mounts("hello", [{"type": "volume", "source": "v-hello", "target": "/data"}])
    plan_for(fake, ["hello"])
    pending = tmp_path / backup.RESTORE_DIR / backup.PENDING
    plan = json.loads(pending.read_text())
    pending.write_text(json.dumps({**plan, "volumes_left_out": {"v-hello": "on worker-2"}}))
    outcome = backup.finish(fake)
    assert outcome["app hello"] == ("restored at v1 (its image was still here; not in the "
                                    "backup: on worker-2)")


def test_backup_to_a_directory_is_refused(data_dir, tmp_path):
    (tmp_path / "somewhere").mkdir()
    with pytest.raises(GitdError, match="is a directory"):
        backup.backup(settings_for(data_dir), tmp_path / "somewhere", print)
    assert list((tmp_path / "somewhere").iterdir()) == []


def test_members_of_unknown_places_are_refused(tmp_path):
    path = hostile(tmp_path / "h.tar.gz", good_members() + [(member("etc/cron.d/x"), b"evil")])
    archive.verify(path)  # well formed: the names stay inside
    assert_restore_refused(path, tmp_path)


def test_without_an_engine_the_plan_waits_for_the_next_start(store, tmp_path):
    class Unreachable(Restarting):
        @property
        def engine(self):
            raise GitdError("cannot reach Docker")

    fake = Unreachable(store, load_settings(data_dir=tmp_path), images=set())
    deployed(store, "hello")
    plan_for(fake, ["hello"])
    assert backup.finish(fake) == {}
    assert (tmp_path / backup.RESTORE_DIR / backup.PENDING).exists()
    assert not (tmp_path / backup.RESTORE_DIR / backup.REPORT).exists()


def test_a_start_cut_short_resumes_where_it_stopped(store, tmp_path):
    class Killed(BaseException):
        pass

    class Dying(Pipeline):
        def redeploy(self, app, sink, reason, trigger=None):
            if app == "second":
                raise Killed  # as gitd stopping mid-deploy
            super().redeploy(app, sink, reason, trigger)

    fake = Restarting(store, load_settings(data_dir=tmp_path), images={"sha256:abc"})
    fake.pipeline = Dying()
    deployed(store, "hello")
    store.create_app("second")
    deployed(store, "second")
    plan_for(fake, ["hello", "second"])
    with pytest.raises(Killed):
        backup.finish(fake)
    directory = tmp_path / backup.RESTORE_DIR
    assert json.loads((directory / backup.PENDING).read_text())["apps"] == ["second"]
    assert list(json.loads((directory / backup.REPORT).read_text())) == ["app hello"]

    fake.pipeline = Pipeline()
    outcome = backup.finish(fake)
    assert set(outcome) == {"app hello", "app second"}
    assert fake.pipeline.calls == [("redeploy", "second", "restart")]  # hello not again
    assert not (directory / backup.PENDING).exists()


def test_one_volume_mounted_at_two_paths_is_copied_once(store, tmp_path):
    settings = load_settings(data_dir=tmp_path)
    fake = OnASwarm(store, settings, volumes={"v-hello"})
    deployed(store, "hello")
    store.set_mounts("hello", [{"type": "volume", "source": "v-hello", "target": "/a"},
                               {"type": "volume", "source": "v-hello", "target": "/b"}])
    copied, left_out = backup.copy_volumes(fake, tmp_path, lambda line: None)
    assert [name for name, _ in copied] == ["v-hello"] and left_out == {}
    sources = [archive.Source(backup.VOLUMES + f"{n}.tar", p) for n, p in copied]
    archive.write(tmp_path / "x.tar.gz", sources, {})  # before: "twice in the archive"

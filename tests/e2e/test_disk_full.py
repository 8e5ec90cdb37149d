"""Disk full (issue #26): gitd's data dir on a small filesystem (a sized
tmpfs this test mounts). A push whose pack does not fit, and one whose pack
fits but whose checkout does not, fail in words naming the filesystem; the
repository (every ref on an object that is there, `git fsck`) and the state
database (`PRAGMA integrity_check`) stay intact, nothing half-written is
left, the app keeps serving, and the next push after space is freed works.
A build step that fills its own disk is told in words and the old release
keeps serving."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.api_client import new_token
from tests.e2e.conftest import BASE_IMAGE, web_app
from tests.e2e.harness import commit, git, make_repo, unique_app
from tests.e2e.helpers import create, ok

pytestmark = pytest.mark.e2e

SIZE_MB = 64


@contextlib.contextmanager
def small_filesystem(path: Path, size_mb: int):
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs",
                    str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False, capture_output=True)
        if os.path.ismount(path):  # something still had a file open: detached once closed
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(filler: Path, leave_bytes: int) -> None:
    """Take the filesystem's free space down to `leave_bytes`."""
    free = shutil.disk_usage(filler.parent).free
    size = (filler.stat().st_size if filler.exists() else 0) + max(free - leave_bytes, 0)
    with open(filler, "ab") as fh:
        os.posix_fallocate(fh.fileno(), 0, size)


def repo_intact(repo_dir: Path) -> None:
    """Every ref on an object that is there, every object readable, no pack
    half-written (git's own check of the bare repository)."""
    checked = subprocess.run(["git", "--git-dir", str(repo_dir), "fsck", "--full", "--strict"],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    pack_dir = repo_dir / "objects" / "pack"
    names = sorted(p.name for p in pack_dir.iterdir())
    assert not [n for n in names if n.startswith("tmp_")], names
    packs = {n[:-5] for n in names if n.endswith(".pack")}
    assert packs == {n[:-4] for n in names if n.endswith(".idx")}, names


def database_intact(data_dir: Path) -> None:
    db = sqlite3.connect(data_dir / "gitd.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


def api_patch(server, path: str, token: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.gitd_api_port}{path}", method="PATCH",
        data=json.dumps(body).encode(), headers={"Authorization": f"Bearer {token}",
                                                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def head(repo_dir: Path) -> str:
    return subprocess.run(["git", "--git-dir", str(repo_dir), "rev-parse", "refs/heads/main"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_push_that_does_not_fit_fails_in_words_and_changes_nothing(own_gitd, tmp_path):
    server = own_gitd
    with small_filesystem(tmp_path / "small", SIZE_MB) as fs:
        try:
            shutil.copytree(server.data_dir, fs / "data", symlinks=True)
            server.data_dir = fs / "data"
            server.start()
            app = unique_app("full")
            host = server.host(app)
            create(server, app)
            repo = make_repo(tmp_path / app, web_app("v1"))
            pushed = server.push(repo, app)
            assert pushed.returncode == 0, pushed.stderr
            server.wait_for(host, "v1")
            repo_dir = server.data_dir / "repos" / f"{app}.git"
            served = head(repo_dir)
            filler = fs / "filler"

            # a pack larger than what is left: random bytes do not compress
            fill(filler, 2 * 1024**2)
            (repo / "noise.bin").write_bytes(os.urandom(6 * 1024**2))
            commit(repo, web_app("v2"), "v2 with noise")
            refused = server.push(repo, app)
            assert refused.returncode != 0, refused.stderr
            assert "no space left" in refused.stderr.lower(), refused.stderr
            assert f"mounted at {fs} (holding {repo_dir}/objects)" in refused.stderr
            assert "[remote rejected] main -> main (the pushed pack was not stored)" \
                in refused.stderr
            assert head(repo_dir) == served
            repo_intact(repo_dir)
            database_intact(server.data_dir)
            assert server.get(host) == (200, "v1\n")

            # a pack that fits, a checkout that does not (zeros compress to nothing)
            git(repo, "reset", "-q", "--hard", served)  # the refused commit is not sent again
            (repo / "zeros.bin").write_bytes(bytes(8 * 1024**2))
            commit(repo, web_app("v3"), "v3 with zeros")
            refused = server.push(repo, app)
            assert refused.returncode != 0, refused.stderr
            assert "no space left" in refused.stderr.lower(), refused.stderr
            assert f"mounted at {fs} (holding {server.data_dir}/work/" in refused.stderr
            assert head(repo_dir) == served
            repo_intact(repo_dir)
            database_intact(server.data_dir)
            assert not list((server.data_dir / "work").iterdir())  # no checkout left
            assert server.get(host) == (200, "v1\n")
            assert "failed" in ok(server, "releases", app).stdout

            # the state database cannot grow: a command, and the same over HTTP
            token = new_token(server, "--name", "full")
            fill(filler, 0)
            big = "x" * 60_000
            said = server.ssh("config:set", app, *(f"BIG{n}={big}" for n in range(4)))
            assert said.returncode != 0
            assert said.stderr.startswith(" !     no space left on device: the command could not "
                                          f"finish: the filesystem mounted at {fs} "), said.stderr
            status, answer = api_patch(server, f"/api/v1/apps/{app}/config", token,
                                       {f"BIG{n}": big for n in range(4)})
            assert status == 507 and "no space left on device" in answer["error"], answer
            database_intact(server.data_dir)
            assert "BIG0" not in ok(server, "config", app).stdout
            assert server.get(host) == (200, "v1\n")

            # space freed: the next push goes through
            filler.unlink()
            commit(repo, web_app("v4"), "v4")
            pushed = server.push(repo, app)
            assert pushed.returncode == 0, pushed.stderr
            server.wait_for(host, "v4")
            repo_intact(repo_dir)
            database_intact(server.data_dir)
        finally:
            server.stop()


def test_a_build_that_fills_its_disk_is_told_and_the_old_release_serves(gitd, tmp_path):
    """Docker's own disk is the machine's, shared, and this engine's builder
    lacks BuildKit's `RUN --mount=type=tmpfs`: a build step writes to
    /dev/full, which fails as a full disk does (ENOSPC), to show how a full
    build disk is told and that the old release keeps serving. Filling the
    engine's real disk is not tested."""
    app = unique_app("fullb")
    host = gitd.host(app)
    create(gitd, app)
    repo = make_repo(tmp_path / app, web_app("v1"))
    assert gitd.push(repo, app).returncode == 0
    gitd.wait_for(host, "v1")
    commit(repo, {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        "RUN dd if=/dev/zero of=/dev/full bs=1M count=1\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n')}, "fills its disk")
    refused = gitd.push(repo, app)
    assert refused.returncode != 0, refused.stderr
    rejected = [line for line in refused.stderr.splitlines() if "[remote rejected]" in line]
    assert rejected and "no space left on device" in rejected[0], refused.stderr
    assert gitd.get(host) == (200, "v1\n")

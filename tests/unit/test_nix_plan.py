"""The nix buildpack's pure parts: choices, layer planning, archives. No services."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from buildpacks.nix import (
    MAX_LAYERS,
    NixBuildpack,
    NixFailed,
    _store_path_of,
    choose_attr,
    choose_command,
    human_size,
    image_config,
    plan_layers,
    popularity,
    remove_gc_root,
    retag_archive,
    write_base_layer,
    write_docker_archive,
    write_layer,
)
from gitd.core.errors import BuildError
from tests.nix import fixtures

S = "/nix/store/"
GLIBC, ZLIB, OPENSSL, CURL, APP = (S + n for n in ("g-glibc", "z-zlib", "o-openssl", "c-curl", "a-app"))
# app -> curl -> openssl -> zlib -> glibc, and everything -> glibc
CLOSURE = {
    GLIBC: [GLIBC],  # a self-reference, as nix records some
    ZLIB: [GLIBC],
    OPENSSL: [ZLIB, GLIBC],
    CURL: [OPENSSL, ZLIB, GLIBC],
    APP: [CURL, GLIBC, APP],
}


def test_detects_a_flake(tmp_path):
    assert NixBuildpack().detect(tmp_path) is None
    (tmp_path / "flake.nix").write_text("{}")
    assert NixBuildpack().detect(tmp_path) == "found flake.nix"
    assert NixBuildpack.name == "nix" and NixBuildpack.looks_for == "flake.nix"


# --- layer planning -------------------------------------------------------------


def test_popularity_counts_transitive_dependents_and_ignores_self_references():
    assert popularity(CLOSURE) == {GLIBC: 4, ZLIB: 3, OPENSSL: 2, CURL: 1, APP: 0}


def test_most_shared_paths_come_first_and_the_app_last():
    assert plan_layers(CLOSURE) == [[GLIBC], [ZLIB], [OPENSSL], [CURL], [APP]]


def test_ties_are_broken_by_path_so_the_plan_is_stable():
    closure = {S + "b": [], S + "a": [], S + "root": [S + "a", S + "b"]}
    assert plan_layers(closure) == [[S + "a"], [S + "b"], [S + "root"]]
    assert plan_layers(dict(reversed(list(closure.items())))) == plan_layers(closure)


def test_a_large_closure_merges_its_least_shared_tail_into_the_last_layer():
    leaves = [f"{S}{i:04d}-lib" for i in range(300)]
    shared = S + "zz-shared"
    closure = {shared: [], **{leaf: [shared] for leaf in leaves}}
    plan = plan_layers(closure, max_layers=10)
    assert len(plan) == 10
    assert plan[0] == [shared]
    assert all(len(layer) == 1 for layer in plan[:-1])
    assert plan[-1] == sorted(plan[-1]) and len(plan[-1]) == 301 - 9
    assert sorted(p for layer in plan for p in layer) == sorted(closure)
    assert len(plan_layers(closure)) == MAX_LAYERS


# --- choices ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names, options, expected",
    [
        (["default"], {}, ("default", False)),
        (["image", "dockerImage", "default"], {}, ("dockerImage", True)),
        (["image", "docker", "dockerImage"], {}, ("docker", True)),
        (["image", "docker"], {"image_attr": "image"}, ("image", True)),
        (["docker", "default", "cli"], {"package_attr": "cli"}, ("cli", False)),
        (["server"], {}, ("server", False)),
    ],
)
def test_choose_attr(names, options, expected):
    assert choose_attr(names, options, "x86_64-linux") == expected


def test_an_option_naming_a_missing_attribute_lists_what_exists():
    with pytest.raises(BuildError, match=r"image_attr=oci, but the flake's packages.x86_64-linux has: default, docker"):
        choose_attr(["default", "docker"], {"image_attr": "oci"}, "x86_64-linux")


def test_no_default_among_several_packages_is_an_error():
    with pytest.raises(BuildError, match="no packages.x86_64-linux.default .*has: a, b.*--package NAME"):
        choose_attr(["a", "b"], {}, "x86_64-linux")


def test_command_prefers_the_flake_app():
    assert choose_command(APP + "/bin/serve", "web --flag", None, []) == [APP + "/bin/serve"]


def test_command_runs_a_procfile_line_through_the_closure_shell():
    assert choose_command(None, "serve -p $PORT", GLIBC + "/bin/sh", []) == [GLIBC + "/bin/sh", "-c", "serve -p $PORT"]


def test_command_splits_a_procfile_line_without_a_shell():
    assert choose_command(None, "serve --root '/srv/my site'", None, []) == ["serve", "--root", "/srv/my site"]


def test_command_falls_back_to_the_only_binary():
    assert choose_command(None, None, None, [APP + "/bin/serve"]) == [APP + "/bin/serve"]


def test_no_command_is_a_clear_error():
    with pytest.raises(BuildError, match=r"cannot tell how to start.*Procfile.*has: a, b"):
        choose_command(None, None, None, [APP + "/bin/a", APP + "/bin/b"])


def test_store_path_of_a_program():
    assert _store_path_of(APP + "/bin/serve", CURL) == APP
    assert _store_path_of(APP, CURL) == APP


# --- layers ---------------------------------------------------------------------------


def _fake_store_path(root: Path, name: str) -> str:
    path = root / "nix" / "store" / name
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (path / "bin" / "tool").chmod(0o555)
    (path / "share").mkdir()
    (path / "share" / "b.txt").write_text("b")
    os.link(path / "share" / "b.txt", path / "share" / "a.txt")  # as `nix-store --optimise` does
    (path / "bin" / "alias").symlink_to("tool")
    return str(path)


def test_a_layer_is_reproducible_sorted_and_owned_by_root(tmp_path):
    path = _fake_store_path(tmp_path / "root", "abc-tool")
    first = write_layer([path], tmp_path / "1.tar")
    os.utime(Path(path) / "share" / "b.txt", (12345, 12345))
    second = write_layer([path], tmp_path / "2.tar")
    assert first.digest == second.digest
    assert first.digest == "sha256:" + hashlib.sha256((tmp_path / "1.tar").read_bytes()).hexdigest()

    with tarfile.open(tmp_path / "1.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    rel = path.lstrip("/")
    assert names[-7:] == [rel, f"{rel}/bin", f"{rel}/bin/alias", f"{rel}/bin/tool",
                          f"{rel}/share", f"{rel}/share/a.txt", f"{rel}/share/b.txt"]
    parents = names[: names.index(rel)]  # every directory above, once: tmp, tmp/..., .../nix/store
    assert parents == sorted(parents) and parents[-1] == str(Path(rel).parent)
    assert all(m.isdir() for m in members[: len(parents)])
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(1, 0, 0, "", "")}
    by_name = {m.name: m for m in members}
    assert by_name[f"{rel}/share/a.txt"].isfile()  # never a hard link
    assert by_name[f"{rel}/bin/alias"].issym() and by_name[f"{rel}/bin/alias"].linkname == "tool"
    assert by_name[f"{rel}/bin/tool"].mode == 0o555


def test_the_base_layer_is_a_constant_writable_tmp(tmp_path):
    first, second = write_base_layer(tmp_path / "a.tar"), write_base_layer(tmp_path / "b.tar")
    assert first.digest == second.digest
    with tarfile.open(tmp_path / "a.tar") as tar:
        [tmp] = tar.getmembers()
    assert tmp.name == "tmp" and tmp.isdir() and tmp.mode == 0o1777


def test_docker_archive_layout(tmp_path):
    path = _fake_store_path(tmp_path / "root", "abc-tool")
    layer = write_layer([path], tmp_path / "0.tar")
    config = image_config(["/bin/tool"], [f"{path}/bin"], {"gitd.app": "x"}, [layer], "amd64", "2024-01-01T00:00:00Z")
    sink = io.BytesIO()
    write_docker_archive(sink, [layer], config, "gitd/x:v1")
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        [entry] = manifest
        config_bytes = tar.extractfile(entry["Config"]).read()
        layer_bytes = tar.extractfile(entry["Layers"][0]).read()
    assert entry["RepoTags"] == ["gitd/x:v1"]
    assert entry["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
    assert "sha256:" + hashlib.sha256(layer_bytes).hexdigest() == layer.digest
    loaded = json.loads(config_bytes)
    assert loaded["rootfs"] == {"type": "layers", "diff_ids": [layer.digest]}
    assert loaded["config"]["Cmd"] == ["/bin/tool"]
    assert loaded["config"]["Env"][0].startswith(f"PATH={path}/bin:")
    assert loaded["config"]["Labels"] == {"gitd.app": "x"}


def _hand_made_archive(compress: bool) -> bytes:
    layer = b"pretend this is a layer tar"
    config = json.dumps({"config": {"Cmd": ["x"], "Labels": {"from": "nix"}}, "rootfs": {"type": "layers"}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["hello:latest"], "Layers": ["l/layer.tar"]}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("./l/layer.tar", layer), ("./config.json", config), ("./manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue()) if compress else buf.getvalue()


@pytest.mark.parametrize("compress", [False, True])
def test_retag_archive_sets_our_tag_and_labels_and_keeps_layers(compress):
    sink = io.BytesIO()
    retag_archive(io.BytesIO(_hand_made_archive(compress)), sink, "gitd/x:v2", {"gitd.app": "x"})
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
        manifest = json.load(tar.extractfile("./manifest.json"))
        config = json.load(tar.extractfile("./config.json"))
        layer = tar.extractfile("./l/layer.tar").read()
    assert manifest[0]["RepoTags"] == ["gitd/x:v2"]
    assert config["config"]["Labels"] == {"from": "nix", "gitd.app": "x"}
    assert config["config"]["Cmd"] == ["x"]
    assert layer == b"pretend this is a layer tar"


def test_retag_archive_rejects_what_is_not_a_tar():
    with pytest.raises(tarfile.ReadError):
        retag_archive(io.BytesIO(b"not a tar at all" * 100), io.BytesIO(), "t:1", {})


# --- small things ---------------------------------------------------------------------


def test_human_size():
    assert [human_size(n) for n in (999, 1_300_000, 2_500_000_000)] == ["999 B", "1.3 MB", "2.5 GB"]


def test_remove_gc_root(tmp_path):
    root = tmp_path / "v1"
    root.symlink_to(tmp_path)
    remove_gc_root(root)
    assert not root.is_symlink()
    remove_gc_root(root)  # already gone: fine


def test_nix_failure_summary():
    failed = NixFailed(["warning: something", "error: builder for '/nix/store/x.drv' failed with exit code 3;",
                        "       last 10 log lines:"])
    assert failed.summary == "builder for '/nix/store/x.drv' failed with exit code 3;"
    assert not failed.missing_attribute
    assert NixFailed(["error: flake 'path:/x' does not provide attribute 'apps'"]).missing_attribute


def test_missing_nix_fails_rather_than_skips(monkeypatch):
    monkeypatch.setattr(fixtures.shutil, "which", lambda name: None)
    for ci in ("", "true"):
        monkeypatch.setenv("CI", ci)
        with pytest.raises(pytest.fail.Exception, match="nix"):
            fixtures.require_nix_and_docker()

"""Choosing a buildpack: detection order, its error, and what buildpacks:set accepts."""

from __future__ import annotations

import pytest
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import MemoryRepo

import buildpacks
from gitd.commands.buildpacks import attr_name, build_dir, deploy_ref
from gitd.errors import BuildError, UsageError


def test_flake_comes_before_dockerfile_and_a_setting_before_both(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert [(bp.name, why) for bp, why in [buildpacks.detect(tmp_path)]] == [
        ("dockerfile", "found Dockerfile")]
    (tmp_path / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    bp, why = buildpacks.detect(tmp_path)
    assert (bp.name, why) == ("nix", "found flake.nix")
    bp, why = buildpacks.detect(tmp_path, "dockerfile")
    assert (bp.name, why) == ("dockerfile", "set with buildpacks:set")
    with pytest.raises(BuildError, match="unknown buildpack 'heroku'"):
        buildpacks.detect(tmp_path, "heroku")


def test_no_match_says_what_was_looked_for_and_where(tmp_path):
    with pytest.raises(BuildError) as root:
        buildpacks.detect(tmp_path)
    assert root.value.message == (
        "no flake.nix, Dockerfile, requirements.txt, pyproject.toml, Pipfile, package.json, "
        "go.mod, Cargo.toml, Gemfile or index.html at the repository's root: "
        "add one, or build a subdirectory with buildpacks:set APP --dir DIR")
    with pytest.raises(BuildError) as sub:
        buildpacks.detect(tmp_path, build_dir="/services/api/")
    assert sub.value.message.startswith("no flake.nix, Dockerfile, requirements.txt, ")
    assert " or index.html in services/api/ (the build directory)" in sub.value.message
    assert len("deploy failed: " + sub.value.message) < 260  # one rejection line


@pytest.mark.parametrize("given, clean", [
    ("backend", "backend"), ("/backend/", "backend"), ("./svc//api", "svc/api"),
    (".", ""), ("/", ""), ("", ""),
])
def test_build_dir_is_a_clean_relative_path(given, clean):
    assert build_dir(given) == clean


@pytest.mark.parametrize("bad", ["..", "a/../b", ".git", "a/.git", "a\\b", "x\0y", "a/" * 200])
def test_build_dir_refuses_escapes(bad):
    with pytest.raises(UsageError):
        build_dir(bad)


def test_attr_names_are_single_flake_attributes():
    assert attr_name("backendImage", "--attr") == "backendImage"
    assert attr_name("my-app_2'", "--package") == "my-app_2'"
    for bad in ("a.b", "", "1x", "a b", "a#b", "${x}", "-x"):
        with pytest.raises(UsageError):
            attr_name(bad, "--attr")


def _commit(repo, message: bytes) -> bytes:
    blob = Blob.from_string(message)
    tree = Tree()
    tree.add(b"f", 0o100644, blob.id)
    commit = Commit()
    commit.tree, commit.message = tree.id, message
    commit.author = commit.committer = b"t <t@example.com>"
    commit.author_time = commit.commit_time = 0
    commit.author_timezone = commit.commit_timezone = 0
    for obj in (blob, tree, commit):
        repo.object_store.add_object(obj)
    return commit.id


def test_deploy_ref_prefers_the_live_branch_then_main():
    repo = MemoryRepo()
    assert deploy_ref(repo, None) is None
    master = _commit(repo, b"on master")
    repo.refs[b"refs/heads/master"] = master
    assert deploy_ref(repo, None) == (b"refs/heads/master", master)
    main = _commit(repo, b"on main")
    repo.refs[b"refs/heads/main"] = main
    assert deploy_ref(repo, None) == (b"refs/heads/main", main)
    assert deploy_ref(repo, master.decode()) == (b"refs/heads/master", master)

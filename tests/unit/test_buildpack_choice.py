"""Choosing a buildpack: detection order, its error, and what buildpacks:set accepts."""

from __future__ import annotations

import pytest
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import MemoryRepo

import buildpacks
from gitd.core.validate import attr_name, build_dir
from gitd.verbs.buildpacks import deploy_ref
from gitd.core.errors import BuildError, UsageError


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


# buildpacks:show on the pushed code, through the command itself

def _show(tmp_path, files: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Push `files` to an app's repository and run buildpacks:show on it."""
    import json as _json
    import subprocess
    from types import SimpleNamespace

    from gitd import commands, gitserve
    from gitd.core.config import Settings
    from gitd.core.store import Store
    from tests.fakes import Bridge

    settings = Settings(data_dir=tmp_path / "data", instance="t1234567")
    settings.data_dir.mkdir(parents=True)
    store = Store(settings.data_dir / "gitd.db")
    store.add_key("admin", "SHA256:admin", "ssh-ed25519 AAAA admin", True)
    store.create_app("mono")
    bare = gitserve.create_repo(settings.repos_dir, "mono")
    work = tmp_path / "work"
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text if isinstance(text, str) else _json.dumps(text))
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "x"],
                 ["push", "-q", bare.path, "main"]):
        subprocess.run(["git", *argv], cwd=work, env=env, check=True, capture_output=True)
    ctx = commands.Context(SimpleNamespace(store=store, settings=settings),
                           store.get_key("admin"), Bridge())
    status = commands.dispatch(ctx, ["buildpacks:show", "mono", *args])
    return status, "".join(ctx.bridge.stdout), "".join(ctx.bridge.stderr)


MONOREPO = {
    "app.json": {"services": {
        "frontend": {"build": {"dir": "frontend"}, "port": 3000, "routes": [{"path": "/"}]},
        "backend": {"build": {"dir": "backend"}, "port": 8080,
                    "processes": {"web": "gunicorn -b 0.0.0.0:8080 app:app"},
                    "routes": [{"path": "/api"}]},
        "docs": {"build": {"dir": "docs"}},
        "images": {"build": {"flake_attr": "backendImage"}},
    }},
    "frontend/index.html": "<p>hi</p>\n",
    "backend/requirements.txt": "gunicorn\n",
    "backend/app.py": "def app(environ, start_response):\n    pass\n",
    "docs/README": "nothing to build here\n",
}


def test_show_names_each_service_s_buildpack_and_command(tmp_path):
    status, out, err = _show(tmp_path, MONOREPO)
    assert (status, err) == (0, "")
    assert "buildpack:   services (app.json declares 4: backend, docs, frontend, images)" in out
    assert "service backend: python (found requirements.txt), dir backend/\n" \
           "  web:       gunicorn -b 0.0.0.0:8080 app:app\n" in out
    assert "service frontend: static (found index.html), dir frontend/\n  web:       " in out
    assert "service docs: none (no flake.nix, Dockerfile" in out
    assert "in docs/ (the build directory): add one, or change app.json services.docs.build.dir)" \
        in out
    assert "service images: nix (flake attribute backendImage of the root flake.nix), " \
           "flake attribute backendImage\n" in out
    assert "repository's root)\n" in out  # the build dir line, not an error
    assert "none (no " not in out.split("service")[0]


def test_show_json_holds_each_service_s_dockerfile_and_dockerfile_says_why_not(tmp_path):
    import json as _json

    status, out, _ = _show(tmp_path, MONOREPO, "--json")
    services = {s["name"]: s for s in _json.loads(out)["services"]}
    assert services["backend"]["selected"] == "python"
    assert "gunicorn" in services["backend"]["dockerfile"]
    assert services["docs"]["error"].startswith("no flake.nix")
    with pytest.raises(UsageError, match="one image per app.json service"):
        _show(tmp_path / "again", MONOREPO, "--dockerfile")

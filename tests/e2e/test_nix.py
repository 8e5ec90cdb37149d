"""Nix flakes pushed end to end, and the buildpacks:* commands: real git,
ssh, gitd, nix, Docker and Traefik.

The flakes have no inputs (no nixpkgs here): their derivations copy the
static /bin/busybox, see tests/nix/fixtures.py. Every app a test creates is
destroyed when it ends, and with it its images and GC roots.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

import buildpacks
from tests.conftest import require
from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, git, make_repo, unique_app
from tests.nix import fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.nix]

SYSTEM = fixtures.SYSTEM
LAYERS = re.compile(r"image: (\d+) layers? \((\d+) reused\)")


@pytest.fixture(scope="module", autouse=True)
def nix_installed():
    require(shutil.which("nix") is not None, "nix is not installed (apt-get install nix-bin)")


@pytest.fixture
def new_app(gitd, docker_client):
    """new_app(prefix) -> a created app (no drain wait: tests need no old
    requests to finish); each is destroyed at the end of the test."""
    created: list[str] = []

    def make(prefix: str) -> str:
        app = unique_app(prefix)
        result = gitd.ssh("apps:create", app)
        assert result.returncode == 0, result.stderr
        created.append(app)
        assert gitd.ssh("checks:set", app, "drain=0").returncode == 0
        return app

    yield make
    for app in created:
        if app in gitd.ssh("apps:list").stdout:
            destroyed = gitd.ssh("apps:destroy", app, "--force")
            assert destroyed.returncode == 0, destroyed.stderr
        assert gitd.containers(docker_client, app) == []
        assert docker_client.images.list(name=f"gitd/{app}") == []
        assert not (gitd.data_dir / "gcroots" / app).exists()


def pushed(gitd, repo, app):
    result = gitd.push(repo, app)
    assert result.returncode == 0, result.stderr
    return result.stderr


def failed(gitd, repo, app):
    result = gitd.push(repo, app)
    assert result.returncode != 0, result.stderr
    assert "[remote rejected] main -> main" in result.stderr
    return result.stderr


def show(gitd, app) -> str:
    result = gitd.ssh("buildpacks:show", app)
    assert result.returncode == 0, result.stderr
    return result.stdout


def line(text: str, prefix: str) -> str:
    """The first line of `text` starting with `prefix`, without it."""
    for row in text.splitlines():
        if row.startswith(prefix):
            return row[len(prefix):].strip()
    raise AssertionError(f"no {prefix!r} line in:\n{text}")


def layers(output: str) -> tuple[int, int]:
    found = LAYERS.search(output)
    assert found, output
    return int(found.group(1)), int(found.group(2))


def statuses(gitd, app) -> list[tuple[int, str]]:
    with gitd.db() as db:
        return db.execute("SELECT version, status FROM releases WHERE app = ? ORDER BY version",
                          [app]).fetchall()


def test_a_flake_package_becomes_an_image_rebuilds_reuse_layers_and_a_broken_flake_changes_nothing(
        gitd, docker_client, new_app, tmp_path):
    app = new_app("nixpkg")
    repo = make_repo(fixtures.write_web_flake(tmp_path / "app", message="hello from nix"), {})

    first = pushed(gitd, repo, app)
    assert "nix buildpack: found flake.nix" in first
    assert f"-----> nix build packages.{SYSTEM}.default" in first
    assert "-----> Assembling an image from 3 store paths" in first
    assert "/bin/serve" in line(first.replace("remote: ", ""), "       command:")
    assert layers(first)[0] == 4  # /tmp, busybox, the assets, the app
    assert gitd.get(gitd.host(app)) == (200, "hello from nix\n")
    assert line(show(gitd, app), "buildpack:") == "nix (found flake.nix)"
    container = gitd.containers(docker_client, app)[0]
    assert container.attrs["Config"]["Cmd"][0].endswith("/bin/serve")  # no shell in between
    assert "PORT=5000" in container.attrs["Config"]["Env"]

    # One line of the app changes: only its own store path is a new layer.
    fixtures.write_web_flake(repo, message="hello again from nix")
    commit(repo, {}, "new message")
    second = pushed(gitd, repo, app)
    total, reused = layers(second)
    assert total == 4 and reused == 3, second
    assert gitd.get(gitd.host(app)) == (200, "hello again from nix\n")
    gc_roots = gitd.data_dir / "gcroots" / app
    assert (gc_roots / "v1").is_symlink() and (gc_roots / "v2").is_symlink()
    v2_commit = git(repo, "rev-parse", "HEAD").strip()

    fixtures.write_failing_flake(repo)
    commit(repo, {}, "broken")
    broken = failed(gitd, repo, app)
    assert "boom: this build fails on purpose" in broken
    assert "nix build packages." in broken and "v2 keeps serving" in broken
    assert gitd.get(gitd.host(app)) == (200, "hello again from nix\n")
    assert statuses(gitd, app) == [(1, "succeeded"), (2, "succeeded"), (3, "failed")]
    assert not (gc_roots / "v3").exists() and not (gc_roots / "v3").is_symlink()
    assert not docker_client.images.list(name=f"gitd/{app}:v3")
    ls = subprocess.run(["git", "ls-remote", gitd.remote(app), "refs/heads/main"], cwd=repo,
                        env=gitd.git_env(), capture_output=True, text=True)
    assert ls.stdout.split()[0] == v2_commit


def test_image_outputs_and_choosing_one_with_buildpacks_set_attr(gitd, docker_client, new_app,
                                                                  tmp_path):
    app = new_app("niximg")
    repo = make_repo(fixtures.write_web_image_flake(
        tmp_path / "app", {"docker": ("tarball", "one image")}, with_default=True), {})

    first = pushed(gitd, repo, app)
    assert f"-----> nix build packages.{SYSTEM}.docker" in first
    assert "-----> Loading the image /nix/store/" in first
    assert gitd.get(gitd.host(app)) == (200, "one image\n")
    image = docker_client.images.get(f"gitd/{app}:v1")
    assert image.labels["gitd.app"] == app
    assert not any(t.startswith("nix-fixture/") for t in image.tags)  # nix's own tag was replaced

    # Two images and neither has a name gitd looks for: the push says what to do.
    fixtures.write_web_image_flake(repo, {"frontendImage": ("stream", "front end"),
                                          "backendImage": ("tarball", "back end")})
    commit(repo, {}, "two images")
    ambiguous = failed(gitd, repo, app)
    assert "(it has: backendImage, frontendImage)" in ambiguous
    assert gitd.get(gitd.host(app)) == (200, "one image\n")

    chosen = gitd.ssh("buildpacks:set", app, "--attr", "backendImage")
    assert chosen.returncode == 0, chosen.stderr
    assert line(show(gitd, app), "image_attr:") == "backendImage"
    second = pushed(gitd, repo, app)  # the same commit: the failed push left the branch behind
    assert f"-----> nix build packages.{SYSTEM}.backendImage" in second
    assert gitd.get(gitd.host(app)) == (200, "back end\n")

    assert gitd.ssh("buildpacks:set", app, "--attr", "frontendImage").returncode == 0
    commit(repo, {}, "front end now")
    third = pushed(gitd, repo, app)
    assert "streaming frontendImage" in third  # streamLayeredImage's script ran
    assert gitd.get(gitd.host(app)) == (200, "front end\n")
    data = json.loads(gitd.ssh("buildpacks:show", app, "--json").stdout)
    assert data["options"] == {"image_attr": "frontendImage"}
    assert (data["selected"], data["reason"]) == ("nix", "found flake.nix")
    assert data["last_build"]["release"] == 4 and data["last_build"]["buildpack"] == "nix"

    assert gitd.ssh("buildpacks:set", app, "--attr", "nope").returncode == 0
    commit(repo, {}, "a wrong choice")
    wrong = failed(gitd, repo, app)
    assert "nope" in wrong and "backendImage, frontendImage" in wrong
    assert gitd.get(gitd.host(app)) == (200, "front end\n")


def test_build_directory_forced_buildpack_and_show(gitd, docker_client, new_app, tmp_path):
    """One repo with a flake and a Dockerfile at its root, a flake in
    backend/ and only docs in docs/."""
    app = new_app("mono")
    repo = make_repo(fixtures.write_web_flake(tmp_path / "app", message="root flake"), {
        **web_app("from the dockerfile"),
        "backend/flake.nix": fixtures.write_web_flake(
            tmp_path / "backend", message="backend flake").joinpath("flake.nix").read_text(),
        "docs/README.md": "no code here\n",
    })
    before = show(gitd, app)
    assert line(before, "buildpack:") == "no push yet"
    assert "settings:    none" in before

    # A flake and a Dockerfile: the setting picks the Dockerfile.
    forced = gitd.ssh("buildpacks:set", app, "dockerfile")
    assert forced.returncode == 0, forced.stderr
    assert line(show(gitd, app), "buildpack:") == "dockerfile (set with buildpacks:set)"
    first = pushed(gitd, repo, app)
    assert "dockerfile buildpack: set with buildpacks:set" in first
    assert "-----> Building with Dockerfile" in first
    assert gitd.get(gitd.host(app)) == (200, "from the dockerfile\n")
    shown = show(gitd, app)
    assert line(shown, "buildpack:") == "dockerfile (set with buildpacks:set)"
    assert line(shown, "live:") == "v1 built with dockerfile"
    assert line(shown, "commit:") == f"{git(repo, 'rev-parse', 'HEAD')[:8]} (main)"

    # A monorepo: build from backend/, detected there.
    assert gitd.ssh("buildpacks:unset", app, "buildpack").returncode == 0
    moved = gitd.ssh("buildpacks:set", app, "--dir", "/backend/")
    assert moved.returncode == 0, moved.stderr
    assert "dir backend/" in moved.stdout
    shown = show(gitd, app)
    assert line(shown, "buildpack:") == "nix (found flake.nix)"
    assert line(shown, "build dir:") == "backend/"
    commit(repo, {}, "build the backend")
    second = pushed(gitd, repo, app)
    assert "-----> Building with Nix (flake.nix)" in second
    assert gitd.get(gitd.host(app)) == (200, "backend flake\n")

    # Nothing to build there: the error says what was looked for, and where.
    assert gitd.ssh("buildpacks:set", app, "--dir", "docs").returncode == 0
    expected = buildpacks.nothing_found("docs")  # every file looked for: see test_stacks.py
    assert expected.startswith("no flake.nix, Dockerfile, requirements.txt, ")
    assert expected.endswith(" in docs/ (the build directory): "
                             "add one, or change it with buildpacks:set APP --dir DIR")
    assert line(show(gitd, app), "buildpack:") == f"none ({expected})"
    commit(repo, {}, "docs only")
    nothing = failed(gitd, repo, app)
    assert f"remote:  !     {expected}" in nothing  # whole on the pusher's error line
    assert f"(deploy failed: {expected[:100]}" in nothing  # (git's line is cut at 200 bytes)
    assert gitd.get(gitd.host(app)) == (200, "backend flake\n")
    assert gitd.ssh("buildpacks:set", app, "--dir", "missing").returncode == 0
    assert "build directory 'missing' is not in commit" in line(show(gitd, app), "buildpack:")

    # No settings: the root's flake.nix comes before its Dockerfile.
    cleared = gitd.ssh("buildpacks:set", app, "--clear")
    assert cleared.returncode == 0, cleared.stderr
    shown = show(gitd, app)
    assert line(shown, "buildpack:") == "nix (found flake.nix)"
    assert line(shown, "build dir:") == "/ (the repository's root)"
    third = pushed(gitd, repo, app)
    assert "nix buildpack: found flake.nix" in third
    assert gitd.get(gitd.host(app)) == (200, "root flake\n")
    assert [r[1] for r in statuses(gitd, app)] == ["succeeded", "succeeded", "failed", "succeeded"]


def test_buildpacks_set_refuses_what_it_cannot_use(gitd, new_app):
    app = new_app("bpset")
    for args, message in [
        (["heroku"], "unknown buildpack 'heroku'; choose one of: nix, dockerfile"),
        (["--dir", "../etc"], "invalid build directory"),
        (["--dir", "a/.git/b"], "invalid build directory"),
        (["--attr", "a.b"], "invalid --attr"),
        (["--package", "x/y"], "invalid --package"),
        (["--attr", "a", "--package", "b"], "not allowed with argument"),
        (["--dir"], "argument --dir: expected one argument"),
        (["--clear", "nix"], "--clear takes no other settings"),
        ([], "nothing to set"),
    ]:
        result = gitd.ssh("buildpacks:set", app, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert gitd.ssh("buildpacks:unset", app, "colour").returncode == 2
    assert gitd.ssh("buildpacks:show", "no-such-app").returncode != 0

    assert gitd.ssh("buildpacks:set", app, "nix", "--dir", "svc/api", "--package", "server"
                    ).returncode == 0
    data = json.loads(gitd.ssh("buildpacks:show", app, "--json").stdout)
    assert (data["buildpack"], data["build_dir"], data["options"]) == (
        "nix", "svc/api", {"package_attr": "server"})
    assert (data["selected"], data["reason"], data["commit"]) == (
        "nix", "set with buildpacks:set", None)
    # --attr replaces --package: one choice at a time
    assert gitd.ssh("buildpacks:set", app, "--attr", "img").returncode == 0
    assert json.loads(gitd.ssh("buildpacks:show", app, "--json").stdout)["options"] == {
        "image_attr": "img"}
    assert gitd.ssh("buildpacks:set", app, "--dir", ".").returncode == 0
    assert gitd.ssh("buildpacks:unset", app, "attr").returncode == 0
    data = json.loads(gitd.ssh("buildpacks:show", app, "--json").stdout)
    assert (data["buildpack"], data["build_dir"], data["options"]) == ("nix", "", {})
    assert gitd.ssh("buildpacks:unset", app).returncode == 0
    data = json.loads(gitd.ssh("buildpacks:show", app, "--json").stdout)
    assert (data["buildpack"], data["reason"]) == (None, "no push yet")
    helped = gitd.ssh("help", "buildpacks")
    assert all(f"buildpacks:{verb}" in helped.stdout for verb in ("show", "set", "unset"))

"""The nix buildpack against the real nix and docker of this machine.

Without them each test fails (tests/conftest.py: require), never skips.
Every image a test makes is removed by id afterwards.
"""

from __future__ import annotations

import os
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from buildpacks import BuildRequest
from buildpacks.nix import NixBuildpack, remove_gc_root
from gitd.core.errors import BuildError
from tests.nix import fixtures

pytestmark = pytest.mark.nix
LABELS = {"gitd.test": "nix-unit"}


@pytest.fixture(scope="module")
def client():
    return fixtures.require_nix_and_docker()


@pytest.fixture
def build(client, tmp_path):
    """build(source, release, **request fields) -> (BuildResult, emitted lines, request)."""
    repo = f"gitd-test/nix-{uuid.uuid4().hex[:8]}"
    made: list[str] = []

    def run(source: Path, release: int = 1, **fields):
        lines: list[str] = []
        fields.setdefault("trusted", True)  # an admin's push, unsandboxed as ever
        tag = f"{repo}:v{release}"
        made.append(tag)
        request = BuildRequest(
            app="nixtest", release=release, source_dir=source, image_tag=tag,
            labels=LABELS, emit=lines.append, docker=client,
            work_dir=tmp_path / f"work-{release}", gc_root=tmp_path / "gcroots" / f"v{release}",
            **fields,
        )
        try:
            result = NixBuildpack().build(request)
        except BuildError as exc:
            exc.lines = lines
            raise
        return result, lines, request

    yield run
    for tag in made:
        for image in client.images.list(name=tag):
            client.images.remove(image.id, force=True)


def _get(url: str, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_package_becomes_an_image_of_its_closure_that_serves(client, build, tmp_path):
    source = fixtures.write_web_flake(tmp_path / "src", message="served from the nix store")
    result, lines, request = build(source)

    out = result.details["out_path"]
    assert result.details["attr"] == "default"
    assert result.details["layers"] == 4  # /tmp, busybox, assets, the app
    assert result.details["size"] > 1_000_000
    assert request.gc_root.is_symlink() and str(request.gc_root.resolve()) == out
    image = client.images.get(result.image_id)
    assert request.image_tag in image.tags
    assert image.labels == LABELS
    assert image.attrs["Config"]["Cmd"] == [f"{out}/bin/serve"]
    assert f"PATH={out}/bin:" in image.attrs["Config"]["Env"][0]
    assert "-----> Building with Nix (flake.nix)" in lines
    assert "       hello-web> built hello-web" in lines  # the build log, streamed
    assert lines[-1] == "       image: 4 layers (%d reused), 2.0 MB" % result.details["layers_reused"]

    container = client.containers.run(
        result.image_id, detach=True, labels=LABELS, ports={"5000/tcp": ("127.0.0.1", None)}
    )
    try:
        container.reload()
        port = container.ports["5000/tcp"][0]["HostPort"]
        assert _get(f"http://127.0.0.1:{port}/") == "served from the nix store\n"
        assert _get(f"http://127.0.0.1:{port}/style.css") == "body { color: teal }\n"
        busybox = Path(out, "bin", "serve").read_text().split()[0].removeprefix("#!")
        assert container.exec_run([busybox, "touch", "/tmp/writable"]).exit_code == 0
    finally:
        container.remove(force=True)

    remove_gc_root(request.gc_root)
    assert not request.gc_root.is_symlink()


def test_a_rebuild_after_a_small_change_reuses_the_unchanged_layers(client, build, tmp_path):
    source = tmp_path / "src"
    first, _, _ = build(fixtures.write_web_flake(source, message="one"), release=1)
    second, lines, _ = build(fixtures.write_web_flake(source, message="two"), release=2)

    assert first.details["out_path"] != second.details["out_path"]
    assert second.details["layers"] == 4
    assert second.details["layers_reused"] == 3
    assert "       image: 4 layers (3 reused), 2.0 MB" in lines
    old = client.images.get(first.image_id).attrs["RootFS"]["Layers"]
    new = client.images.get(second.image_id).attrs["RootFS"]["Layers"]
    assert old[:3] == new[:3] and old[3] != new[3]  # same store path, same digest


def test_without_an_app_the_procfile_web_line_is_the_command(client, build, tmp_path):
    source = fixtures.write_web_flake(tmp_path / "src", with_app=False)
    result, lines, _ = build(source, procfile={"web": "serve --verbose"})
    # the closure has no bin/sh, so the line is split rather than run by a shell
    assert client.images.get(result.image_id).attrs["Config"]["Cmd"] == ["serve", "--verbose"]
    assert "       command: serve --verbose" in lines


def test_a_flake_image_tarball_is_loaded_retagged_and_labelled(client, build, tmp_path):
    source = fixtures.write_image_flake(tmp_path / "src", {"image": "stream", "docker": "tarball"})
    result, lines, request = build(source)

    assert result.details["attr"] == "docker"  # `docker` is looked for before `image`
    assert result.details["out_path"].endswith(".tar.gz")
    image = client.images.get(result.image_id)
    assert image.tags == [request.image_tag]
    assert image.labels == {"fixture": "docker", **LABELS}
    assert client.images.list(name="nix-fixture/docker") == []  # nix's own tag never lands
    assert result.details["layers"] == 1
    assert request.gc_root.resolve() == Path(result.details["out_path"])


def test_image_attr_chooses_a_streamed_image(client, build, tmp_path):
    source = fixtures.write_image_flake(tmp_path / "src", {"docker": "tarball", "image": "stream"})
    result, lines, _ = build(source, options={"image_attr": "image"})

    assert result.details["attr"] == "image"
    assert client.images.get(result.image_id).labels == {"fixture": "image", **LABELS}
    assert "       streaming image" in lines  # the script's stderr reaches emit
    assert client.images.list(name="nix-fixture/image") == []


def test_a_stream_script_that_fails_is_a_build_error(client, build, tmp_path):
    source = fixtures.write_image_flake(tmp_path / "src", {"image": "broken-stream"})
    with pytest.raises(BuildError, match=r"image stream script\) exited with status 4") as caught:
        build(source)
    assert "       cannot stream image" in caught.value.lines
    assert not (tmp_path / "gcroots" / "v1").is_symlink()  # a failed release keeps no GC root


def test_an_image_attr_that_is_not_an_image_is_a_build_error(build, tmp_path):
    source = fixtures.write_image_flake(tmp_path / "src", {"docker": "tarball"})
    with pytest.raises(BuildError, match=r"is not an image: expected a docker-archive tarball"):
        build(source, options={"image_attr": "default"})


def test_a_failing_builder_shows_its_output_and_fails(build, tmp_path):
    with pytest.raises(BuildError, match=r"nix build packages\.\S+\.default failed: builder for .* failed") as caught:
        build(fixtures.write_failing_flake(tmp_path / "src"))
    assert "       broken> boom: this build fails on purpose" in caught.value.lines


def test_a_flake_that_does_not_parse_shows_nix_s_error(build, tmp_path):
    with pytest.raises(BuildError, match="cannot read flake.nix: syntax error") as caught:
        build(fixtures.write_unparsable_flake(tmp_path / "src"))
    assert any("syntax error" in line for line in caught.value.lines)


def test_the_build_environment_reaches_nix(build, tmp_path):
    # NIX_CONFIG in request.env is how an operator tunes nix; max-jobs = 0
    # makes a build that needs building fail, which proves it arrived.
    env = {**os.environ, "NIX_CONFIG": "max-jobs = 0"}
    with pytest.raises(BuildError, match="max-jobs"):
        build(fixtures.write_web_flake(tmp_path / "src"), env=env)

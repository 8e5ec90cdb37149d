"""What a hostile deployer may send, refused as plain data: Dockerfile image
references, routing labels, hosts, resource values, checkout limits, logs."""

import os
import shutil

import pytest
from dulwich.objects import Blob, Tree
from dulwich.repo import MemoryRepo

from buildpacks import dockerfile_refs
from gitd.core import validate
from gitd.core.config import Settings, load_settings
from gitd.core.errors import BuildError, GitdError, UsageError
from hooks import checkout, router
from gitd.core import resources
from hooks.checks import HealthCheck
from hooks.specs import Target, app_network, container_specs, release_task_spec
from hooks.events import Progress


def images(text: str) -> list[str]:
    return [r.image for r in dockerfile_refs.references(text)[0]]


# --- Dockerfile references ---------------------------------------------------

def test_plain_from_and_stages():
    text = """# syntax=docker/dockerfile:1
FROM gitd-ci/debian:bookworm AS build
RUN echo hi
from build
COPY --from=build /a /b
COPY --from=0 /a /b
COPY --from=gitd/other:v1 /app /stolen
"""
    assert images(text) == ["gitd-ci/debian:bookworm", "gitd/other:v1"]


def test_arg_substitution_in_from():
    text = """ARG NAME=gitd
ARG APP=other
ARG REF=${NAME}/${APP}:v1
FROM $REF
FROM ${MISSING:-gitd/second}:v2
FROM gitd/${UNDEFINED}third:v3
FROM ${NAME:+gitd/fourth}:v4
"""
    assert images(text) == ["gitd/other:v1", "gitd/second:v2", "gitd/third:v3", "gitd/fourth:v4"]


def test_quoted_arg_defaults_and_continuations():
    text = 'ARG X="gitd/other:v1"\nFROM \\\n  # a comment inside\n  $X AS a\n'
    assert images(text) == ["gitd/other:v1"]


def test_backtick_escape_directive():
    text = "# escape=`\nFROM `\n gitd/other:v1\n"
    assert images(text) == ["gitd/other:v1"]


def test_mount_from_and_onbuild():
    text = """FROM scratch
RUN --mount=type=bind,from=gitd/other:v1,target=/x true
ONBUILD COPY --from=gitd/third:v1 / /
"""
    assert images(text) == ["gitd/other:v1", "gitd/third:v1"]
    refs = dockerfile_refs.onbuild_references(["COPY --from=gitd/other:v9 /app /app"])
    assert [r.image for r in refs] == ["gitd/other:v9"]


@pytest.mark.parametrize("text", [
    'FROM "gitd/other:v1"\n',
    "ARG X\nFROM ${X?boom}\n",
    "ARG X=a\nFROM ${X/a/gitd}\n",
    "FROM base\nCOPY --from=$IMG / /\n",
    "FROM base\nCOPY --from=${IMG} / /\n",
    "ARG X='a b'\nARG Y=$X\nFROM gitd/$Y\n",
    "FROM\n",
    "# escape=x\nFROM a\n",
])
def test_unreadable_references_are_refused(text):
    with pytest.raises(BuildError):
        dockerfile_refs.references(text)


# --- routing labels ----------------------------------------------------------

def test_images_with_traefik_labels_are_refused_in_any_case():
    router.refuse_routing_labels({"maintainer": "me", "gitd.app": "x"}, "the image")
    router.refuse_routing_labels(None, "the image")
    for key in ("traefik.http.routers.x.rule", "Traefik.enable", "TRAEFIK.TCP.routers.x.rule",
                " traefik.http.services.s.loadbalancer.server.port"):
        with pytest.raises(GitdError, match="Traefik labels"):
            router.refuse_routing_labels({key: "Host(`victim.example.com`)"}, "the image")


# --- hosts -------------------------------------------------------------------

@pytest.mark.parametrize("host", [
    "a`) || Host(`b.com", "*.example.com", "example.com`", "1.2.3.4", "10.0.0.1.", "[::1]",
    "exa mple.com", "ex\u0430mple.com", "a..b", "-a.com", "a.com/x", "localhost", "",
])
def test_hostile_hosts_are_refused(host):
    with pytest.raises(UsageError):
        validate.hostname(host)


def test_default_hosts_of_other_apps_are_reserved():
    assert validate.own_host("hello.apps.example.com", "hello", "apps.example.com")
    assert validate.own_host("www.example.com", "hello", "apps.example.com")
    assert validate.own_host("a.b.apps.example.com", "hello", "apps.example.com")
    with pytest.raises(UsageError, match="reserved for the app 'other'"):
        validate.own_host("other.apps.example.com", "hello", "apps.example.com")


# --- resources ---------------------------------------------------------------

def test_resource_values():
    assert resources.parse_pairs(["memory=512M", "cpus=1.5", "pids=512"]) == {
        "memory": "512m", "cpus": "1.5", "pids": "512"}
    args = resources.container_args({"memory": "512m", "cpus": "0.5", "pids": "100"})
    assert args == {"mem_limit": 512 * 1024**2, "memswap_limit": 512 * 1024**2,
                    "nano_cpus": 500_000_000, "pids_limit": 100}
    assert resources.build_limits({"memory": "1g", "pids": "10"}) == {
        "memory": 1024**3, "memswap": 1024**3}


@pytest.mark.parametrize("pair", [
    "memory=-1", "memory=0", "memory=1e999", "memory=inf", "memory=512mb", "memory=5m",
    "memory=99999999g", "memory=", "memory=1.5g", "cpus=0", "cpus=-1", "cpus=inf", "cpus=nan",
    "cpus=1e999", "cpus=100000", "cpus=0.001", "pids=0", "pids=-5", "pids=1e3", "pids=99999999",
    "pids=²", "memory=５１２m", "swap=1g", "memory", "=1",
])
def test_hostile_resource_values_are_refused(pair):
    with pytest.raises(UsageError):
        resources.parse_pairs([pair])


def test_defaults_and_settings():
    settings = Settings()
    assert resources.effective(settings, {}) == {"memory": "1g", "cpus": "1", "pids": "1024"}
    assert resources.effective(settings, {"resources": {"memory": "2g"}})["memory"] == "2g"
    no_limits = Settings(default_memory="", default_cpus="0", default_pids="")
    assert resources.effective(no_limits, {}) == {}


@pytest.mark.parametrize("env", [
    {"GITD_DEFAULT_MEMORY": "lots"}, {"GITD_BUILD_TIMEOUT": "inf"},
    {"GITD_MAX_EXPORT_FILES": "0"}, {"GITD_RELEASE_TIMEOUT": "nan"},
    {"GITD_MAX_LOG_BYTES": "-1"}, {"GITD_DEFAULT_PIDS": "1e999"},
])
def test_bad_limit_settings_are_refused(env, tmp_path):
    with pytest.raises(GitdError):
        load_settings(tmp_path, environ=env)


def test_specs_join_the_app_network_with_limits():
    settings = Settings(instance="abcd1234", docker_network="shared")
    target = Target(app="hello", version=1, seq=2, image="sha256:x", config={}, port=5000,
                    formation={"web": 1, "worker": 1}, commands={"web": None, "worker": ["w"]},
                    hosts=["hello.example.com"], check=HealthCheck(),
                    release_command=["/bin/sh", "-c", "true"],
                    limits=resources.container_args({"memory": "256m", "pids": "64"}))
    specs = container_specs(target, settings, probe="/bin/busybox")
    specs.append(release_task_spec(target, settings))
    for spec in specs:
        assert spec["networks"] == [app_network("abcd1234", "hello"), "shared"]
        assert spec["mem_limit"] == 256 * 1024**2 and spec["pids_limit"] == 64
        assert "network" not in spec


# --- checkout ----------------------------------------------------------------

def _repo_with(entries: dict[bytes, tuple[int, bytes]]):
    """A commit whose root tree holds `entries` (name -> (mode, data or tree sha))."""
    repo = MemoryRepo()
    tree = Tree()
    for name, (mode, data) in entries.items():
        if mode == 0o040000:
            tree.add(name, mode, data)
            continue
        blob = Blob.from_string(data)
        repo.object_store.add_object(blob)
        tree.add(name, mode, blob.id)
    repo.object_store.add_object(tree)
    return repo, tree


@pytest.mark.parametrize("link", [b"/dev/zero", b"../../etc/passwd", b"/etc/shadow", b".."])
def test_symlinks_out_of_the_tree_are_refused(tmp_path, link):
    repo, tree = _repo_with({b".dockerignore": (0o120000, link), b"Dockerfile": (0o100644, b"x")})
    with pytest.raises(BuildError, match="outside the build directory"):
        checkout.export(repo, tree, tmp_path / "src")


def test_symlink_through_a_linked_directory_is_refused(tmp_path):
    repo = MemoryRepo()
    inner = Blob.from_string(b"..")
    repo.object_store.add_object(inner)
    sub = Tree()
    sub.add(b"up", 0o120000, inner.id)  # d/up -> .. (the root: fine on its own)
    repo.object_store.add_object(sub)
    tree = Tree()
    tree.add(b"d", 0o040000, sub.id)
    escape = Blob.from_string(b"d/up/../etc")  # through d/up: outside
    repo.object_store.add_object(escape)
    tree.add(b"x", 0o120000, escape.id)
    repo.object_store.add_object(tree)
    with pytest.raises(BuildError, match="outside"):
        checkout.export(repo, tree, tmp_path / "src")


def test_symlinks_inside_the_tree_are_kept(tmp_path):
    repo, tree = _repo_with({b"a": (0o100644, b"x"), b"b": (0o120000, b"a")})
    assert checkout.export(repo, tree, tmp_path / "src") == 2
    assert os.readlink(tmp_path / "src" / "b") == "a"


def test_a_git_bomb_stops_at_the_file_limit(tmp_path):
    repo = MemoryRepo()
    blob = Blob.from_string(b"x")
    repo.object_store.add_object(blob)
    level = Tree()
    for i in range(10):
        level.add(f"f{i}".encode(), 0o100644, blob.id)
    repo.object_store.add_object(level)
    for _ in range(6):  # 10^6 files from a few objects
        parent = Tree()
        for i in range(10):
            parent.add(f"d{i}".encode(), 0o040000, level.id)
        repo.object_store.add_object(parent)
        level = parent
    with pytest.raises(BuildError, match="max_export_files"):
        checkout.export(repo, level, tmp_path / "src", checkout.Limits(files=500))
    big = Blob.from_string(b"y" * 1000)
    repo.object_store.add_object(big)
    tree = Tree()
    for i in range(5):
        tree.add(f"b{i}".encode(), 0o100644, big.id)
    repo.object_store.add_object(tree)
    with pytest.raises(BuildError, match="max_export_bytes"):
        checkout.export(repo, tree, tmp_path / "src2", checkout.Limits(bytes=2500))


def test_deep_trees_do_not_recurse(tmp_path):
    repo = MemoryRepo()
    blob = Blob.from_string(b"x")
    repo.object_store.add_object(blob)
    tree = Tree()
    tree.add(b"f", 0o100644, blob.id)
    repo.object_store.add_object(tree)
    for _ in range(3000):  # deeper than Python's recursion limit
        parent = Tree()
        parent.add(b"d", 0o040000, tree.id)
        repo.object_store.add_object(parent)
        tree = parent
    with pytest.raises(BuildError, match="more than 200 deep"):
        checkout.export(repo, tree, tmp_path / "src")
    shutil.rmtree(tmp_path / "src")  # what the pipeline does with it afterwards


# --- the log keeps its tail --------------------------------------------------

def test_progress_keeps_the_tail():
    progress = Progress(None, "hello", max_bytes=1000)
    for i in range(1000):
        progress.line(f"line {i}")
    text = progress.text
    assert len(text) < 1200
    assert "line 999" in text and "line 0\n" not in text
    assert "max_log_bytes" in text.splitlines()[0]
    huge = Progress(None, "hello", max_bytes=100)
    huge.line("x" * 10_000)
    assert len(huge.text) < 300


# --- a deployer's flake ------------------------------------------------------

def _lock(**inputs) -> str:
    import json
    nodes = {"root": {"inputs": {k: k for k in inputs}}}
    nodes.update({k: {"locked": v, "original": v} for k, v in inputs.items()})
    return json.dumps({"nodes": nodes, "root": "root", "version": 7})


def test_local_flake_inputs_are_refused_for_deployers():
    from buildpacks import nix_sandbox
    assert nix_sandbox.refuse_local_inputs(None) is None
    assert nix_sandbox.refuse_local_inputs(_lock(
        nixpkgs={"type": "github", "owner": "NixOS", "repo": "nixpkgs", "rev": "a" * 40},
        lib={"type": "git", "url": "https://example.com/lib.git"})) is None
    for bad in ({"type": "path", "path": "/etc"}, {"type": "file", "url": "file:///etc/shadow"},
                {"type": "git", "url": "file:///root/secret"}, {"type": "tarball", "url": "/tmp/x.tgz"},
                {"type": "path", "path": "./sub"}):
        assert "local" in nix_sandbox.refuse_local_inputs(_lock(x=bad))
    assert nix_sandbox.refuse_local_inputs("{not json") == "flake.lock is not valid JSON"
    assert nix_sandbox.refuse_local_inputs('{"nodes": []}') == "flake.lock has no nodes"


def test_deployers_nix_commands_are_sandboxed_and_locked():
    from buildpacks import nix_sandbox
    flags = " ".join(nix_sandbox.flags(False, "1.5"))
    assert "--option sandbox true --option sandbox-fallback false" in flags
    assert flags.endswith("--option max-jobs 1 --option cores 1")
    assert nix_sandbox.flags(False)[-1] == "0"  # no cpus limit: every core
    assert nix_sandbox.flags(True)[-3:] == ["--option", "sandbox", "false"]
    assert nix_sandbox.command_flags(False, ["build", "--json", "x"]) == ["--no-update-lock-file"]
    assert nix_sandbox.command_flags(False, ["flake", "metadata", "x"]) == ["--no-update-lock-file"]
    assert nix_sandbox.command_flags(False, ["path-info", "--json", "/nix/store/x"]) == []
    assert nix_sandbox.command_flags(True, ["build", "x"]) == []


# --- which images a build may read -------------------------------------------

class _Image:
    def __init__(self, image_id, tags, onbuild=None):
        self.id, self.tags = image_id, tags
        self.attrs = {"Config": {"OnBuild": onbuild}}


class _Images:
    def __init__(self, images):
        self._images = images

    def get(self, ref):
        import docker.errors
        for image in self._images:
            if ref == image.id or ref in image.tags or image.id.startswith("sha256:" + ref):
                return image
        raise docker.errors.ImageNotFound(ref)


def _request(images, owners=None):
    from types import SimpleNamespace

    from buildpacks import BuildRequest
    return BuildRequest(app="mine", release=2, source_dir=None, image_tag="gitd/mine:v2",
                        labels={}, emit=print, docker=SimpleNamespace(images=_Images(images)),
                        work_dir=None, gc_root=None,
                        image_owners=lambda image_id: (owners or {}).get(image_id, set()))


def test_a_build_reads_base_and_own_images_only():
    from buildpacks.dockerfile import check_references
    base = _Image("sha256:" + "b" * 64, ["gitd-ci/debian:bookworm"])
    own = _Image("sha256:" + "c" * 64, ["gitd/mine:v1"])
    other = _Image("sha256:" + "d" * 64, ["gitd/other:v1"])
    released = _Image("sha256:" + "e" * 64, [])  # another app's release, its tag gone
    step = _Image("sha256:" + "f" * 64, [])  # an intermediate image of some build
    trap = _Image("sha256:" + "a" * 64, ["gitd/mine:v0"], onbuild=["COPY --from=gitd/other:v1 / /"])
    request = _request([base, own, other, released, step, trap],
                       owners={released.id: {"other"}, own.id: {"mine"}})
    check_references(request, "FROM gitd-ci/debian:bookworm\nFROM gitd/mine:v1\n"
                               "FROM not-here:1\nCOPY --from=0 / /\n")
    check_references(request, f"FROM {'c' * 12}\n")
    for text, why in (("FROM gitd/other:v1\n", "another app"),
                      ("FROM index.docker.io/gitd/other:v1\n", "another app"),
                      (f"FROM {'d' * 12}\n", "another app"),
                      (f"FROM base\nCOPY --from={released.id} / /\n", "another app"),
                      (f"FROM {step.id}\n", "untagged"),
                      ("FROM gitd/mine:v0\n", "another app"),
                      ("FROM 0123abc\n", "no such image"),
                      (f"FROM sha256:{'9' * 64}\n", "no such image")):
        with pytest.raises(BuildError, match=why):
            check_references(request, text)

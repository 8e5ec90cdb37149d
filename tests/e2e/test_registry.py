"""The registry swarm nodes pull from: Debian's docker-registry run by gitd,
pushed to through the real Docker engine."""

import io
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker.errors
import pytest

from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.registry import ManagedRegistry
from hooks.registry import MANIFEST_TYPES, ping, push_image, registry_host, remove_image
from tests.e2e.harness import free_port, unique_app


def _wait_new_pid(registry: ManagedRegistry, old: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.pid != old and registry.ready(timeout=0.5):
            return registry.pid
        time.sleep(0.1)
    return registry.pid


@pytest.fixture
def managed_registry(docker_client, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", registry_port=free_port(), instance="test")
    registry = ManagedRegistry(settings)
    registry.start()
    yield settings, registry
    registry.stop()


def _manifest_status(host: str, app: str, digest: str) -> int:
    req = urllib.request.Request(f"http://{host}/v2/gitd/{app}/manifests/{digest}",
                                 method="HEAD", headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def unique_image(docker_client, base_image):
    """An image of this test's own (a new manifest digest: the engine keeps
    manifests it pulled before and would not ask the registry again)."""
    name = unique_app("gitd-test/registry")
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(f"FROM {base_image}\nLABEL gitd.test={name}\n".encode()),
        tag=f"{name}:latest", labels={"gitd.test": "registry"}, rm=True)
    yield name, image.id
    try:
        docker_client.images.remove(image.id, force=True)
    except docker.errors.APIError:
        pass


def test_push_pull_by_digest_then_delete(docker_client, managed_registry, unique_image):
    settings, registry = managed_registry
    host = registry_host(settings)
    assert ping(host)
    assert (settings.data_dir / "registry").stat().st_mode & 0o777 == 0o700
    name, image_id = unique_image
    app = unique_app("reg")
    ref = push_image(docker_client, host, f"{name}:latest", app, "v1")
    assert ref.startswith(f"{host}/gitd/{app}@sha256:")
    digest = ref.split("@")[1]
    # the extra tag is gone, the image stays
    assert docker_client.images.get(image_id).tags == [f"{name}:latest"]
    assert _manifest_status(host, app, digest) == 200

    docker_client.images.remove(image_id, force=True)
    assert docker_client.images.pull(ref).id == image_id  # from the registry

    assert remove_image(settings, app, "v1")
    assert _manifest_status(host, app, digest) == 404
    assert remove_image(settings, app, "v1") is False  # already gone


def test_push_to_nothing_fails_clearly_and_leaves_no_tag(docker_client, base_image):
    host = f"127.0.0.1:{free_port()}"
    app = unique_app("reg")
    before = docker_client.images.get(base_image).tags
    with pytest.raises(GitdError, match=f"pushing {host}/gitd/{app} failed"):
        push_image(docker_client, host, base_image, app, "v1")
    assert docker_client.images.get(base_image).tags == before
    with pytest.raises(GitdError, match="not found"):
        push_image(docker_client, host, f"gitd-test/no-such-image-{app}:latest", app, "v1")


def test_a_killed_registry_is_restarted_and_stop_ends_it(managed_registry):
    settings, registry = managed_registry
    first = registry.pid
    os.kill(first, signal.SIGKILL)
    second = _wait_new_pid(registry, first)
    assert second != first and ping(registry_host(settings))
    assert int(registry.pid_path.read_text()) == second
    registry.stop()
    assert not Path(f"/proc/{second}").exists()
    assert not registry.pid_path.exists()
    assert not ping(registry_host(settings), timeout=1.0)


def test_swarm_gitd_runs_its_registry(swarm_gitd):
    helped = swarm_gitd.ssh("help")
    assert helped.returncode == 0, helped.stderr
    env = Path(f"/proc/{swarm_gitd.proc.pid}/environ").read_bytes().split(b"\0")
    port = next(int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"GITD_REGISTRY_PORT="))
    assert ping(f"127.0.0.1:{port}")
    pid = int((swarm_gitd.data_dir / "registry" / "registry.pid").read_text())
    assert b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()

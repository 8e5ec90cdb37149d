import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e.api_client import Api, new_token
from tests.e2e.harness import free_port, make_key, new_gitd, unique_app

BASE_IMAGE = "gitd-test/busybox"


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001
        client = None
        reason = f"no Docker engine: {exc}"
    require(client is not None, locals().get("reason", ""))
    for tool in ("git", "ssh", "ssh-keygen", "traefik"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    require(Path("/bin/busybox").exists(), "busybox-static is not installed")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client):
    """A tiny local base image: nothing can be pulled here. Built once per
    machine and kept: several test sessions may share it at once."""
    import docker.errors

    ref = f"{BASE_IMAGE}:latest"
    try:
        docker_client.images.get(ref)
    except docker.errors.ImageNotFound:
        with tempfile.TemporaryDirectory() as ctx:
            shutil.copy("/bin/busybox", Path(ctx) / "busybox")
            (Path(ctx) / "Dockerfile").write_text(
                "FROM scratch\nCOPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\n')
            docker_client.images.build(path=ctx, tag=ref, labels={"gitd.test": "base"}, rm=True)
    return ref


@pytest.fixture(scope="session")
def gitd(docker_client, base_image, tmp_path_factory):
    """One gitd shared by the tests that do not stop or kill it."""
    server = new_gitd(tmp_path_factory.mktemp("gitd"))
    server.start()
    yield server
    server.stop()
    server.cleanup(docker_client)


@pytest.fixture(scope="session")
def swarm(docker_client):
    """A single-node swarm on this machine (advertised on 127.0.0.1), left
    at the end if this session made it."""
    state = docker_client.info().get("Swarm", {}).get("LocalNodeState")
    made = state == "inactive"
    if made:
        # listening on every address: a Docker-in-Docker node (test_nodes.py)
        # reaches it through its bridge gateway; it advertises 127.0.0.1
        docker_client.swarm.init(advertise_addr="127.0.0.1")
    require(docker_client.info().get("Swarm", {}).get("ControlAvailable") is True,
            f"this Docker engine is not a swarm manager (swarm state {state})")
    yield docker_client
    if made:
        docker_client.swarm.leave(force=True)


def start_swarm_gitd(server, extra_env: dict | None = None) -> None:
    """Start `server` with the swarm scheduler and a registry of its own."""
    # a swarm start reconciles services and starts a registry: slower on a busy machine
    server.start(timeout=90, extra_args=("--scheduler", "swarm"),
                 extra_env={"GITD_REGISTRY_PORT": str(free_port()), **(extra_env or {})})


@pytest.fixture(scope="session")
def swarm_gitd(swarm, base_image, tmp_path_factory):
    """One gitd on the swarm scheduler, shared like `gitd`."""
    server = new_gitd(tmp_path_factory.mktemp("swarm-gitd"))
    start_swarm_gitd(server)
    yield server
    server.stop()
    server.cleanup(swarm)


@pytest.fixture
def own_gitd(docker_client, base_image, tmp_path):
    """A gitd of the test's own, for tests that stop or kill it."""
    server = new_gitd(tmp_path / "gitd")
    yield server
    server.stop()
    server.cleanup(docker_client)


def web_app(version: str, base: str = f"{BASE_IMAGE}:latest", extra: str = "") -> dict:
    """A busybox httpd app that answers `version` on $PORT."""
    return {
        "Dockerfile": (
            f"FROM {base}\n"
            f"RUN mkdir -p /www && echo '{version}' > /www/index.html\n"
            f"{extra}"
            'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n'),
    }


@pytest.fixture(scope="module")
def api(gitd, tmp_path_factory):
    """The shared gitd's API, an admin token, a deployer token, an app
    granted to the deployer and one that is not."""
    root = tmp_path_factory.mktemp("api")
    deployer_key = make_key(root, "deployer")
    name = f"dep-{unique_app('k')[2:]}"
    assert gitd.ssh("keys:add", name, input=(root / "deployer.pub").read_text()).returncode == 0
    mine, theirs = unique_app("mine"), unique_app("theirs")
    for app in (mine, theirs):
        assert gitd.ssh("apps:create", app).returncode == 0
    assert gitd.ssh("apps:grant", mine, name).returncode == 0
    client = Api(gitd)
    client.admin = new_token(gitd)
    client.deployer = new_token(gitd, key=deployer_key)
    client.deployer_key, client.deployer_name = deployer_key, name
    client.mine, client.theirs = mine, theirs
    return client

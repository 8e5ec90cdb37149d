"""A managed Traefik routes by files only (hooks.docker_routes): a deploy
writes its route file once its own probe passed, the file stays, and gitd
keeps its servers on the deploy's containers: one stopped leaves them at
once; a stale file (a gitd stopped before its retirement finished) goes."""

import json
import time

import pytest

from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, unique_app
from tests.e2e.helpers import deployed, file_routed, route_files

pytestmark = pytest.mark.e2e


def _until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    return predicate()


def test_a_deploy_goes_live_by_a_route_file_that_follows_its_containers(
        own_gitd, docker_client, tmp_path):
    gitd = own_gitd
    gitd.start()
    app = unique_app("rf")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    commit(repo, web_app("v2"), "v2")
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert gitd.get(gitd.host(app)) == (200, "v2\n")  # live when the push returns
    # the old deploy's file went with its containers; the new one's stays
    assert _until(lambda: route_files(gitd) == [f"bridge-{app}-s2.yml"], 30), route_files(gitd)
    assert list(file_routed(gitd, f"{app}-s2").values()) == ["UP"]
    # Traefik watches no container: its docker provider is off
    with open(gitd.data_dir / "traefik" / "traefik.yml") as static:
        assert "docker:" not in static.read()

    # a second web container: scaled, both served; one stopped behind
    # gitd's back leaves the routes before it is gone
    assert gitd.ssh("ps:scale", app, "web=2").returncode == 0
    web = [c for c in gitd.live_containers(docker_client, app)
           if c.labels.get("gitd.process") == "web"]
    assert len(web) == 2
    seq = web[0].labels["gitd.seq"]
    assert len(file_routed(gitd, f"{app}-s{seq}")) == 2
    web[0].stop(timeout=5)
    assert _until(lambda: len(file_routed(gitd, f"{app}-s{seq}")) == 1, 10)
    assert all(gitd.get(gitd.host(app)) == (200, "v2\n") for _ in range(5))

    # a stale file outranks the live routes; the follower takes it down
    stale = gitd.data_dir / "tls" / "dynamic" / f"bridge-{app}-s99.yml"
    stale.write_text(json.dumps({"http": {
        "routers": {f"{app}-s99": {"rule": f"Host(`{gitd.host(app)}`)", "entryPoints": ["web"],
                                   "priority": 1099, "service": f"{app}-s99"}},
        "services": {f"{app}-s99": {"loadBalancer": {"servers": [
            {"url": "http://127.0.0.1:9"}]}}}}}))
    assert _until(lambda: not stale.exists(), 10)
    assert _until(lambda: gitd.get(gitd.host(app)) == (200, "v2\n"), 10)
    # and after a restart of gitd the files are still the routes
    gitd.stop()
    gitd.start()
    assert _until(lambda: gitd.get(gitd.host(app)) == (200, "v2\n"), 10)
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0
    assert _until(lambda: not [f for f in route_files(gitd) if app in f], 10)

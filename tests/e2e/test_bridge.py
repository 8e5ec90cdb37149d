"""A deploy is routed through a bridge: Traefik's docker provider routes a
container only once Docker calls it healthy (its first probe comes one
interval after the start, health_interval here), so gitd runs the probe itself and a file route
sends the app's hosts to the new containers until the docker provider has
taken them over. Then the bridge goes; a stale one goes when gitd starts."""

import json
import time

import pytest

from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, unique_app
from tests.e2e.helpers import deployed, docker_routed, wait_no_bridges

pytestmark = pytest.mark.e2e





def test_a_deploy_goes_live_through_a_bridge_that_then_goes(own_gitd, tmp_path):
    gitd = own_gitd
    gitd.start()
    app = unique_app("br")
    repo = deployed(gitd, app, tmp_path, web_app("v1"))
    wait_no_bridges(gitd, 45)  # Docker's first check: 30 s after the start
    commit(repo, web_app("v2"), "v2")
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert gitd.get(gitd.host(app)) == (200, "v2\n")  # live when the push returns
    wait_no_bridges(gitd, 45)  # Docker's first check: 30 s after the start
    assert docker_routed(gitd, f"{app}-s2")  # the labels carry it on
    assert gitd.get(gitd.host(app)) == (200, "v2\n")

    # a stale bridge (a gitd stopped before its hand-over) outranks the live
    # routes; the next start sees nothing of it runs and takes it down
    stale = gitd.data_dir / "tls" / "dynamic" / f"bridge-{app}-s99.yml"
    stale.write_text(json.dumps({"http": {
        "routers": {f"{app}-s99": {"rule": f"Host(`{gitd.host(app)}`)", "entryPoints": ["web"],
                                   "priority": 1099, "service": f"{app}-s99"}},
        "services": {f"{app}-s99": {"loadBalancer": {"servers": [
            {"url": "http://127.0.0.1:9"}]}}}}}))
    deadline = time.monotonic() + 10
    while gitd.get(gitd.host(app))[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gitd.get(gitd.host(app))[0] != 200
    gitd.stop()
    gitd.start()
    wait_no_bridges(gitd, 45)  # Docker's first check: 30 s after the start
    deadline = time.monotonic() + 10
    while gitd.get(gitd.host(app))[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gitd.get(gitd.host(app)) == (200, "v2\n")
    assert gitd.ssh("apps:destroy", app, "--force").returncode == 0

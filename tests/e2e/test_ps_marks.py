"""#29 item 9: `ps` says what matters: the retiring row during a drain, and a
crash-looping worker's restarts and last exit status (real containers)."""

import json
import time

import pytest

from tests.e2e.harness import make_repo, unique_app
from tests.e2e.helpers import app_files, ok

pytestmark = pytest.mark.e2e


def rows(gitd, app) -> list[dict]:
    return json.loads(ok(gitd, "ps", app, "--json").stdout)["containers"]


def test_ps_marks_the_retiring_row_and_shows_restarts_and_exit_status(gitd, docker_client,
                                                                       tmp_path):
    app = unique_app("psm")
    ok(gitd, "apps:create", app)
    ok(gitd, "checks:set", app, "drain=8")
    repo = make_repo(tmp_path / app, app_files("v1"))
    assert gitd.push(repo, app).returncode == 0
    gitd.wait_retired(docker_client, app)

    # a restart returns once the new web.1 is live; the old one drains for 8 s
    ok(gitd, "ps:restart", app)
    listed = rows(gitd, app)
    web = sorted((r["seq"], r["phase"]) for r in listed if r["name"] == "web.1")
    assert [phase for _, phase in web] == ["retiring", "live"], listed
    text = ok(gitd, "ps", app).stdout
    [retiring] = [line for line in text.splitlines() if "(retiring" in line]
    assert retiring.startswith("web.1") and " v1 " in retiring, text
    assert all(key in listed[0] for key in ("name", "type", "role", "release", "seq", "state",
                                            "health", "started_at", "uptime", "container"))
    gitd.wait_retired(docker_client, app)
    assert [r["phase"] for r in rows(gitd, app)] == ["live"]

    # the worker exits with status 3 three seconds after each start; Docker restarts it
    ok(gitd, "checks:set", app, "drain=0.3")
    ok(gitd, "ps:scale", app, "worker=1")
    deadline = time.monotonic() + 60
    worker = None
    while time.monotonic() < deadline:
        [worker] = [r for r in rows(gitd, app) if r["name"] == "worker.1" and r["phase"] == "live"]
        if worker["restarts"] >= 2 and worker["exit_code"] is not None:
            break
        time.sleep(1)
    assert worker["restarts"] >= 2 and worker["exit_code"] == 3, worker
    line = next(x for x in ok(gitd, "ps", app).stdout.splitlines() if x.startswith("worker.1"))
    assert "restarts, last exit 3)" in line, line
    ok(gitd, "apps:destroy", app, "--force")

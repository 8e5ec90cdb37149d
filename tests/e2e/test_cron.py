"""Cron jobs (issue #25) against a real gitd, git, ssh and Docker: app.json's
jobs run on their schedules as one-off containers of the live release, a run
still going makes the next one skipped, cron:run and cron:logs, a bad
schedule fails the push, a rollback brings the old jobs back, runs missed
while gitd was down make one catch-up run.

A cron minute lasts one second here (GITD_CRON_MINUTE, the test-only
setting), so "*/2 * * * *" fires every two seconds."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import jsonschema

import pytest

from tests.e2e.conftest import start_swarm_gitd, web_app
from tests.e2e.harness import commit, make_key, make_repo, unique_app

pytestmark = pytest.mark.e2e

FAST = {"GITD_CRON_MINUTE": "1", "GITD_CRON_TICK": "0.2"}
TICK = {"command": "echo tick $GITD_APP $GITD_RELEASE $DYNO", "schedule": "*/2 * * * *",
        "id": "tick"}
SLOW = {"command": "sleep 5; echo slow done", "schedule": "*/2 * * * *", "id": "slow"}
FAILING = {"command": "echo failing $GITD_APP; exit 3", "schedule": "@yearly", "id": "failing"}
HANGING = {"command": "sleep 600", "schedule": "@yearly", "id": "hanging", "timeout": 2}


def ok(gitd, *args, **kw):
    result = gitd.ssh(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result


def app_files(version: str, *jobs) -> dict:
    return {**web_app(version), "app.json": json.dumps({"cron": list(jobs)})}


def runs(gitd, app: str, job: str) -> list[dict]:
    """The job's recorded runs, oldest first."""
    with gitd.db() as conn:
        conn.row_factory = lambda cursor, row: {c[0]: v for c, v in zip(cursor.description, row)}
        return conn.execute("SELECT * FROM cron_runs WHERE app = ? AND job = ? ORDER BY id",
                            [app, job]).fetchall()


def wait_runs(gitd, app: str, job: str, wanted, timeout: float = 60.0) -> list[dict]:
    """Poll the job's runs until `wanted(runs)` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = runs(gitd, app, job)
        if wanted(found):
            return found
        assert time.monotonic() < deadline, f"{job}: {found}\n{gitd.log_text()[-3000:]}"
        time.sleep(0.3)


def ended(found: list[dict], status: str, release: int | None = None) -> list[dict]:
    return [r for r in found if r["status"] == status and release in (None, r["release"])]


def api_get(gitd, path: str, bearer: str | None) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{gitd.gitd_api_port}{path}")
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def no_cron_containers(gitd, client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while [c for c in gitd.containers(client) if c.labels.get("gitd.role") == "cron"]:
        assert time.monotonic() < deadline, "cron containers left behind"
        time.sleep(0.3)


def test_jobs_run_on_schedule_skip_overlaps_and_roll_back_with_the_release(
        own_gitd, docker_client, tmp_path):
    gitd = own_gitd
    gitd.start(extra_env=FAST)
    app = unique_app("cron")
    ok(gitd, "apps:create", app)
    repo = make_repo(tmp_path / app, app_files("cron v1", TICK, SLOW, FAILING, HANGING))
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr

    # on schedule, in a one-off container of the live release
    found = wait_runs(gitd, app, "tick", lambda rs: len(ended(rs, "succeeded")) >= 2)
    first = ended(found, "succeeded")[0]
    assert first["trigger"] == "schedule" and first["exit_code"] == 0 and first["release"] == 1
    assert first["output"].startswith(f"tick {app} v1 cron.")
    # a run still going when the job is due again: skipped, recorded
    found = wait_runs(gitd, app, "slow", lambda rs: ended(rs, "skipped") and ended(rs, "succeeded"))
    assert ended(found, "succeeded")[0]["output"] == "slow done\n"
    assert "still running" in ended(found, "skipped")[0]["output"]

    listed = json.loads(ok(gitd, "cron", app, "--json").stdout)
    assert [j["id"] for j in listed] == ["tick", "slow", "failing", "hanging"]
    assert listed[0]["last_run"]["status"] in ("succeeded", "running")
    assert listed[0]["schedule"] == "*/2 * * * *" and listed[0]["next_run_at"]
    assert listed[2]["last_run"] is None
    assert "*/2 * * * *" in ok(gitd, "cron", app).stdout

    # now, by hand: output streamed, exit status passed through, recorded, shown
    manual = gitd.ssh("cron:run", app, "failing")
    assert manual.returncode == 3, manual.stderr
    assert manual.stdout == f"failing {app}\n" and "failed (exit 3)" in manual.stderr
    logs = ok(gitd, "cron:logs", app, "failing").stdout
    assert "(manual) failed, exit 3" in logs and logs.endswith(f"failing {app}\n")
    info = gitd.ssh("apps:info", app)
    assert f"cron job failing failed: cron:logs {app} failing" in info.stderr
    assert json.loads(ok(gitd, "apps:info", app, "--json").stdout)["cron_failing"] == ["failing"]
    began = time.monotonic()
    hung = gitd.ssh("cron:run", app, "hanging")
    assert hung.returncode != 0 and "timed out" in hung.stderr
    assert time.monotonic() - began < 30
    assert runs(gitd, app, "hanging")[-1]["status"] == "timed out"
    missing = gitd.ssh("cron:run", app, "nope")
    assert missing.returncode != 0 and "has no cron job 'nope'" in missing.stderr

    # a schedule that never fires fails the push, in words; the jobs stay
    commit(repo, {"app.json": json.dumps({"cron": [{"command": "x", "schedule": "0 0 30 2 *"}]})},
           "never")
    refused = gitd.push(repo, app)
    assert refused.returncode != 0 and "never matches" in refused.stderr
    assert [j["id"] for j in json.loads(ok(gitd, "cron", app, "--json").stdout)][0] == "tick"

    # a new release's jobs replace the old ones; a rollback brings them back
    commit(repo, app_files("cron v2", {**TICK, "id": "tock"}), "v2")
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert [j["id"] for j in json.loads(ok(gitd, "cron", app, "--json").stdout)] == ["tock"]
    wait_runs(gitd, app, "tock", lambda rs: ended(rs, "succeeded", release=3))
    ok(gitd, "releases:rollback", app, "v1")
    assert [j["id"] for j in json.loads(ok(gitd, "cron", app, "--json").stdout)][:2] == [
        "tick", "slow"]
    found = wait_runs(gitd, app, "tick", lambda rs: ended(rs, "succeeded", release=4))
    assert ended(found, "succeeded", release=4)[0]["output"].startswith(f"tick {app} v4 ")

    # missed while gitd was down: one catch-up run once it is back
    gitd.stop()
    stopped_at = time.time()
    time.sleep(5)  # two slots of "*/2" and more
    gitd.start(extra_env=FAST)
    found = wait_runs(gitd, app, "tick", lambda rs: [r for r in rs if r["started_at"] > stopped_at])
    after = [r for r in found if r["started_at"] > stopped_at]
    assert after[0]["trigger"] == "catch-up", after
    assert not [r for r in found if r["status"] == "running" and r["started_at"] < stopped_at]
    ok(gitd, "apps:destroy", app, "--force")
    no_cron_containers(gitd, docker_client)


def test_a_deployer_runs_only_the_jobs_of_its_granted_apps(gitd, tmp_path):
    app, other = unique_app("crond"), unique_app("crono")
    for name in (app, other):
        ok(gitd, "apps:create", name)
        pushed = gitd.push(make_repo(tmp_path / name, app_files(name, FAILING)), name)
        assert pushed.returncode == 0, pushed.stderr
    dev_name = unique_app("dev")
    dev = make_key(tmp_path, dev_name)
    ok(gitd, "keys:add", dev_name, input=(tmp_path / f"{dev_name}.pub").read_text())
    ok(gitd, "apps:grant", app, dev_name)
    assert gitd.ssh("cron:run", app, "failing", key=dev).returncode == 3
    for command in (["cron", other], ["cron:run", other, "failing"],
                    ["cron:logs", other, "failing"]):
        refused = gitd.ssh(*command, key=dev)
        assert refused.returncode != 0 and "permission" in refused.stderr.lower(), refused.stderr
    assert runs(gitd, other, "failing") == []

    # over HTTP: the same JSON, the same access, as the OpenAPI document says
    made = gitd.ssh("tokens:create", "--name", unique_app("tok"), key=dev)
    assert made.returncode == 0, made.stderr
    bearer = made.stdout.strip().splitlines()[-1]
    status, listed = api_get(gitd, f"/api/v1/apps/{app}/cron", bearer)
    assert status == 200 and listed == json.loads(ok(gitd, "cron", app, "--json").stdout)
    assert listed[0]["last_run"]["exit_code"] == 3
    doc = api_get(gitd, "/api/v1/openapi.json", None)[1]
    schema = doc["paths"]["/api/v1/apps/{name}/cron"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    jsonschema.validate(listed, schema)
    assert api_get(gitd, f"/api/v1/apps/{other}/cron", bearer)[0] == 403
    for name in (app, other):
        ok(gitd, "apps:destroy", name, "--force")
    ok(gitd, "keys:remove", dev_name)


def test_jobs_run_on_the_swarm_scheduler(swarm, own_gitd, docker_client, tmp_path):
    gitd = own_gitd
    start_swarm_gitd(gitd, extra_env=FAST)
    app = unique_app("cronsw")
    ok(gitd, "apps:create", app)
    pushed = gitd.push(make_repo(tmp_path / app, app_files("cron swarm", TICK, FAILING)), app)
    assert pushed.returncode == 0, pushed.stderr
    found = wait_runs(gitd, app, "tick", lambda rs: ended(rs, "succeeded"), timeout=90)
    assert ended(found, "succeeded")[0]["output"].startswith(f"tick {app} v1 cron.")
    manual = gitd.ssh("cron:run", app, "failing")
    assert manual.returncode == 3 and f"failing {app}" in manual.stdout, manual.stderr
    ok(gitd, "apps:destroy", app, "--force")

"""Cron jobs (issue #25) without Docker: app.json's `cron`, the runs in the
store, the runner's due/skip/catch-up decisions, the verbs and commands."""

from __future__ import annotations

import calendar
import json
import threading
import time

import pytest

from gitd.core import cron, notify
from gitd.core.config import Settings, load_settings
from gitd.core.errors import Conflict, GitdError, NotFound, PermissionDenied, UsageError
from gitd.cronrunner import CronRunner
from gitd.verbs import Session
from gitd.verbs import cron as verbs
from tests.fakes import FakeGitd, NotifyRecorder, call


def utc(text: str) -> float:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M"))


def app_json(*jobs) -> str:
    return json.dumps({"cron": list(jobs)})


# the schedule's nicknames

@pytest.mark.parametrize("nickname, after, expected", [
    ("@hourly", "2026-01-01 10:01", "2026-01-01 11:00"),
    ("@daily", "2026-01-01 10:01", "2026-01-02 00:00"),
    ("@midnight", "2026-01-01 10:01", "2026-01-02 00:00"),
    ("@weekly", "2026-01-01 10:01", "2026-01-04 00:00"),  # a Sunday
    ("@monthly", "2026-01-01 10:01", "2026-02-01 00:00"),
    ("@yearly", "2026-01-01 10:01", "2027-01-01 00:00"),
    ("@ANNUALLY", "2026-01-01 10:01", "2027-01-01 00:00"),
])
def test_nicknames(nickname, after, expected):
    schedule = cron.parse(nickname)
    assert schedule.text == nickname.lower()
    assert schedule.next_after(utc(after)) == utc(expected)


@pytest.mark.parametrize("text", ["@reboot", "@every 5m", "@", "@daily 1"])
def test_other_nicknames_are_refused(text):
    with pytest.raises(UsageError, match="nicknames are"):
        cron.parse(text)


# app.json's jobs

def test_jobs_keep_their_id_across_releases():
    first = cron.jobs(app_json({"command": "echo hi", "schedule": "*/15 * * * *"}))
    again = cron.jobs(app_json({"command": "echo hi", "schedule": " */15  * * * * "},
                               {"command": "echo other", "schedule": "@daily"}))
    assert first[0].id == again[0].id and first[0].id.startswith("cron-")
    assert again[1].id != again[0].id
    assert first[0].command == "echo hi" and first[0].timeout is None


def test_a_job_may_name_its_id_timeout_and_service():
    [job] = cron.jobs(app_json({"command": "x", "schedule": "@hourly", "id": "clean-up",
                                "timeout": 30, "service": "backend"}))
    assert (job.id, job.timeout, job.service) == ("clean-up", 30.0, "backend")


@pytest.mark.parametrize("text", [None, "", "{}", '{"services": {}}', "[1, 2]"])
def test_no_cron_key_no_jobs(text):
    assert cron.jobs(text) == []


@pytest.mark.parametrize("entry, message", [
    ({"command": "x", "schedule": "0 0 30 2 *"}, r"cron\[0\].schedule: .*never matches"),
    ({"command": "x", "schedule": "* * * * * *"}, r"cron\[0\].schedule: .*5 fields"),
    ({"command": "x", "schedule": "@reboot"}, r"cron\[0\].schedule"),
    ({"command": "x", "schedule": 5}, r"schedule must be a cron expression"),
    ({"command": "x"}, r"schedule must be a cron expression"),
    ({"schedule": "@daily"}, r"command must be a non-empty string"),
    ({"command": "  ", "schedule": "@daily"}, r"command must be"),
    ({"command": ["echo"], "schedule": "@daily"}, r"command must be"),
    ({"command": "a\0b", "schedule": "@daily"}, r"command must be"),
    ({"command": "x" * 4097, "schedule": "@daily"}, r"longer than 4096 bytes"),
    ({"command": "x", "schedule": "@daily", "id": "../other"}, r"id must be"),
    ({"command": "x", "schedule": "@daily", "id": "A"}, r"id must be"),
    ({"command": "x", "schedule": "@daily", "id": "x" * 41}, r"id must be"),
    ({"command": "x", "schedule": "@daily", "timeout": 0}, r"timeout must be"),
    ({"command": "x", "schedule": "@daily", "timeout": 86401}, r"timeout must be"),
    ({"command": "x", "schedule": "@daily", "timeout": True}, r"timeout must be"),
    ({"command": "x", "schedule": "@daily", "timeout": "60"}, r"timeout must be"),
    ({"command": "x", "schedule": "@daily", "timeout": float("nan")}, r"timeout must be"),
    ({"command": "x", "schedule": "@daily", "service": "Web!"}, r"service must"),
    ({"command": "x", "schedule": "@daily", "schedul": "@daily"}, r"unknown key 'schedul'"),
    ("echo hi", r"must be an object"),
])
def test_bad_jobs_are_refused_in_words(entry, message):
    with pytest.raises(UsageError, match=message):
        cron.jobs(app_json(entry))


def test_the_job_count_is_bounded():
    many = [{"command": f"echo {i}", "schedule": "@daily"} for i in range(cron.MAX_JOBS + 1)]
    with pytest.raises(UsageError, match="at most 20"):
        cron.jobs(app_json(*many))
    assert len(cron.jobs(app_json(*many[:-1]))) == cron.MAX_JOBS


def test_repeated_ids_are_refused():
    with pytest.raises(UsageError, match="repeats the job id 'a'"):
        cron.jobs(app_json({"command": "x", "schedule": "@daily", "id": "a"},
                           {"command": "y", "schedule": "@hourly", "id": "a"}))
    with pytest.raises(UsageError, match="repeats the job id"):
        cron.jobs(app_json({"command": "x", "schedule": "0 0 * * *"},
                           {"command": "x", "schedule": "0  0 * * *"}))


def test_cron_must_be_a_list():
    with pytest.raises(UsageError, match="must be a list"):
        cron.jobs('{"cron": {"command": "x"}}')


def test_jobs_and_the_apps_services():
    plain = app_json({"command": "x", "schedule": "@daily"})
    assert cron.checked_jobs(plain, [])
    with pytest.raises(UsageError, match="name the one it runs in"):
        cron.checked_jobs(plain, ["backend", "frontend"])
    named = app_json({"command": "x", "schedule": "@daily", "service": "backend"})
    assert cron.checked_jobs(named, ["backend"])[0].service == "backend"
    with pytest.raises(UsageError, match="names no app.json service"):
        cron.checked_jobs(named, [])
    with pytest.raises(UsageError, match="name the one"):
        cron.checked_jobs(named, ["frontend"])


# settings

def test_cron_settings(tmp_path):
    settings = load_settings(tmp_path, environ={"GITD_CRON_TIMEOUT": "30", "GITD_CRON_TICK": "0.5",
                                                "GITD_CRON_MINUTE": "2"})
    assert (settings.cron_timeout, settings.cron_tick, settings.cron_minute) == (30, 0.5, 2)
    for name, value in (("CRON_TIMEOUT", "0"), ("CRON_TIMEOUT", "nan"), ("CRON_TICK", "0"),
                        ("CRON_MINUTE", "0.01"), ("CRON_MINUTE", "61")):
        with pytest.raises(GitdError, match=name.lower()):
            load_settings(tmp_path, environ={f"GITD_{name}": value})


# the runs in the store

def test_a_second_run_of_a_job_is_skipped_or_refused(store):
    first = store.start_cron_run("hello", "j", "schedule", 1)
    assert first.status == "running"
    skipped = store.start_cron_run("hello", "j", "schedule", 1)
    assert skipped.status == "skipped" and f"run {first.id} was still running" in skipped.output
    with pytest.raises(Conflict, match="is running"):
        store.start_cron_run("hello", "j", "manual", 1)
    assert store.start_cron_run("hello", "other", "manual", 1).status == "running"
    store.finish_cron_run(first.id, "failed", 3, "boom\n")
    assert store.last_cron_runs("hello")["j"].status == "failed"  # not the skipped one
    assert store.start_cron_run("hello", "j", "manual", 1).status == "running"


def test_runs_are_trimmed_per_job_and_go_with_the_app(store):
    store.create_app("other")
    kept = store.start_cron_run("other", "j", "schedule", 1)
    for _ in range(30):
        run = store.start_cron_run("hello", "j", "schedule", 1)
        store.finish_cron_run(run.id, "succeeded", 0, "")
    assert len(store.cron_runs("hello", "j", limit=100)) == 20
    assert store.cron_runs("other", "j") == [kept]
    store.set_cron_since("hello", "j", 5.0)
    store.delete_app("hello")
    assert store.cron_runs("hello") == [] and store.cron_since("hello", "j") is None


def test_runs_cut_short_by_a_stop_end_failed(store):
    run = store.start_cron_run("hello", "j", "schedule", 1)
    assert store.end_unfinished_cron_runs("cut short\n") == 1
    [ended] = store.cron_runs("hello", "j")
    assert (ended.id, ended.status, ended.output) == (run.id, "failed", "cut short\n")


# the runner, over a scheduler that records the tasks it is given

class Tasks:
    """The scheduler's run_task: each task's spec kept; it prints its
    command, then ends with `status` (or waits for `release`)."""

    def __init__(self):
        self.specs, self.status, self.timed_out, self.fail = [], 0, False, None
        self.release = threading.Event()
        self.release.set()
        self.prepared = []

    def prepare(self, network, app):
        self.prepared.append((network, app))

    def run_task(self, spec, on_line, timeout):
        self.specs.append((spec, timeout))
        if self.fail:
            raise self.fail
        on_line(f"ran {spec['command'][-1]}")
        assert self.release.wait(10)
        return self.status, self.timed_out

    def units(self, *apps, **labels):  # one app's, or every app's
        return [f"leftover {labels}"]

    def remove(self, units, timeout=0):
        self.removed = units


class CronGitd(FakeGitd):
    def __init__(self, store, settings):
        super().__init__(store, settings)
        self.scheduler = Tasks()
        self.pipeline.service_networks = lambda app: []


@pytest.fixture
def gitd(store, tmp_path):
    return CronGitd(store, Settings(data_dir=tmp_path, instance="t1234567", cron_timeout=120))


def deploy(store, app: str, *jobs) -> int:
    release = store.new_release(app, status="succeeded", procfile={}, image="gitd/hello:v1",
                                image_id="sha256:abc", buildpack="dockerfile",
                                config={"GREETING": "hi"}, app_json=app_json(*jobs))
    store.set_live(app, release.version, store.take_seq(app))
    return release.version


EVERY_15 = {"command": "echo quarter", "schedule": "*/15 * * * *", "id": "quarter"}


def run_due(runner: CronRunner, at: str):
    started = runner.run_due(utc(at))
    assert runner.wait(10)
    return started


def test_a_new_job_waits_for_its_first_slot_then_runs_once_per_slot(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    runner = CronRunner(gitd, tick=1)
    assert run_due(runner, "2026-01-01 10:01") == []
    assert run_due(runner, "2026-01-01 10:14") == []
    assert run_due(runner, "2026-01-01 10:15") == [("hello", "quarter", "schedule")]
    assert run_due(runner, "2026-01-01 10:16") == []
    assert run_due(runner, "2026-01-01 10:30") == [("hello", "quarter", "schedule")]
    [run, _] = gitd.store.cron_runs("hello", "quarter")
    assert (run.status, run.exit_code, run.release, run.output) == ("succeeded", 0, 1,
                                                                    "ran echo quarter\n")


def test_slots_missed_while_down_make_one_catch_up_run(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    runner = CronRunner(gitd, tick=1)
    run_due(runner, "2026-01-01 10:01")
    assert run_due(runner, "2026-01-01 13:07") == [("hello", "quarter", "catch-up")]
    assert run_due(runner, "2026-01-01 13:08") == []
    assert len(gitd.scheduler.specs) == 1


def test_the_task_is_a_one_off_of_the_live_release(gitd):
    deploy(gitd.store, "hello", {**EVERY_15, "timeout": 5})
    runner = CronRunner(gitd, tick=1)
    run_due(runner, "2026-01-01 10:01")
    run_due(runner, "2026-01-01 10:15")
    [(spec, timeout)] = gitd.scheduler.specs
    assert timeout == 5
    assert spec["command"] == ["/bin/sh", "-c", "echo quarter"]
    assert spec["image"] == "sha256:abc" and spec["environment"]["GREETING"] == "hi"
    assert spec["environment"]["DYNO"].startswith("cron.")
    assert spec["labels"]["gitd.role"] == "cron" and spec["labels"]["gitd.cron-job"] == "quarter"
    assert spec["labels"]["traefik.enable"] == "false" and "stdin_open" not in spec
    assert spec["mem_limit"]  # the app's resource limits, as `run` has them
    assert gitd.scheduler.prepared == [("gitd-t1234567-app-hello", "hello")]


def test_a_run_still_going_makes_the_next_one_skipped(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    runner = CronRunner(gitd, tick=1)
    gitd.scheduler.release.clear()
    runner.run_due(utc("2026-01-01 10:01"))
    runner.run_due(utc("2026-01-01 10:15"))
    runner.run_due(utc("2026-01-01 10:30"))
    gitd.scheduler.release.set()
    assert runner.wait(10)
    skipped, ran = gitd.store.cron_runs("hello", "quarter")
    assert (skipped.status, ran.status) == ("skipped", "succeeded")
    assert len(gitd.scheduler.specs) == 1
    assert gitd.store.last_cron_runs("hello")["quarter"].id == ran.id


def test_failures_timeouts_and_errors_are_recorded(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    runner = CronRunner(gitd, tick=1)
    run_due(runner, "2026-01-01 10:01")
    gitd.scheduler.status = 3
    run_due(runner, "2026-01-01 10:15")
    assert gitd.store.cron_runs("hello")[0].status == "failed"
    assert gitd.store.cron_runs("hello")[0].exit_code == 3
    gitd.scheduler.status, gitd.scheduler.timed_out = 137, True
    run_due(runner, "2026-01-01 10:30")
    timed_out = gitd.store.cron_runs("hello")[0]
    assert timed_out.status == "timed out" and "killed after 120s" in timed_out.output
    gitd.scheduler.fail = GitdError("no such image")
    run_due(runner, "2026-01-01 10:45")
    failed = gitd.store.cron_runs("hello")[0]
    assert failed.status == "failed" and "the run failed: no such image" in failed.output
    assert verbs.failing(gitd.store, "hello") == ["quarter"]


def test_the_jobs_are_the_live_releases(gitd):
    v1 = deploy(gitd.store, "hello", EVERY_15)
    runner = CronRunner(gitd, tick=1)
    run_due(runner, "2026-01-01 10:01")
    deploy(gitd.store, "hello", {"command": "echo hourly", "schedule": "@hourly", "id": "hourly"})
    run_due(runner, "2026-01-01 10:05")
    assert run_due(runner, "2026-01-01 11:00") == [("hello", "hourly", "schedule")]
    gitd.store.set_live("hello", v1, gitd.store.take_seq("hello"))  # a rollback
    # back as a new job: its slots while it was away were not missed
    assert run_due(runner, "2026-01-01 11:15") == []
    assert run_due(runner, "2026-01-01 11:30") == [("hello", "quarter", "schedule")]
    assert gitd.store.cron_since("hello", "hourly") is None


def test_an_unparsable_old_app_json_has_no_jobs(gitd):
    deploy(gitd.store, "hello", {"command": "x", "schedule": "@reboot"})
    runner = CronRunner(gitd, tick=1)
    assert run_due(runner, "2026-01-01 10:01") == [] and run_due(runner, "2026-01-02 10:01") == []


def test_a_shorter_cron_minute_speeds_the_clock(gitd):
    clock = verbs.Clock(Settings(cron_minute=2))
    schedule = cron.parse("*/5 * * * *")
    assert clock.next_after(schedule, 1000.0) == 1010.0  # five cron minutes: ten seconds
    assert verbs.Clock(Settings()).next_after(schedule, utc("2026-01-01 10:01")) == utc(
        "2026-01-01 10:05")


# the verbs and commands

def test_cron_lists_jobs_with_last_and_next_run(gitd):
    deploy(gitd.store, "hello", EVERY_15, {"command": "echo daily", "schedule": "@daily"})
    runner = CronRunner(gitd, tick=1)
    run_due(runner, "2026-01-01 10:01")
    run_due(runner, "2026-01-01 10:15")
    jobs = verbs.list_jobs(Session(gitd, gitd.store.get_key("admin")), "hello")
    assert [j["id"] for j in jobs] == ["quarter", cron.jobs(app_json(
        {"command": "echo daily", "schedule": "@daily"}))[0].id]
    assert jobs[0]["last_run"]["status"] == "succeeded"
    assert jobs[0]["next_run_at"].startswith("20") and jobs[1]["last_run"] is None
    status, out, _ = call(gitd, "cron", "hello")
    assert status == 0 and "quarter" in out and "*/15 * * * *" in out and "succeeded" in out
    status, out, _ = call(gitd, "cron", "hello", "--json")
    assert json.loads(out)[0]["timeout"] == 120


def test_deployers_reach_only_their_granted_apps(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    with pytest.raises(PermissionDenied):
        call(gitd, "cron", "hello", key="dev")
    with pytest.raises(PermissionDenied):
        call(gitd, "cron:run", "hello", "quarter", key="dev")
    gitd.store.grant("hello", "dev")
    assert call(gitd, "cron", "hello", key="dev")[0] == 0
    assert call(gitd, "cron:run", "hello", "quarter", key="dev")[0] == 0


def test_cron_run_streams_records_and_exits_with_the_jobs_status(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    status, out, err = call(gitd, "cron:run", "hello", "quarter")
    assert (status, out) == (0, "ran echo quarter\n") and "succeeded" in err
    gitd.scheduler.status = 4
    status, out, err = call(gitd, "cron:run", "hello", "quarter")
    assert status == 4 and "failed (exit 4)" in err
    [last, first] = gitd.store.cron_runs("hello", "quarter")
    assert (last.trigger, last.exit_code, first.status) == ("manual", 4, "succeeded")
    status, out, _ = call(gitd, "cron:logs", "hello", "quarter")
    assert "run 2 (manual) failed, exit 4" in out and out.endswith("ran echo quarter\n")


def test_cron_run_is_refused_while_a_run_goes(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    gitd.store.start_cron_run("hello", "quarter", "schedule", 1)
    with pytest.raises(Conflict):
        call(gitd, "cron:run", "hello", "quarter")
    assert gitd.scheduler.specs == []


@pytest.mark.parametrize("job_id, error", [("nope", NotFound), ("../x", UsageError),
                                           ("x" * 100, UsageError)])
def test_unknown_and_odd_job_ids(gitd, job_id, error):
    deploy(gitd.store, "hello", EVERY_15)
    for command in ("cron:run", "cron:logs"):
        with pytest.raises(error):
            call(gitd, command, "hello", job_id)
    assert gitd.scheduler.specs == []


def test_another_apps_job_is_not_found(gitd):
    gitd.store.create_app("other")
    deploy(gitd.store, "other", EVERY_15)
    with pytest.raises(NotFound, match="hello has no release yet"):
        call(gitd, "cron:run", "hello", "quarter")
    deploy(gitd.store, "hello", {"command": "x", "schedule": "@daily", "id": "mine"})
    with pytest.raises(NotFound, match="hello has no cron job 'quarter'"):
        call(gitd, "cron:run", "hello", "quarter")
    with pytest.raises(NotFound, match="has not run yet"):
        call(gitd, "cron:logs", "hello", "mine")


def test_at_start_runs_cut_short_end_failed_and_their_tasks_go(gitd):
    cut = gitd.store.start_cron_run("hello", "quarter", "schedule", 1)
    CronRunner(gitd, tick=1).clean_up()
    assert gitd.store.cron_runs("hello")[0].status == "failed"
    assert "gitd stopped during the run" in gitd.store.cron_runs("hello")[0].output
    assert gitd.scheduler.removed == ["leftover {'gitd.role': 'cron'}"]
    assert gitd.store.start_cron_run("hello", "quarter", "manual", 1).id != cut.id


def test_a_run_waits_for_a_deploy_or_destroy_in_progress(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    runner = CronRunner(gitd, tick=1)
    run_due(runner, "2026-01-01 10:01")
    with gitd.locks.hold("hello", 1):  # a deploy
        runner.run_due(utc("2026-01-01 10:15"))
        time.sleep(0.3)
        assert gitd.scheduler.specs == []
    assert runner.wait(10) and len(gitd.scheduler.specs) == 1
    with gitd.locks.hold("hello", 1):  # apps:destroy
        runner.run_due(utc("2026-01-01 10:30"))
        time.sleep(0.3)
        gitd.store.delete_app("hello")
    assert runner.wait(10) and len(gitd.scheduler.specs) == 1  # no task made after it
    assert gitd.scheduler.specs[0][0]["labels"]["gitd.cron-run"] == "1"


def test_a_run_whose_app_went_meanwhile_ends_quietly(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    release = gitd.store.current_release("hello")
    [job] = verbs.jobs_of(release)
    run = verbs.begin(gitd, release, job, "schedule")
    gitd.store.delete_app("hello")
    assert verbs.carry_out(gitd, release, job, run).id == run.id
    assert gitd.store.cron_runs("hello") == []


def test_no_jobs_said_in_words(gitd):
    deploy(gitd.store, "hello")
    assert "hello has no cron jobs" in call(gitd, "cron", "hello")[1]


# where a failing job shows

def test_a_failing_job_shows_in_apps_info_and_doctor(gitd, tmp_path):
    import io

    from gitd.doctor import Report, check_cron_jobs
    from gitd.verbs import apps

    deploy(gitd.store, "hello", EVERY_15, {"command": "echo ok", "schedule": "@daily", "id": "ok"})
    gitd.scheduler.dynos = lambda app: []
    session = Session(gitd, gitd.store.get_key("admin"))
    call(gitd, "cron:run", "hello", "ok")
    gitd.scheduler.status = 2
    call(gitd, "cron:run", "hello", "quarter")
    assert apps.info(session, "hello")["cron_failing"] == ["quarter"]

    def doctor() -> str:
        out = io.StringIO()
        report = Report(out)
        check_cron_jobs(report, gitd.settings)
        return out.getvalue()

    assert "cron (hello quarter)" in doctor() and "exit 2" in doctor()
    assert "hello ok" not in doctor()
    deploy(gitd.store, "hello", {"command": "echo ok", "schedule": "@daily", "id": "ok"})
    assert doctor() == "" and apps.info(session, "hello")["cron_failing"] == []  # not live now
    deploy(gitd.store, "hello", EVERY_15)
    gitd.scheduler.status = 0
    call(gitd, "cron:run", "hello", "quarter")
    assert doctor() == "" and apps.info(session, "hello")["cron_failing"] == []


def test_a_run_that_fails_or_times_out_is_told_to_the_apps_notifications(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    runner = CronRunner(gitd, tick=1)
    with notify.installed(NotifyRecorder()) as heard:
        run_due(runner, "2026-01-01 10:01")
        assert heard.events == []  # a run that succeeds says nothing
        gitd.scheduler.status = 3
        run_due(runner, "2026-01-01 10:15")
        gitd.scheduler.status, gitd.scheduler.timed_out = 137, True
        run_due(runner, "2026-01-01 10:30")
    assert [(a, e, d["job"], d["status"]) for a, e, d in heard.events] == [
        ("hello", "cron.failed", "quarter", "failed"), ("hello", "cron.failed", "quarter", "timed out")]
    assert heard.events[0][2]["exit_code"] == 3


def test_one_app_cannot_take_every_run_slot_from_the_others(gitd):
    """A deployer's app.json of long jobs every minute must not stop every
    other app's cron: an app holds at most MAX_RUNNING_PER_APP of the slots."""
    import gitd.cronrunner as runner_module

    hog_jobs = [{"command": f"sleep 86400 # {n}", "schedule": "* * * * *", "id": f"hog{n}"}
                for n in range(runner_module.MAX_RUNNING + 1)]
    gitd.store.create_app("hog")
    deploy(gitd.store, "hog", *hog_jobs)
    deploy(gitd.store, "hello", {"command": "echo five", "schedule": "*/5 * * * *", "id": "five"})
    hog_ends = threading.Event()
    plain = gitd.scheduler.run_task

    def run_task(spec, on_line, timeout):
        if ".hog." in spec["name"]:
            assert hog_ends.wait(10)
        return plain(spec, on_line, timeout)

    gitd.scheduler.run_task = run_task
    runner = CronRunner(gitd, tick=1)
    try:
        runner.run_due(utc("2026-01-01 10:01"))  # first seen
        runner.run_due(utc("2026-01-01 10:02"))  # every hog job starts
        time.sleep(0.3)
        runner.run_due(utc("2026-01-01 10:05"))  # hello's job is due
        deadline = time.monotonic() + 5
        while not gitd.store.cron_runs("hello", "five") or \
                gitd.store.cron_runs("hello", "five")[0].status == "running":
            assert time.monotonic() < deadline, "hello's job waited behind hog's"
            time.sleep(0.05)
        assert gitd.store.cron_runs("hello", "five")[0].status == "succeeded"
        running = [r for r in gitd.store.cron_runs("hog") if r.status == "running"]
        assert len(running) == len(hog_jobs)  # begun; the ones past its share wait their turn
    finally:
        hog_ends.set()
        assert runner.wait(10)
    statuses = [r.status for r in gitd.store.cron_runs("hog")]
    assert statuses.count("succeeded") == len(hog_jobs)  # the waiting ones ran in their turn
    assert set(statuses) == {"succeeded", "skipped"}  # 10:05's, while they still ran


def test_cron_run_prints_the_jobs_output_alone_and_a_wait_for_a_deploy_on_stderr(gitd):
    deploy(gitd.store, "hello", EVERY_15)
    held = threading.Event()

    def deploying():
        with gitd.locks.hold("hello", 1):
            held.set()
            time.sleep(0.5)

    threading.Thread(target=deploying).start()
    held.wait(5)
    status, out, err = call(gitd, "cron:run", "hello", "quarter")
    assert status == 0
    assert "Waiting for the deploy of hello" in err and "Waiting" not in out

"""The ps and logs verbs called directly, as every front-end calls them:
the data they return, the access they check, bad input refused with
nothing changed."""

import threading
from types import SimpleNamespace

import pytest

from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.verbs import Session
from gitd.verbs import logs as logs_verbs
from gitd.verbs import ps as ps_verbs
from tests.fakes import deployed

SERVICE = {"gitd.role": "service", "gitd.process": "web"}


class Scheduler:
    """Rows and units as hooks.scheduler gives them; records stops, starts and followers."""

    def __init__(self):
        self.calls, self.followers = [], []
        self.rows = [{"name": "web.1", "container": "c1", "role": "service", "type": "web",
                      "release": 1, "seq": 1, "state": "running", "health": None,
                      "uptime": 5.0}]
        self.unit = SimpleNamespace(labels=dict(SERVICE), name="c1")

    def dynos(self, app):
        return [dict(r) for r in self.rows]

    def units(self, app, **labels):
        return [self.unit]

    def stop_units(self, units, timeout):
        self.calls.append(("stop", len(units), timeout))
        return len(units)

    def log_lines(self, units, lines):
        return [f"web.1 | line {i}" for i in range(3)][-lines:] if lines else []

    def follow_logs(self, app, units, tail, wanted, put):
        follower = Follower(put)
        self.followers.append(follower)
        return follower


class Follower:
    def __init__(self, put):
        self.done, self.closed = False, False
        threading.Thread(target=put, args=("web.1 | hello",), daemon=True).start()

    def close(self):
        self.closed = True


@pytest.fixture
def gitd(fake):  # noqa: F811 - the fixture imported above
    fake.scheduler = Scheduler()
    return fake


def session(gitd, key="admin"):
    return Session(gitd, gitd.store.get_key(key))


def test_ps_returns_the_formation_and_the_containers(gitd):
    deployed(gitd.store, procfile={"worker": "k"})
    data = ps_verbs.ps(session(gitd), "hello")
    assert data["app"] == "hello" and data["release"] == 1 and data["stopped"] is False
    assert data["formation"] == {"web": 1, "worker": 0}
    assert [c["name"] for c in data["containers"]] == ["web.1"]
    assert "phase" in data["containers"][0]


def test_ps_reads_granted_apps_only(gitd):
    deployed(gitd.store)
    with pytest.raises(PermissionDenied):
        ps_verbs.ps(session(gitd, "dev"), "hello")
    gitd.store.grant("hello", "dev")
    assert ps_verbs.ps(session(gitd, "dev"), "hello")["app"] == "hello"


def test_changing_processes_needs_an_admin_even_on_a_granted_app(gitd):
    deployed(gitd.store)
    gitd.store.grant("hello", "dev")
    dev = session(gitd, "dev")
    for verb, args in ((ps_verbs.scale, ({"web": 2},)), (ps_verbs.show_formation, ()),
                       (ps_verbs.restart, ()), (ps_verbs.stop, ()), (ps_verbs.start, ())):
        with pytest.raises(PermissionDenied):
            verb(dev, "hello", *args)
    assert gitd.store.get_app("hello").scale == {} and gitd.pipeline.calls == []
    assert gitd.scheduler.calls == [] and not gitd.store.get_app("hello").settings.get("stopped")


@pytest.mark.parametrize("changes,message", [
    ({"web": 21}, "0 to 20"), ({"web": -1}, "0 to 20"), ({"web": True}, "0 to 20"),
    ({"web": "1e3"}, "0 to 20"), ({"web": 1.5}, "0 to 20"), ({"release": 1}, "once per release"),
    ({"../x": 1}, "invalid"), ({3: 1}, "invalid process type"),
    ({}, "at least one"),
])
def test_bad_scale_is_refused_with_nothing_changed(gitd, changes, message):
    deployed(gitd.store, procfile={"worker": "k"})
    with pytest.raises(UsageError, match=message):
        ps_verbs.scale(session(gitd), "hello", changes)
    assert gitd.store.get_app("hello").scale == {} and gitd.pipeline.calls == []


def test_a_process_type_the_release_lacks_is_not_found_and_changes_nothing(gitd):
    deployed(gitd.store, procfile={"worker": "k"})
    with pytest.raises(NotFound, match="no process type 'clock'"):
        ps_verbs.scale(session(gitd), "hello", {"clock": 1})
    assert gitd.store.get_app("hello").scale == {} and gitd.pipeline.calls == []


def test_scale_returns_the_new_formation_and_puts_the_old_back_on_failure(gitd):
    deployed(gitd.store, procfile={"worker": "k"})
    done = ps_verbs.scale(session(gitd), "hello", {"worker": 2})
    assert done == {"app": "hello", "changes": {"worker": 2}, "deployed": True,
                    "formation": {"web": 1, "worker": 2}}
    assert gitd.pipeline.calls[-1] == ("redeploy", "hello", "Scaling to worker=2:")
    gitd.pipeline.fail = True
    with pytest.raises(GitdError, match="left as it was"):
        ps_verbs.scale(session(gitd), "hello", {"web": 3})
    assert ps_verbs.show_formation(session(gitd), "hello") == {"web": 1, "worker": 2}


def test_scale_before_the_first_deploy_is_stored_only(gitd):
    done = ps_verbs.scale(session(gitd), "hello", {"web": 2})
    assert done["deployed"] is False and gitd.pipeline.calls == []
    assert gitd.store.get_app("hello").scale == {"web": 2}


def test_stop_returns_how_many_stopped(gitd):
    deployed(gitd.store)
    assert ps_verbs.stop(session(gitd), "hello") == {"app": "hello", "stopped": 1}
    assert gitd.store.get_app("hello").settings.get("stopped") is True
    assert ps_verbs.ps(session(gitd), "hello")["stopped"] is True


def test_logs_are_lines_and_bad_arguments_are_refused_before_any_read(gitd):
    deployed(gitd.store)
    assert list(logs_verbs.logs(session(gitd), "hello", 2)) == ["web.1 | line 1", "web.1 | line 2"]
    for kwargs, error in (({"lines": 10_001}, UsageError), ({"lines": -1}, UsageError),
                          ({"lines": True}, UsageError), ({"process": "Web!"}, UsageError),
                          ({"service": "../x"}, UsageError), ({"process": "worker"}, GitdError)):
        with pytest.raises(error):
            logs_verbs.logs(session(gitd), "hello", **kwargs)
    with pytest.raises(PermissionDenied):
        logs_verbs.logs(session(gitd, "dev"), "hello")
    assert gitd.scheduler.followers == []


def test_a_follow_is_a_stream_the_consumer_closes(gitd):
    deployed(gitd.store)
    stream = logs_verbs.logs(session(gitd), "hello", 10, follow=True)
    seen = [next(stream) for _ in range(2)]
    assert "web.1 | hello" in seen and set(seen) <= {"web.1 | hello", None}
    follower = gitd.scheduler.followers[0]
    assert not follower.closed
    stream.close()
    assert follower.closed


def test_a_follow_ends_when_its_follower_is_done(gitd):
    deployed(gitd.store)
    stream = logs_verbs.logs(session(gitd), "hello", 10, follow=True)
    assert next(stream) == "web.1 | hello"
    gitd.scheduler.followers[0].done = True
    assert list(stream) == [] and gitd.scheduler.followers[0].closed

"""The watch that bridges a live web container started again (hooks.restarts)."""

from __future__ import annotations

import threading
import time

from hooks import restarts
from tests.fakes import Container, Engine

CREATED = "2026-12-07T06:00:00.123456789Z"


def web(name: str, started: str, health: str = "starting", status: str = "running",
        restart_count: int = 0) -> Container:
    return Container(name, {"gitd.app": "shop", "gitd.seq": "3", "gitd.process": "web",
                            "gitd.role": "service"}, status,
                     {"Created": CREATED, "RestartCount": restart_count,
                      "State": {"Status": status, "StartedAt": started, "Health": {"Status": health}}})


def test_a_run_is_a_restart_when_the_engine_restarted_it_or_it_started_long_after_its_creation():
    assert not restarts.started_again(web("a", "2026-12-07T06:00:01Z").attrs)  # a deploy's start
    assert restarts.started_again(web("b", "2026-12-07T06:00:01Z", restart_count=1).attrs)
    assert restarts.started_again(web("c", "2026-12-07T06:05:00Z").attrs)  # ps:start, dockerd
    assert not restarts.started_again({"State": {}})  # nothing to tell by: not one
    assert not restarts.started_again({"Created": "garbage", "State": {"StartedAt": "x"}})


def test_only_a_running_container_docker_has_not_checked_yet_waits_for_it():
    assert restarts.waits_for_docker(web("a", CREATED).attrs)
    assert not restarts.waits_for_docker(web("a", CREATED, health="healthy").attrs)
    assert not restarts.waits_for_docker(web("a", CREATED, health="unhealthy").attrs)
    assert not restarts.waits_for_docker(web("a", CREATED, status="exited").attrs)
    assert not restarts.waits_for_docker({"State": {"Status": "running"}})  # no check at all


def test_the_watch_serves_a_restarted_container_and_leaves_a_deploys_own_alone():
    served = []
    engine = Engine([web("restarted", "2026-12-07T06:10:00Z"),
                     web("fresh", "2026-12-07T06:00:02Z"),
                     web("checked", "2026-12-07T06:10:00Z", health="healthy")])
    watch = restarts.RestartWatch(engine, served.append, 30)
    assert watch.look("restarted") and [c.name for c in served] == ["restarted"]
    assert not watch.look("fresh") and not watch.look("checked") and not watch.look("gone")
    assert len(served) == 1


def test_at_its_start_the_watch_looks_at_the_running_ones_then_follows_the_events():
    served, started = [], threading.Event()
    engine = Engine([web("restarted", "2026-12-07T06:10:00Z"),
                     web("checked", "2026-12-07T06:10:00Z", health="healthy")])
    later = web("later", "2026-12-07T06:20:00Z")

    def events(app, actions, **labels):
        assert actions == ("start",) and labels == restarts.WEB
        started.set()
        engine.live.append(later)
        yield {"id": "later"}
        time.sleep(60)
    engine.events = events
    restarts.RestartWatch(engine, lambda c: served.append(c.name), 30).start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(served) < 2:
        time.sleep(0.02)
    assert started.is_set() and sorted(served) == ["later", "restarted"]


def test_a_container_queued_twice_is_looked_at_once():
    watch = restarts.RestartWatch(Engine([]), lambda c: None, 30)
    watch.queue("a")
    watch.queue("a")
    watch.queue("")
    assert watch._todo.qsize() == 1


def test_a_container_whose_app_is_busy_is_looked_at_again_until_docker_would_have(monkeypatch):
    """No worker waits for an app's lock (a push holds it for minutes): the
    container is queued again, and given up after `give_up` seconds."""
    from gitd.core.errors import Conflict

    monkeypatch.setattr(restarts, "RETRY_AFTER", 0.05)
    tries, served = [], []
    busy_until = time.monotonic() + 0.3

    def serve(container):
        tries.append(time.monotonic())
        if time.monotonic() < busy_until:
            raise Conflict("another deploy of shop is still running")
        served.append(container.name)
    engine = Engine([web("restarted", "2026-12-07T06:10:00Z")])
    restarts.RestartWatch(engine, serve, give_up=5).start().queue("restarted")
    deadline = time.monotonic() + 5
    while not served and time.monotonic() < deadline:
        time.sleep(0.02)
    assert served == ["restarted"] and len(tries) >= 3

    given_up = []
    watch = restarts.RestartWatch(engine, lambda c: given_up.append(1) or (_ for _ in ()).throw(
        Conflict("busy")), give_up=0.2).start()
    watch.queue("restarted")
    time.sleep(0.8)
    count = len(given_up)
    time.sleep(0.3)
    assert 2 <= count == len(given_up)  # tried a few times, then no more
    assert watch._queued == set() and watch._busy_since == {}

"""`logs -f` on the docker scheduler (hooks.scheduler.AppLogs), against a
fake engine: events become start/exit lines, each run of a container is
followed from where the one before stopped, and close() ends every stream."""

import queue
import threading
import time

from hooks import dynos
from hooks.scheduler import AppLogs

LABELS = {"gitd.role": "service", "gitd.app": "shop"}


class Stream:
    """A followed stream: chunks put from the test, ended by end() or close()."""

    def __init__(self, chunks=()):
        self.items: queue.Queue = queue.Queue()
        for chunk in chunks:
            self.items.put(chunk)
        self.closed = False

    def __iter__(self):
        while True:
            item = self.items.get()
            if item is None:
                return
            yield item

    def end(self):
        self.items.put(None)

    def close(self):
        self.closed = True
        self.items.put(None)


class Container:
    def __init__(self, cid, process, release, seq, started="2026-01-01T00:00:01.5Z", restarts=0):
        self.id = cid
        self.name = f"gitd-i.shop.{process}.1.s{seq}"
        self.labels = {**LABELS, "gitd.process": process, "gitd.release": str(release),
                       "gitd.seq": str(seq)}
        self.attrs = {"State": {"StartedAt": started}, "RestartCount": restarts}


class Engine:
    def __init__(self):
        self.events_stream = Stream()
        self.known: dict[str, Container] = {}
        self.opened: list[tuple[str, dict, Stream]] = []
        self.client = self
        self.containers = self
        self.api = self

    def events(self, app, actions, **labels):
        assert app == "shop" and labels == {"gitd.role": "service"}
        return self.events_stream

    def get(self, cid):
        return self.known[cid]

    def logs_of(self, cid):
        return [(kwargs, stream) for c, kwargs, stream in self.opened if c == cid]

    def logs(self, cid, **kwargs):
        stream = Stream()
        self.opened.append((cid, kwargs, stream))
        return stream

    def event(self, action, container, **attributes):
        self.events_stream.items.put({"Action": action, "id": container.id,
                                      "Actor": {"Attributes": {**container.labels, **attributes}}})


def until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_a_restart_a_crash_and_a_replacement_read_as_lines():
    engine, lines = Engine(), []
    old_web = Container("a", "web", 1, 1)
    follower = AppLogs(engine, "shop", lambda labels: labels.get("gitd.process") == "web",
                       lines.append)
    follower.start([old_web], tail=5)
    assert until(lambda: engine.logs_of("a"))
    [(kwargs, stream)] = engine.logs_of("a")
    assert kwargs["tail"] == 5 and kwargs["since"] is None and kwargs["follow"]
    stream.items.put(b"2026-01-01T00:00:02.25Z hello\n2026-01-01T00:00:03Z par")
    stream.items.put(b"tial\n")
    assert until(lambda: lines == ["web.1 | hello", "web.1 | partial"])

    # it crashes: its log ends, then the exit; Docker restarts it
    stream.end()
    engine.event("die", old_web, exitCode="3")
    assert until(lambda: lines[-1] == "-----> web.1 (v1) exited with status 3")
    engine.known["a"] = Container("a", "web", 1, 1, started="2026-01-01T00:00:05Z", restarts=1)
    engine.event("start", engine.known["a"])
    assert until(lambda: len(engine.logs_of("a")) == 2)
    kwargs, restarted = engine.logs_of("a")[1]
    assert kwargs["tail"] == "all" and abs(kwargs["since"] - (1767225603 + 1e-6)) < 1e-5
    assert lines[-1] == "-----> web.1 (v1) started (restart 1)"

    # a deploy: the new one starts, the old one stops; a worker is not wanted
    new_web = engine.known["b"] = Container("b", "web", 2, 2)
    engine.event("start", new_web)
    engine.known["w"] = Container("w", "worker", 2, 2)
    engine.event("start", engine.known["w"])
    assert until(lambda: engine.logs_of("b"))
    restarted.end()
    engine.event("die", engine.known["a"], exitCode="143")
    assert until(lambda: lines[-1] == "-----> web.1 (v1) exited with status 143 (replaced by v2)")
    assert "-----> web.1 (v2) started" in lines and not [x for x in lines if "worker" in x]
    assert engine.logs_of("w") == []

    follower.close()
    assert engine.events_stream.closed and engine.logs_of("b")[0][1].closed
    assert not [t for t in threading.enumerate() if t.name.startswith("logs-")]


def test_a_start_seen_while_listing_is_not_followed_twice():
    engine, lines = Engine(), []
    web = Container("a", "web", 1, 1)
    engine.known["a"] = web
    follower = AppLogs(engine, "shop", lambda labels: True, lines.append)
    follower.start([web], tail=0)
    engine.event("start", web)  # the same run
    engine.event("destroy", Container("zz", "web", 1, 1))  # one never followed
    time.sleep(0.2)
    assert len(engine.logs_of("a")) == 1 and lines == []
    follower.close()


def test_lines_of_a_start_and_an_exit():
    assert dynos.started_line("web.1", 3) == "-----> web.1 (v3) started"
    assert dynos.exited_line("web.1", 2, 0, 3) == "-----> web.1 (v2) exited with status 0 (replaced by v3)"
    assert dynos.exited_line("worker.2", 2, None) == "-----> worker.2 (v2) exited"
    assert dynos.stamp_seconds("2026-01-01T00:00:03.000000001Z") == 1767225603.000000001
    assert dynos.stamp_seconds("0001-01-01T00:00:00Z") is None
    assert dynos.stamp_seconds("junk") is None


def test_a_follower_stops_when_its_key_loses_its_powers(tmp_path):
    """logs -f checks access as the store says now, not as the session began:
    an admin demoted (its key removed and added again without --admin) or a
    removed key stop following an app they were not granted."""
    import pytest

    from gitd import commands
    from gitd.verbs.logs import still_readable as _still_readable
    from gitd.core.config import Settings
    from gitd.core.errors import GitdError
    from gitd.core.store import Store
    from tests.fakes import Bridge, FakeGitd

    store = Store(tmp_path / "gitd.db")
    store.add_key("root", "SHA256:root", "ssh-ed25519 AAAA root", True)
    store.add_key("ops", "SHA256:ops", "ssh-ed25519 AAAA ops", True)
    store.create_app("shop")
    fake = FakeGitd(store, Settings(data_dir=tmp_path, instance="t1"))
    ctx = commands.Context(fake, store.get_key("ops"), Bridge(b""))
    _still_readable(ctx, "shop")  # an admin may
    store.remove_key("ops")
    with pytest.raises(GitdError, match="stopped following shop: this key was removed"):
        _still_readable(ctx, "shop")
    store.add_key("ops", "SHA256:ops", "ssh-ed25519 AAAA ops", False)  # back as a deployer
    with pytest.raises(GitdError, match="stopped following shop"):
        _still_readable(ctx, "shop")
    store.grant("shop", "ops")
    _still_readable(ctx, "shop")

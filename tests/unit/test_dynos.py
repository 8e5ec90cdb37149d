"""What ps and logs show of an app's units, whatever runs them (hooks.dynos)."""

from hooks import dynos
from tests.fakes import Container


def test_a_container_row():
    c = Container("gitd-i.shop.backend_web.2.s9",
                  {"gitd.process": "web", "gitd.component": "backend", "gitd.role": "service",
                   "gitd.release": "4", "gitd.seq": "9"}, "running",
                  {"State": {"StartedAt": "2026-01-01T00:00:00.123Z",
                             "Health": {"Status": "healthy"}}})
    row = dynos.container_row(c)
    assert (row["name"], row["type"], row["service"], row["release"], row["seq"]) == (
        "backend.web.2", "web", "backend", 4, 9)
    assert (row["state"], row["health"], row["started_at"], row["container"]) == (
        "running", "healthy", "2026-01-01T00:00:00Z", c.name)
    assert "node" not in row  # only the swarm says where
    c.status, c.attrs = "created", {"State": {"StartedAt": "0001-01-01T00:00:00Z"}}
    row = dynos.container_row(c)
    assert (row["started_at"], row["uptime"], row["health"]) == (None, None, None)
    c.labels = {"gitd.release": "x"}
    assert dynos.container_row(c)["release"] == 0  # odd labels do not break ps


def test_dyno_types_and_bad_times():
    assert dynos.dyno_type({"gitd.process": "worker"}) == "worker"
    assert dynos.dyno_type({"gitd.process": "web", "gitd.component": "api"}) == "api.web"
    assert dynos.parse_time("not a time") is None and dynos.parse_time(None) is None


def test_lines_are_split_as_they_come():
    lines = dynos.LineSplitter()
    assert lines.feed(b"one\r\ntw") == ["one"]
    assert lines.feed(b"o\n\nthr") == ["two", ""]
    assert lines.feed("é".encode()[:1]) == []
    assert lines.rest() == ["thr\ufffd"]
    assert lines.rest() == []

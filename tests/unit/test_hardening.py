"""Numbers, session caps and the atomic-push rule, without services."""

import socket

import pytest

from gitd.core import validate
from gitd.core.config import Settings, load_settings
from gitd.core.errors import GitdError, UsageError
from gitd.gitserve import DeployingReceivePackHandler
from gitd.server import Limits, ack_at_once
from gitd.core.store import Key
from hooks import checks


@pytest.mark.parametrize("raw", ["v²", "v٣", "v99999999999999999999", "v0", "v-1", "v1e3", "v",
                                 "", "v 1", "1.0", "１"])
def test_odd_release_versions_are_usage_errors(raw):
    with pytest.raises(UsageError, match="invalid release"):
        validate.release_version(raw)


def test_release_versions():
    assert validate.release_version("v3") == 3 == validate.release_version("3")


@pytest.mark.parametrize("raw", ["²", "-1", "21", "1e1", "inf", "nan", " 1", "1.5", True, 1.5,
                                 float("inf"), float("nan"), None, [], "9" * 5000])
def test_whole_numbers_refuse_what_is_not_ascii_digits_in_range(raw):
    with pytest.raises(UsageError, match="from 0 to 20"):
        validate.whole_number(raw, "count", 0, 20)


@pytest.mark.parametrize("raw", ["inf", "nan", "1e999", "-1", "²", "", "0x1", 1e999,
                                 float("nan"), -0.5, 3601, True])
def test_seconds_refuse_what_is_not_finite_and_in_range(raw):
    with pytest.raises(UsageError, match="seconds"):
        validate.seconds(raw, "drain", 0, 3600)


def test_numbers_in_range():
    assert validate.whole_number("7", "n", 0, 20) == 7 == validate.whole_number(7.0, "n", 0, 20)
    assert validate.seconds("2.5", "s", 0, 10) == 2.5 == validate.seconds(2.5, "s", 0, 10)
    with pytest.raises(UsageError):
        validate.seconds("0", "wait", 0, 10, above_low=True)
    assert validate.port("8080") == 8080
    for raw in ("0", "65536", "²", "80a"):
        with pytest.raises(UsageError, match="PORT"):
            validate.port(raw)


@pytest.mark.parametrize("section", [{"attempts": 1e999}, {"wait": float("nan")},
                                     {"timeout": float("inf")}, {"attempts": "²"},
                                     {"attempts": 0}, {"attempts": 101}, {"wait": 3601},
                                     {"path": "/a b"}, {"path": 7}, {"path": "/é"}])
def test_hostile_app_json_health_checks_are_refused(section):
    import json
    with pytest.raises(UsageError):
        checks.from_app_json(json.dumps({"healthchecks": section}))


def test_session_caps_per_key_and_in_total():
    limits = Limits(Settings(max_sessions=3, max_sessions_per_key=2))
    alice = Key("alice", "SHA256:a", "", False, 0)
    bob = Key("bob", "SHA256:b", "", False, 0)
    limits.session_started(alice)
    limits.session_started(alice)
    assert "max_sessions_per_key" in limits.session_refusal(alice)
    assert limits.session_refusal(bob) is None
    limits.session_started(bob)
    assert "max_sessions" in limits.session_refusal(bob)
    limits.session_ended(alice)
    assert limits.session_refusal(alice) is None
    limits.session_ended(alice)
    limits.session_ended(bob)
    assert limits.total_sessions == 0 and not limits.sessions


@pytest.mark.parametrize("name,value", [("max_sessions", "0"), ("login_timeout", "nan"),
                                        ("idle_timeout", "inf"), ("max_repo_bytes", "-1")])
def test_limit_settings_are_checked(tmp_path, name, value):
    with pytest.raises(GitdError, match=name):
        load_settings(tmp_path, environ={f"GITD_{name.upper()}": value})


class _Atomic(DeployingReceivePackHandler):
    """Only what _on_update reads: the update and the client's capabilities."""

    def __init__(self, refs, atomic):
        self.repo = type("NoRefs", (), {"refs": {}})()  # every branch new
        self._update = refs
        self._atomic = atomic
        self.deployed = []
        self._deploy = lambda sha, sink: self.deployed.append(sha)

    def has_capability(self, cap):
        return self._atomic and cap == b"atomic"


def test_an_atomic_update_deploys_only_alone_and_one_push_deploys_one_branch():
    main = (b"0" * 40, b"1" * 40, b"refs/heads/main")
    feature = (b"0" * 40, b"1" * 40, b"refs/heads/feature")
    master = (b"0" * 40, b"1" * 40, b"refs/heads/master")
    mixed = _Atomic([main, feature], atomic=True)
    assert b"atomic" in mixed._on_update(b"refs/heads/main", b"0" * 40, b"1" * 40)
    assert mixed.deployed == []
    plain = _Atomic([main, feature], atomic=False)
    assert plain._on_update(b"refs/heads/main", b"0" * 40, b"1" * 40) is None
    assert plain.deployed == [b"1" * 40]
    alone = _Atomic([main], atomic=True)
    assert alone._on_update(b"refs/heads/main", b"0" * 40, b"1" * 40) is None
    both = _Atomic([main, master], atomic=False)
    assert b"not both" in both._on_update(b"refs/heads/master", b"0" * 40, b"1" * 40)
    assert both.deployed == []


class _Conn:
    """What ack_at_once sees of an asyncssh connection."""

    def __init__(self, sock):
        self.sock, self.seen = sock, []

    def get_extra_info(self, name):
        return {"socket": self.sock}[name]

    def data_received(self, data, datatype=None):
        self.seen.append(data)


def test_every_read_of_a_tcp_connection_asks_for_a_quick_ack():
    calls = []

    class Recording(socket.socket):
        def setsockopt(self, *args):
            calls.append(args)

    with Recording(socket.AF_INET, socket.SOCK_STREAM) as recording:
        conn = _Conn(recording)
        ack_at_once(conn)
        conn.data_received(b"one")
        conn.data_received(b"two", None)
    assert conn.seen == [b"one", b"two"]
    assert calls == [(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)] * 2


def test_a_unix_socket_is_left_as_it_is():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        conn = _Conn(sock)
        original = conn.data_received
        ack_at_once(conn)
        assert conn.data_received == original

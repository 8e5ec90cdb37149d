"""gitd.verbs.checks called directly: the data returned, access, and bad
values refused with nothing changed."""

import pytest

from gitd.core.errors import PermissionDenied, UsageError
from gitd.verbs import Session, checks


def session(fake, key="admin"):
    return Session(fake, fake.store.get_key(key))


def test_set_show_disable_enable_return_data(fake):
    s = session(fake)
    done = checks.set_values(s, "hello", {"path": "/health", "attempts": "3", "drain": "2.5",
                                          "stop_timeout": "20"})
    assert done == {"app": "hello", "set": {"path": "/health", "attempts": 3, "drain": 2.5,
                                            "stop_timeout": 20}}
    shown = checks.show(s, "hello")
    assert shown["set"] == {"path": "/health", "attempts": 3}
    assert shown["check"]["path"] == "/health" and (shown["drain"], shown["stop_timeout"]) == (2.5, 20)
    assert checks.disable(s, "hello") == {"app": "hello", "checks": "disabled"}
    assert fake.store.get_app("hello").settings["checks_disabled"] is True
    assert checks.enable(s, "hello") == {"app": "hello", "checks": "enabled"}
    assert "checks_disabled" not in fake.store.get_app("hello").settings


def test_a_deployer_reads_granted_checks_and_changes_none(fake):
    dev = session(fake, "dev")
    with pytest.raises(PermissionDenied):
        checks.show(dev, "hello")
    fake.store.grant("hello", "dev")
    assert checks.show(dev, "hello")["app"] == "hello"
    for verb in (lambda: checks.set_values(dev, "hello", {"path": "/x"}),
                 lambda: checks.disable(dev, "hello"), lambda: checks.enable(dev, "hello")):
        with pytest.raises(PermissionDenied):
            verb()
    assert fake.store.get_app("hello").settings == {}


@pytest.mark.parametrize("values", [
    {}, {"path": "no-slash"}, {"path": "/a b"}, {"attempts": "0"}, {"timeout": "-1"},
    {"wait": "1e400"}, {"drain": "3601"}, {"stop_timeout": "1.5"}, {"colour": "red"},
    {"path": "/ok", "drain": "lots"}, {"drain": "1", "path": "/" + "x" * 5000},
])
def test_bad_values_change_nothing(fake, values):
    before = fake.store.get_app("hello").settings
    with pytest.raises(UsageError):
        checks.set_values(session(fake), "hello", values)
    assert fake.store.get_app("hello").settings == before

"""gitd.verbs.config called directly, as every front-end calls it: the data
returned, access, and bad input refused with nothing changed."""

import pytest

from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.verbs import Session
from gitd.verbs import config
from tests.fakes import deployed


def session(fake, key="admin", lines=None):
    return Session(fake, fake.store.get_key(key), sink=None if lines is None else lines.append)


def test_set_get_show_unset_return_what_happened(fake):
    s = session(fake)
    assert config.set_vars(s, "hello", {"A": "1", "B": "two words"}) == {
        "app": "hello", "description": "Set A, B", "outcome": "stored", "running": None}
    assert config.show(s, "hello") == {"A": "1", "B": "two words"}
    assert config.get(s, "hello", "B") == "two words"
    assert config.set_vars(s, "hello", {"A": "1"})["outcome"] == "unchanged"
    base = deployed(fake.store, config={"A": "1"})
    done = config.set_vars(s, "hello", {"C": "3"}, restart=False)
    assert done["outcome"] == "pending" and done["running"] == base.version
    assert config.pending(s, "hello", config.show(s, "hello")) == base.version
    done = config.unset(s, "hello", ["C"])
    assert done["outcome"] == "released" and fake.pipeline.calls[-1][3] == {"A": "1"}


def test_config_verbs_refuse_a_deployer_even_on_a_granted_app(fake):
    fake.store.grant("hello", "dev")
    dev = session(fake, "dev")
    for verb in (lambda: config.show(dev, "hello"), lambda: config.get(dev, "hello", "A"),
                 lambda: config.set_vars(dev, "hello", {"A": "1"}),
                 lambda: config.unset(dev, "hello", ["A"])):
        with pytest.raises(PermissionDenied):
            verb()
    assert fake.store.get_config("hello") == {}


@pytest.mark.parametrize("values,message", [
    ({"GITD_APP": "x"}, "set by gitd"),
    ({"DYNO": "x"}, "set by gitd"),
    ({"1X": "y"}, "invalid config key"),
    ({"A": "x\0y"}, "NUL"),
    ({"PORT": "99999"}, "PORT must be"),
    ({"A": 5}, "not text"),
    ({5: "x"}, "a config key is text"),
    ({}, "at least one"),
])
def test_bad_values_change_nothing(fake, values, message):
    fake.store.set_config("hello", {"KEEP": "1"})
    with pytest.raises(UsageError, match=message):
        config.set_vars(session(fake), "hello", {"OK": "v", **values} if values else values)
    assert fake.store.get_config("hello") == {"KEEP": "1"}


def test_unset_of_a_missing_key_and_a_failed_release_change_nothing(fake):
    deployed(fake.store, config={"A": "1"})
    s = session(fake)
    with pytest.raises(NotFound, match="NOPE"):
        config.unset(s, "hello", ["A", "NOPE"])
    fake.pipeline.fail = True
    with pytest.raises(GitdError, match="left as it was"):
        config.set_vars(s, "hello", {"A": "2"})
    assert fake.store.get_config("hello") == {"A": "1"}
    with pytest.raises(UsageError, match="invalid app name"):
        config.show(s, "../hello")


def test_patch_sets_and_unsets_in_one_release(fake):
    deployed(fake.store, config={"A": "1", "B": "2"})
    s = session(fake)
    calls = len(fake.pipeline.calls)
    done = config.patch(s, "hello", {"A": "9", "B": None, "C": "3"})
    assert done["outcome"] == "released" and done["description"] == "Set A, C; Unset B"
    assert len(fake.pipeline.calls) == calls + 1 and fake.pipeline.calls[-1][3] == {"A": "9",
                                                                                    "C": "3"}
    assert fake.store.get_config("hello") == {"A": "9", "C": "3"}


@pytest.mark.parametrize("changes,error", [
    ({"A": "2", "NOPE": None}, NotFound), ({"A": "2", "GITD_X": None}, UsageError),
    ({"A": "2", "PORT": "0"}, UsageError), ({"A": 2}, UsageError), ({}, UsageError),
    ({"A": "2", "B": ["x"]}, UsageError), ([("A", "2")], UsageError)])
def test_a_bad_patch_changes_nothing(fake, changes, error):
    deployed(fake.store, config={"A": "1"})
    calls = len(fake.pipeline.calls)
    with pytest.raises(error):
        config.patch(session(fake), "hello", changes)
    assert fake.store.get_config("hello") == {"A": "1"} and len(fake.pipeline.calls) == calls


def test_patch_is_for_admins_only(fake):
    fake.store.grant("hello", "dev")
    with pytest.raises(PermissionDenied):
        config.patch(session(fake, "dev"), "hello", {"A": "1"})
    assert fake.store.get_config("hello") == {}

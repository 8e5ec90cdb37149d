"""gitd.verbs.resources called directly: the data returned, access, and bad
limits refused with nothing changed."""

import pytest

from gitd.core.errors import GitdError, PermissionDenied, UsageError
from gitd.verbs import Session, resources
from tests.fakes import deployed


def session(fake, key="admin"):
    return Session(fake, fake.store.get_key(key))


def limits(fake):
    return fake.store.get_app("hello").settings.get("resources")


def test_set_show_unset_return_what_applies(fake):
    s = session(fake)
    done = resources.set_limits(s, "hello", {"memory": "512M", "cpus": "1"})
    assert done == {"app": "hello", "change": "cpus=1 memory=512m",
                    "set": {"memory": "512m", "cpus": "1"}, "outcome": "stored"}
    shown = resources.show(s, "hello")
    assert shown["set"] == {"memory": "512m", "cpus": "1"} and shown["applied"]["memory"] == "512m"
    assert resources.set_limits(s, "hello", {"memory": "512m"})["outcome"] == "unchanged"
    deployed(fake.store)
    done = resources.unset(s, "hello", ["memory"])
    assert done["outcome"] == "deployed" and done["set"] == {"cpus": "1"}
    assert fake.pipeline.calls[-1][0] == "redeploy"


def test_a_deployer_reads_granted_limits_and_sets_none(fake):
    dev = session(fake, "dev")
    with pytest.raises(PermissionDenied):
        resources.show(dev, "hello")
    fake.store.grant("hello", "dev")
    assert resources.show(dev, "hello")["app"] == "hello"
    for verb in (lambda: resources.set_limits(dev, "hello", {"memory": "1g"}),
                 lambda: resources.unset(dev, "hello", ["memory"])):
        with pytest.raises(PermissionDenied):
            verb()
    assert limits(fake) is None


@pytest.mark.parametrize("values", [
    {}, {"memory": "lots"}, {"memory": "-1m"}, {"cpus": "0"}, {"cpus": "1e309"},
    {"pids": "0"}, {"swap": "1g"}, {"memory": 512}, {"cpus": "1", "pids": "9" * 40},
])
def test_bad_limits_change_nothing(fake, values):
    resources.set_limits(session(fake), "hello", {"pids": "100"})
    deployed(fake.store)
    with pytest.raises(UsageError):
        resources.set_limits(session(fake), "hello", values)
    with pytest.raises(UsageError):
        resources.unset(session(fake), "hello", ["pids", "swap"])
    assert limits(fake) == {"pids": "100"} and fake.pipeline.calls == []


def test_a_failed_redeploy_puts_the_limits_back(fake):
    deployed(fake.store)
    fake.pipeline.fail = True
    with pytest.raises(GitdError, match="left as they were"):
        resources.set_limits(session(fake), "hello", {"memory": "1g"})
    assert limits(fake) is None

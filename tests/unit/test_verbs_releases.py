"""gitd.verbs.releases called directly: the data returned, access, and bad
input refused with nothing changed."""

import pytest

from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.verbs import Session, releases
from tests.fakes import deployed


def session(fake, key="admin"):
    return Session(fake, fake.store.get_key(key))


def test_rollback_target(store):
    v1 = deployed(store)
    with pytest.raises(NotFound, match="no earlier release"):
        releases.rollback_target(store, "hello", None)
    store.new_release("hello", status="failed")
    v3 = deployed(store)
    assert releases.rollback_target(store, "hello", None).version == v1.version
    with pytest.raises(GitdError, match="current release already"):
        releases.rollback_target(store, "hello", v3.version)
    with pytest.raises(GitdError, match="v2 failed"):
        releases.rollback_target(store, "hello", 2)
    with pytest.raises(NotFound, match="no release v9"):
        releases.rollback_target(store, "hello", 9)


def test_listing_and_info_are_the_json_of_the_commands(fake):
    deployed(fake.store, procfile={"web": "serve"}, config={"SECRET": "s3cret"})
    deployed(fake.store)
    rows = releases.list_releases(session(fake), "hello")
    assert [(r["version"], r["current"]) for r in rows] == [(2, True), (1, False)]
    assert [r["version"] for r in releases.list_releases(session(fake), "hello", 1)] == [2]
    assert releases.list_releases(session(fake), "hello", -3) == []
    data = releases.info(session(fake), "hello", "v1")
    assert data["config_keys"] == ["SECRET"] and "s3cret" not in repr(data)
    assert data["procfile"] == {"web": "serve"} and releases.info(session(fake), "hello", 1) == data


def test_a_deployer_reads_only_granted_apps_and_never_rolls_back(fake):
    deployed(fake.store, config={"A": "old"})
    deployed(fake.store, config={"A": "new"})
    dev = session(fake, "dev")
    for verb in (lambda: releases.list_releases(dev, "hello"), lambda: releases.info(dev, "hello", 1)):
        with pytest.raises(PermissionDenied):
            verb()
    fake.store.grant("hello", "dev")
    assert releases.list_releases(dev, "hello")[0]["version"] == 2
    with pytest.raises(PermissionDenied):
        releases.rollback(dev, "hello")
    assert fake.pipeline.calls == []


def test_rollback_returns_the_new_release_and_bad_versions_change_nothing(fake):
    deployed(fake.store, config={"A": "old"})
    deployed(fake.store, config={"A": "new"})
    fake.store.set_config("hello", {"A": "new"})
    for bad in ("latest", "v0", True, "-1", "v" + "9" * 30):
        with pytest.raises(UsageError, match="invalid release"):
            releases.rollback(session(fake), "hello", bad)
    with pytest.raises(UsageError, match="whole number"):
        releases.list_releases(session(fake), "hello", "5")
    assert fake.pipeline.calls == [] and fake.store.get_config("hello") == {"A": "new"}
    done = releases.rollback(session(fake), "hello")
    assert done["app"] == "hello" and done["from"] == 1
    assert fake.pipeline.calls == [("release", "hello", 1, {"A": "old"}, "rollback", "Rollback to v1")]
    assert fake.store.get_config("hello") == {"A": "old"}

"""gitd.verbs.keys called directly: the data returned, admins only, and
bad keys refused with nothing changed."""

import pytest

from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.keys import parse_public_key
from gitd.verbs import Session, keys
from tests.fakes import PUBKEY


def session(fake, key="admin"):
    return Session(fake, fake.store.get_key(key))


def names(fake):
    return [k.name for k in fake.store.list_keys()]


def test_add_list_remove_return_the_keys(fake):
    added = keys.add(session(fake), "carol", PUBKEY)
    assert added["name"] == "carol" and added["role"] == "deployer" and added["apps"] == []
    assert added["fingerprint"] == parse_public_key(PUBKEY)[1]
    fake.store.grant("hello", "carol")
    listed = {k["name"]: k for k in keys.list_keys(session(fake))}
    assert listed["carol"]["apps"] == ["hello"] and listed["admin"]["apps"] == "all"
    assert keys.remove(session(fake), "carol") == {"name": "carol"}
    with pytest.raises(NotFound):
        keys.remove(session(fake), "carol")


def test_keys_are_for_admins_only(fake):
    fake.store.grant("hello", "dev")
    dev = session(fake, "dev")
    for verb in (lambda: keys.list_keys(dev), lambda: keys.add(dev, "mine", PUBKEY, admin=True),
                 lambda: keys.remove(dev, "admin")):
        with pytest.raises(PermissionDenied):
            verb()
    assert names(fake) == ["admin", "dev"]


@pytest.mark.parametrize("name,text,error", [
    ("../x", PUBKEY, UsageError),
    ("carol", "hello", UsageError),
    ("carol", "", UsageError),
    ("carol", None, UsageError),
    ("carol", PUBKEY + " " + "x" * 70_000, UsageError),
    ("dev", PUBKEY, GitdError),  # the name is taken
])
def test_bad_keys_change_nothing(fake, name, text, error):
    with pytest.raises(error):
        keys.add(session(fake), name, text, admin=True)
    assert names(fake) == ["admin", "dev"]
    assert not fake.store.get_key("dev").is_admin


def test_the_last_admin_key_stays(fake):
    with pytest.raises(GitdError, match="last admin key"):
        keys.remove(session(fake), "admin")
    assert names(fake) == ["admin", "dev"]

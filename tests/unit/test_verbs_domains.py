"""gitd.verbs.domains called directly: the data returned, access, and bad
input refused with nothing changed."""

import pytest

from gitd.core.errors import Conflict, GitdError, PermissionDenied, UsageError
from gitd.verbs import Session, domains
from tests.fakes import deployed


def session(fake, key="admin"):
    return Session(fake, fake.store.get_key(key))


def test_hosts_are_validated_lowercased_and_deduplicated():
    assert domains.parse_hosts(["Www.Example.com", "www.example.com.", "a.b"]) == \
        ["www.example.com", "a.b"]
    for bad in ("localhost", "-a.com", "a_b.com", "a..com", "exa mple.com"):
        with pytest.raises(UsageError):
            domains.parse_hosts([bad])


def test_add_and_remove_return_the_routes_and_whether_they_were_deployed(fake):
    s = session(fake)
    done = domains.add(s, "hello", ["Shop.example.com/api/"], strip_prefix=True)
    assert done == {"app": "hello", "changed": True, "deployed": False, "domains": [
        {"host": "hello.example.com", "path": "/", "strip_prefix": False,
         "url": "http://hello.example.com:8080"},
        {"host": "shop.example.com", "path": "/api", "strip_prefix": True,
         "url": "http://shop.example.com:8080/api"}]}
    assert domains.list_domains(s, "hello") == done["domains"]
    assert domains.add(s, "hello", ["shop.example.com/api"], strip_prefix=True)["changed"] is False
    deployed(fake.store)
    done = domains.remove(s, "hello", ["shop.example.com/api"])
    assert done["deployed"] is True and fake.pipeline.calls[-1][0] == "redeploy"
    assert [d["host"] for d in done["domains"]] == ["hello.example.com"]


def test_a_deployer_lists_granted_apps_only_and_changes_none(fake):
    dev = session(fake, "dev")
    with pytest.raises(PermissionDenied):
        domains.list_domains(dev, "hello")
    fake.store.grant("hello", "dev")
    assert [d["host"] for d in domains.list_domains(dev, "hello")] == ["hello.example.com"]
    for verb in (lambda: domains.add(dev, "hello", ["www.example.com"]),
                 lambda: domains.remove(dev, "hello", ["hello.example.com"])):
        with pytest.raises(PermissionDenied):
            verb()
    assert fake.store.domains("hello") == ["hello.example.com"]


@pytest.mark.parametrize("routes,error", [
    ([], "at least one"),
    (["*.example.com"], "wildcard"),
    (["good.example.com", "bad host"], "invalid"),
    (["good.example.com", "a.test/../b"], "invalid path prefix"),
    (["good.example.com", 7], "HOST or HOST/PATH"),
    (["taken.example.com"], "already used by app 'other'"),
])
def test_bad_routes_change_nothing(fake, routes, error):
    fake.store.create_app("other")
    fake.store.add_domains("other", ["taken.example.com"])
    with pytest.raises(GitdError, match=error):
        domains.add(session(fake), "hello", routes)
    assert fake.store.domains("hello") == ["hello.example.com"]
    assert fake.store.domains("other") == ["taken.example.com"]


def test_a_route_another_app_has_is_a_conflict(fake):
    fake.store.create_app("other")
    fake.store.add_domains("other", ["taken.example.com"])
    with pytest.raises(Conflict, match="already used by app 'other'"):
        domains.add(session(fake), "hello", ["taken.example.com"])
    assert fake.store.domains("hello") == ["hello.example.com"]

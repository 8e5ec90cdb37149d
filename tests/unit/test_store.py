import pytest

from gitd.core.errors import GitdError, NotFound
from gitd.core.store import Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "gitd.db")


def test_instance_id_is_kept(tmp_path):
    first = Store(tmp_path / "gitd.db").instance
    assert first == Store(tmp_path / "gitd.db").instance
    assert len(first) == 8


def test_apps_and_their_errors(store):
    store.create_app("hello")
    with pytest.raises(GitdError, match="already exists"):
        store.create_app("hello")
    with pytest.raises(NotFound, match="apps:create nope"):
        store.get_app("nope")
    assert [a.name for a in store.list_apps()] == ["hello"]


def test_releases_number_up_and_keep_their_snapshot(store):
    store.create_app("hello")
    r1 = store.new_release("hello", config={"A": "1"}, procfile={"web": "x"})
    r2 = store.new_release("hello", config={"A": "2"})
    assert (r1.version, r2.version) == (1, 2)
    store.update_release("hello", 1, status="succeeded", log="built\n")
    got = store.get_release("hello", 1)
    assert got.config == {"A": "1"} and got.procfile == {"web": "x"}
    assert got.status == "succeeded" and got.finished_at and got.log == "built\n"
    assert [r.version for r in store.interrupted_releases()] == [2]
    with pytest.raises(NotFound):
        store.get_release("hello", 9)


def test_deploy_numbers_are_never_reused(store):
    store.create_app("hello")
    assert [store.take_seq("hello") for _ in range(3)] == [1, 2, 3]
    assert Store(store.path).take_seq("hello") == 4


def test_keys_are_unique_by_name_and_fingerprint(store):
    store.add_key("admin", "SHA256:a", "ssh-ed25519 AAAA", True)
    with pytest.raises(GitdError, match="already exists"):
        store.add_key("admin", "SHA256:b", "ssh-ed25519 BBBB", False)
    with pytest.raises(GitdError, match="already registered"):
        store.add_key("other", "SHA256:a", "ssh-ed25519 AAAA", False)
    assert store.key_by_fingerprint("SHA256:a").name == "admin"
    assert store.key_by_fingerprint("SHA256:zz") is None


def test_domains_belong_to_one_app(store):
    store.create_app("a")
    store.create_app("b")
    store.add_domains("a", ["a.example.com"])
    with pytest.raises(GitdError, match="already used by app 'a'"):
        store.add_domains("b", ["a.example.com"])
    store.remove_domains("a", ["a.example.com"])
    assert store.domains("a") == []


def test_config_set_and_unset(store):
    store.create_app("a")
    store.set_config("a", {"X": "1", "Y": "two words"})
    store.set_config("a", {"X": "3"}, unset=["Y"])
    assert store.get_config("a") == {"X": "3"}


def test_delete_app_removes_its_rows(store):
    store.create_app("a")
    store.new_release("a")
    store.set_config("a", {"X": "1"})
    store.delete_app("a")
    assert store.releases("a") == [] and store.get_config("a") == {}

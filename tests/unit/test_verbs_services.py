"""The services verbs called directly: the data they return, admin keys
only, bad input refused with nothing changed."""

import pytest

from gitd.core.errors import Conflict, GitdError, NotFound, PermissionDenied, UsageError
from gitd.verbs import Session
from gitd.verbs import services as services_verbs
from tests.fakes import FakeServices, deployed


@pytest.fixture
def gitd(fake):  # noqa: F811 - the fixture imported above
    fake.services = FakeServices(fake.store)
    fake.store.create_service(name="db", kind="postgres", version="16", image="postgres:16",
                              password="p", volume="v-db")
    return fake


def session(gitd, key="admin"):
    return Session(gitd, gitd.store.get_key(key))


def test_create_returns_what_was_made_and_what_the_server_says(gitd):
    lines = []
    s = Session(gitd, gitd.store.get_key("admin"), sink=lines.append)
    made = services_verbs.create(s, "postgres", "shopdb", "16")
    assert made == {"name": "shopdb", "kind": "postgres", "image": "postgres:16", "version": "16",
                    "server_version": "16.4", "node": None, "node_defaulted": False,
                    "env_var": "DATABASE_URL"}
    assert lines == ["-----> Starting"]
    listed = {r["name"]: r for r in services_verbs.list_services(s)}
    assert listed["shopdb"] == {"name": "shopdb", "kind": "postgres", "version": "16",
                                "linked": [], "last_backup_ok": None, "node": None}


@pytest.mark.parametrize("args,error", [
    (("mysql", "x"), UsageError), (("postgres", "Bad Name"), UsageError),
    (("postgres", "x", "16; rm -rf /"), UsageError), (("postgres", "x", None, "vm"), GitdError),
    (("postgres", "db"), GitdError), (("postgres", "../db"), UsageError),
])
def test_bad_creates_are_refused_with_nothing_made(gitd, args, error):
    with pytest.raises(error):
        services_verbs.create(session(gitd), *args)
    assert gitd.services.calls == [] and [s.name for s in gitd.store.list_services()] == ["db"]


def test_every_services_verb_is_for_admins(gitd):
    dev = session(gitd, "dev")
    for verb, args in ((services_verbs.create, ("postgres", "x")), (services_verbs.list_services, ()),
                       (services_verbs.info, ("db",)), (services_verbs.expose, ("db", 0)),
                       (services_verbs.logs, ("db",)),
                       (lambda s, name: services_verbs.destroy(s, name, force=True), ("db",)),
                       (services_verbs.backup, ("db", print)), (services_verbs.restore, ("db", [b"x"])),
                       (services_verbs.backup_schedule, ("db", "0 3 * * *")),
                       (services_verbs.upgrade, ("db", "17")),
                       (services_verbs.link, ("db", "hello")),
                       (services_verbs.unlink, ("db", "hello"))):
        with pytest.raises(PermissionDenied):
            verb(dev, *args)
    with pytest.raises(PermissionDenied):
        with services_verbs.connect(dev, "db"):
            pass
    assert gitd.services.calls == [] and gitd.store.get_service("db").schedule is None


def test_backup_writes_the_dump_and_restore_reads_the_chunks(gitd):
    dump = []
    assert services_verbs.backup(session(gitd), "db", dump.append) == {"name": "db"}
    assert dump == [b"PGDMP"]
    services_verbs.restore(session(gitd), "db", iter([b"PG", b"DMP"]))
    assert gitd.services.calls[-1] == ("restore", "db", b"PGDMP")


@pytest.mark.parametrize("schedule,keep,message", [
    ("", 7, "name a schedule"), ("  ", 7, "name a schedule"), ("0 3 * * *", 0, "--keep"),
    ("0 3 * * *", 366, "--keep"), ("0 3 * * *", True, "--keep"), ("61 3 * * *", 7, None),
    ("0 3 * *", 7, None), ("* * * * * *", 7, None), ("0 3 * * *; reboot", 7, None),
])
def test_a_bad_backup_schedule_changes_nothing(gitd, schedule, keep, message):
    with pytest.raises(UsageError, match=message):
        services_verbs.backup_schedule(session(gitd), "db", schedule, keep)
    assert gitd.store.get_service("db").schedule is None


def test_a_backup_schedule_says_when_it_runs_next_and_none_turns_it_off(gitd):
    done = services_verbs.backup_schedule(session(gitd), "db", "0 3 * * *", 3)
    assert done["schedule"] == "0 3 * * *" and done["keep"] == 3
    assert done["next"].endswith("T03:00:00Z")
    assert services_verbs.backup_schedule(session(gitd), "db", None)["schedule"] is None
    assert gitd.store.get_service("db").schedule is None


@pytest.mark.parametrize("port", [80, 1023, 65536, "abc", "0", True, False, -1, 3.5, "1e4"])
def test_a_bad_port_to_expose_changes_nothing(gitd, port):
    with pytest.raises(UsageError):
        services_verbs.expose(session(gitd), "db", port)
    assert gitd.store.get_service("db").exposed_port is None and gitd.services.calls == []


@pytest.mark.parametrize("lines", [-1, 10_001, True, "5"])
def test_service_logs_refuse_bad_line_counts(gitd, lines):
    with pytest.raises(UsageError, match="-n must be"):
        services_verbs.logs(session(gitd), "db", lines)


def test_destroy_needs_force(gitd):
    with pytest.raises(GitdError, match="add --force"):
        services_verbs.destroy(session(gitd), "db", force=False)
    assert gitd.services.calls == []
    assert services_verbs.destroy(session(gitd), "db", force=True) == {"name": "db"}
    assert gitd.services.calls == [("destroy", "db")]


def test_link_and_unlink_change_the_config_and_say_what_it_did(gitd):
    made = services_verbs.link(session(gitd), "db", "hello")
    assert made == {"service": "db", "app": "hello", "env_var": "DATABASE_URL",
                    "config": {"app": "hello", "description": "Link db", "outcome": "stored",
                               "running": None}}
    assert gitd.store.get_config("hello") == {"DATABASE_URL": "postgres://u:p@db:5432/db"}
    assert gitd.store.links_of_app("hello") == {"db": "DATABASE_URL"}
    with pytest.raises(Conflict, match="already linked"):
        services_verbs.link(session(gitd), "db", "hello")
    gone = services_verbs.unlink(session(gitd), "db", "hello")
    assert gone["env_var"] == "DATABASE_URL" and gone["config"]["description"] == "Unlink db"
    assert gitd.store.get_config("hello") == {} and gitd.store.links_of_app("hello") == {}
    with pytest.raises(NotFound, match="not linked"):
        services_verbs.unlink(session(gitd), "db", "hello")


@pytest.mark.parametrize("name,app,error", [
    ("nosuch", "hello", NotFound), ("db", "nosuch", NotFound), ("../db", "hello", UsageError),
    ("db", "Hello", UsageError), ("db", "", UsageError),
])
def test_a_bad_link_changes_nothing(gitd, name, app, error):
    with pytest.raises(error):
        services_verbs.link(session(gitd), name, app)
    assert gitd.store.links_of_service("db") == {} and gitd.store.get_config("hello") == {}


def test_a_link_whose_release_fails_leaves_no_link_and_the_old_config(gitd):
    deployed(gitd.store, config={"A": "1"})
    gitd.pipeline.fail = True
    with pytest.raises(GitdError, match="left as it was"):
        services_verbs.link(session(gitd), "db", "hello")
    assert gitd.store.links_of_service("db") == {} and gitd.store.get_config("hello") == {"A": "1"}

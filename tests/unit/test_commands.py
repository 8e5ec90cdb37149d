"""The admin commands without services: parsing, validation, access, and the
store side of config/domains/scale changes (with a pipeline that records)."""

import json

import pytest

from gitd import commands
from gitd.commands import config as config_cmd
from gitd.commands import ps, run
from gitd.core.config import Settings
from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.keys import parse_public_key
from hooks import dynos
from hooks.scheduler import DockerScheduler
from tests.fakes import PUBKEY, call, deployed

# config

def test_config_pairs_keep_spaces_quotes_equals_and_read_stdin():
    values = config_cmd.parse_pairs(['MSG="a b"', "URL=x=y&z", "EMPTY=", "PEM=@-"],
                                lambda: "line 1\nline 2\n")
    assert values == {"MSG": '"a b"', "URL": "x=y&z", "EMPTY": "", "PEM": "line 1\nline 2"}


@pytest.mark.parametrize("pairs,message", [
    (["NOVALUE"], "expected KEY=VALUE"),
    (["1X=y"], "invalid config key"),
    (["A B=y"], "invalid config key"),
    (["GITD_APP=x"], "set by gitd"),
    (["DYNO=x"], "set by gitd"),
    (["A=@-", "B=@-"], "only one value"),
    (["A=x\0y"], "NUL"),
])
def test_bad_config_pairs(pairs, message):
    with pytest.raises(UsageError, match=message):
        config_cmd.parse_pairs(pairs, lambda: "v")


def test_config_before_the_first_deploy_is_only_stored(fake):
    status, out, _ = call(fake, "config:set", "hello", "A=1", "B=two words")
    assert status == 0 and "the first push uses it" in out
    assert fake.store.get_config("hello") == {"A": "1", "B": "two words"}
    assert fake.pipeline.calls == []
    assert json.loads(call(fake, "config", "hello", "--json")[1]) == {"A": "1", "B": "two words"}
    assert call(fake, "config", "hello", "--shell")[1] == "A=1\nB='two words'\n"
    assert call(fake, "config:get", "hello", "B")[1] == "two words\n"
    with pytest.raises(NotFound):
        call(fake, "config:get", "hello", "NOPE")


def test_config_set_releases_the_merged_config(fake):
    base = deployed(fake.store, config={"A": "1"})
    call(fake, "config:set", "hello", "B=2", stdin=b"")
    assert fake.pipeline.calls == [("release", "hello", base.version, {"A": "1", "B": "2"},
                                    "config", "Set B")]
    call(fake, "config:unset", "hello", "A")
    assert fake.pipeline.calls[-1][3] == {"B": "2"}
    assert fake.store.get_config("hello") == {"B": "2"}


def test_a_failed_config_deploy_puts_the_old_values_back(fake):
    deployed(fake.store)
    fake.store.set_config("hello", {"A": "1"})
    fake.pipeline.fail = True
    with pytest.raises(GitdError, match="left as it was"):
        call(fake, "config:set", "hello", "A=2", "B=3")
    assert fake.store.get_config("hello") == {"A": "1"}


def test_no_restart_stores_without_deploying_and_unset_of_missing_changes_nothing(fake):
    deployed(fake.store)
    status, out, _ = call(fake, "config:set", "hello", "A=1", "--no-restart")
    assert status == 0 and "ps:restart hello" in out
    assert fake.pipeline.calls == [] and fake.store.get_config("hello") == {"A": "1"}
    _, _, err = call(fake, "config", "hello")
    assert "runs with other values" in err
    with pytest.raises(NotFound, match="NOPE"):
        call(fake, "config:unset", "hello", "A", "NOPE")
    assert fake.store.get_config("hello") == {"A": "1"}


def test_config_is_for_admins_only(fake):
    fake.store.grant("hello", "dev")
    for argv in (["config", "hello"], ["config:get", "hello", "A"], ["config:set", "hello", "A=1"],
                 ["run", "hello", "--", "env"]):
        with pytest.raises(PermissionDenied):
            call(fake, *argv, key="dev")


# domains

def test_domains_change_and_redeploy(fake):
    fake.store.create_app("other")
    fake.store.add_domains("other", ["taken.example.com"])
    call(fake, "domains:add", "hello", "www.example.com")
    assert fake.store.domains("hello") == ["hello.example.com", "www.example.com"]
    assert fake.pipeline.calls == []  # not deployed: stored only
    with pytest.raises(GitdError, match="already used by app 'other'"):
        call(fake, "domains:add", "hello", "new.example.com", "taken.example.com")
    with pytest.raises(NotFound):
        call(fake, "domains:remove", "hello", "nope.example.com")
    assert fake.store.domains("hello") == ["hello.example.com", "www.example.com"]
    deployed(fake.store)
    call(fake, "domains:remove", "hello", "hello.example.com")
    assert fake.pipeline.calls[-1][0] == "redeploy"
    out = call(fake, "domains", "hello")[1]
    assert "http://www.example.com:8080" in out


def test_a_failed_domain_redeploy_undoes_the_change(fake):
    deployed(fake.store)
    fake.pipeline.fail = True
    with pytest.raises(GitdError, match="left as they were"):
        call(fake, "domains:add", "hello", "www.example.com")
    with pytest.raises(GitdError):
        call(fake, "domains:remove", "hello", "hello.example.com")
    assert fake.store.domains("hello") == ["hello.example.com"]


def test_path_routes_from_the_command_line(fake):
    from gitd.core.store import HostRoute
    fake.store.create_app("other")
    fake.store.add_domains("other", ["shop.example.com"])
    call(fake, "domains:add", "hello", "shop.example.com/api/", "--strip-prefix")
    assert fake.store.routes_of_host("shop.example.com") == {"/": "other", "/api": "hello"}
    with pytest.raises(GitdError, match="already used by app 'other'"):
        call(fake, "domains:add", "hello", "shop.example.com")
    with pytest.raises(UsageError, match="invalid path prefix"):
        call(fake, "domains:add", "hello", "shop.example.com/a/../b")
    deployed(fake.store)
    fake.pipeline.fail = True
    with pytest.raises(GitdError, match="left as they were"):  # strip changed, then undone
        call(fake, "domains:add", "hello", "shop.example.com/api")
    with pytest.raises(GitdError, match="left as they were"):
        call(fake, "domains:remove", "hello", "shop.example.com/api")
    assert HostRoute("shop.example.com", "/api", True) in fake.store.routes("hello")
    fake.pipeline.fail = False
    out = call(fake, "domains", "hello")[1]
    assert "http://shop.example.com:8080/api  (prefix stripped)" in out
    call(fake, "domains:remove", "hello", "shop.example.com/api")
    assert fake.store.routes_of_host("shop.example.com") == {"/": "other"}


# ps

def test_scale_is_checked_against_the_procfile(store):
    from gitd.verbs import ps as ps_verbs

    def parse_scale(pairs, release):
        return ps_verbs.check_scale(ps.scale_pairs(pairs), release)

    release = deployed(store, procfile={"web": "w", "worker": "k", "release": "migrate"})
    assert parse_scale(["web=2", "worker=0"], release) == {"web": 2, "worker": 0}
    assert ps_verbs.formation({}, release) == {"web": 1, "worker": 0}
    with pytest.raises(NotFound, match="no process type 'clock'"):
        parse_scale(["clock=1"], release)
    for pairs, message in ((["release=1"], "once per release"),
                           (["web=21"], "0 to 20"), (["web=-1"], "0 to 20"), (["web"], "TYPE=COUNT"),
                           (["Web=1"], "invalid process type")):
        with pytest.raises(UsageError, match=message):
            parse_scale(pairs, release)
    assert parse_scale(["web=3"], None) == {"web": 3}
    with pytest.raises(NotFound, match="not deployed"):
        parse_scale(["worker=1"], None)


def test_scale_redeploys_and_a_failure_keeps_the_old_scale(fake):
    deployed(fake.store, procfile={"worker": "k"})
    call(fake, "ps:scale", "hello", "worker=2")
    assert fake.store.get_app("hello").scale == {"worker": 2}
    assert fake.pipeline.calls[-1][0] == "redeploy"
    fake.pipeline.fail = True
    with pytest.raises(GitdError, match="left as it was"):
        call(fake, "ps:scale", "hello", "web=3")
    assert fake.store.get_app("hello").scale == {"worker": 2}
    assert json.loads(call(fake, "ps:scale", "hello", "--json")[1]) == {"web": 1, "worker": 2}


def test_restart_applies_config_stored_with_no_restart(fake):
    deployed(fake.store, config={"A": "1"})
    call(fake, "ps:restart", "hello")
    assert fake.pipeline.calls[-1] == ("redeploy", "hello", "Restarting")
    fake.store.set_config("hello", {"A": "2"})
    call(fake, "ps:restart", "hello")
    assert fake.pipeline.calls[-1][0] == "release" and fake.pipeline.calls[-1][3] == {"A": "2"}


def test_dyno_names_come_from_container_names():
    class C:
        name = "gitd-t1234567.hello.web.2.s14"
    assert dynos.dyno(C) == "web.2"
    assert ps.formation_text({"web": 2, "worker": 1}) == "web=2 worker=1"


# releases

def test_rollback_takes_the_old_config(fake):
    deployed(fake.store, config={"A": "old"})
    deployed(fake.store, config={"A": "new"})
    fake.store.set_config("hello", {"A": "new"})
    call(fake, "releases:rollback", "hello", "v1")
    assert fake.pipeline.calls == [("release", "hello", 1, {"A": "old"}, "rollback", "Rollback to v1")]
    assert fake.store.get_config("hello") == {"A": "old"}
    with pytest.raises(UsageError, match="invalid release"):
        call(fake, "releases:rollback", "hello", "latest")


def test_releases_listing_and_info(fake):
    deployed(fake.store, procfile={"web": "serve"}, config={"SECRET": "s3cret"})
    rows = json.loads(call(fake, "releases", "hello", "--json")[1])
    assert [(r["version"], r["current"], r["status"]) for r in rows] == [(1, True, "succeeded")]
    _, out, _ = call(fake, "releases:info", "hello", "v1")
    assert "SECRET" in out and "s3cret" not in out and "--- log" in out


# run

def test_run_arguments():
    assert run.parse_run(["hello", "--", "ls", "-l"]) == ("hello", ["ls", "-l"], "")
    assert run.parse_run(["hello", "env"]) == ("hello", ["env"], "")
    assert run.parse_run(["hello", "--", "--", "x"]) == ("hello", ["--", "x"], "")
    assert run.parse_run(["hello", "--service", "backend", "--", "env"]) == ("hello", ["env"], "backend")
    assert run.parse_run(["hello", "--service=api", "env"]) == ("hello", ["env"], "api")
    assert run.parse_run(["hello", "--", "--service", "x"]) == ("hello", ["--service", "x"], "")
    for argv in ([], ["hello"], ["hello", "--"], ["hello", "--service"], ["hello", "--service", "b"],
                 ["hello", "--service", "../x", "ls"], ["hello", "--service=", "ls"]):
        with pytest.raises(UsageError):
            run.parse_run(argv)
    with pytest.raises(UsageError, match="invalid app name"):
        run.parse_run(["Bad", "ls"])


def test_oneoff_spec(store, tmp_path):
    from gitd.verbs import run as run_verbs

    release = deployed(store, config={"A": "1", "PORT": "8000"})
    spec = run_verbs.oneoff_spec(Settings(data_dir=tmp_path, instance="i1"), release, ["env"], True, "ab12cd")
    assert spec["name"] == "gitd-i1.hello.run.ab12cd"
    assert spec["labels"]["gitd.role"] == "oneoff" and spec["labels"]["gitd.app"] == "hello"
    assert spec["environment"]["A"] == "1" and spec["environment"]["PORT"] == "8000"
    assert spec["environment"]["DYNO"] == "run.ab12cd"
    assert spec["tty"] is True and spec["stdin_open"] is True and spec["command"] == ["env"]


def test_oneoff_spec_of_a_service(store, tmp_path):
    from gitd.verbs import run as run_verbs

    release = deployed(store, config={"A": "1"})
    release.components = {"backend": {"image_id": "sha256:b", "port": 8080},
                          "frontend": {"image_id": "sha256:f", "port": 3000}}
    settings = Settings(data_dir=tmp_path, instance="i1")
    spec = run_verbs.oneoff_spec(settings, release, ["env"], False, "ab12cd", service="backend")
    assert spec["image"] == "sha256:b" and spec["labels"]["gitd.component"] == "backend"
    assert spec["environment"]["PORT"] == "8080"
    assert spec["environment"]["FRONTEND_URL"] == "http://frontend:3000"
    with pytest.raises(UsageError, match="name one with --service"):
        run_verbs.oneoff_spec(settings, release, ["env"], False, "ab12cd")
    with pytest.raises(UsageError, match="no service 'db'"):
        run_verbs.oneoff_spec(settings, release, ["env"], False, "ab12cd", service="db")


def test_scale_names_services(store):
    from gitd.verbs import ps as ps_verbs

    release = deployed(store)
    release.components = {"backend": {"procfile": {"web": "w", "worker": "k", "release": "m"}},
                          "frontend": {"procfile": {}}}
    assert ps_verbs.process_types(release) == ["backend.web", "backend.worker", "frontend.web"]
    assert ps_verbs.formation({"backend.web": 2}, release) == {
        "backend.web": 2, "backend.worker": 0, "frontend.web": 1}
    assert ps_verbs.check_scale(ps.scale_pairs(["backend.web=2", "backend.worker=1"]), release) == {
        "backend.web": 2, "backend.worker": 1}
    for bad in ("web=2", "backend.release=1", "db.web=1", "Back.web=1", "backend.web=-1", "..web=1"):
        with pytest.raises((UsageError, NotFound)):
            ps_verbs.check_scale(ps.scale_pairs([bad]), release)


# logs

def test_log_stamps_sort_by_time_and_merge():
    assert dynos.sortable("2024-01-01T00:00:05.1Z") > dynos.sortable("2024-01-01T00:00:05.09Z")

    class C:
        def __init__(self, name, raw):
            self.name, self.raw = name, raw

        def logs(self, **kwargs):
            return self.raw

    web = C("gitd-i.a.web.1.s1", b"2024-01-01T00:00:01.5Z one\n2024-01-01T00:00:03Z three\n")
    worker = C("gitd-i.a.worker.1.s1", b"2024-01-01T00:00:02Z two\n")
    docker = DockerScheduler(None, Settings())
    assert docker.log_lines([worker, web], 100) == ["web.1 | one", "worker.1 | two", "web.1 | three"]
    assert docker.log_lines([web, worker], 1) == ["web.1 | three"]
    assert docker.log_lines([web, worker], 0) == []


def test_logs_arguments_are_checked(fake):
    with pytest.raises(UsageError, match="-n must be"):
        call(fake, "logs", "hello", "-n", "99999")
    with pytest.raises(UsageError, match="invalid process type"):
        call(fake, "logs", "hello", "--type", "Web!")


# keys and access

def test_keys_add_list_remove(fake):
    _, out, _ = call(fake, "keys:add", "carol", stdin=PUBKEY.encode())
    assert "deployer key carol" in out
    with pytest.raises(GitdError, match="already registered"):
        call(fake, "keys:add", "carol2", stdin=PUBKEY.encode())
    with pytest.raises(UsageError, match="not an SSH public key"):
        call(fake, "keys:add", "dave", stdin=b"hello")
    call(fake, "apps:grant", "hello", "carol")
    listed = {k["name"]: k for k in json.loads(call(fake, "keys", "--json")[1])}
    assert listed["carol"]["apps"] == ["hello"] and listed["admin"]["apps"] == "all"
    assert listed["carol"]["fingerprint"] == parse_public_key(PUBKEY)[1]
    call(fake, "apps:revoke", "hello", "carol")
    with pytest.raises(NotFound):
        call(fake, "apps:revoke", "hello", "carol")
    call(fake, "keys:remove", "carol")
    with pytest.raises(NotFound):
        call(fake, "keys:remove", "carol")
    with pytest.raises(GitdError, match="last admin key"):
        call(fake, "keys:remove", "admin")
    with pytest.raises(NotFound):
        call(fake, "apps:grant", "hello", "nobody")


def test_deployer_keys_read_granted_apps_only(fake):
    deployed(fake.store)
    with pytest.raises(PermissionDenied):
        call(fake, "domains", "hello", key="dev")
    fake.store.grant("hello", "dev")
    assert call(fake, "domains", "hello", key="dev")[0] == 0
    assert call(fake, "releases", "hello", key="dev")[0] == 0
    for argv in (["domains:add", "hello", "x.example.com"], ["ps:scale", "hello", "web=2"],
                 ["releases:rollback", "hello"], ["keys"], ["keys:remove", "admin"],
                 ["apps:grant", "hello", "dev"], ["config:set", "hello", "A=1"]):
        with pytest.raises(PermissionDenied):
            call(fake, *argv, key="dev")
    assert fake.store.get_config("hello") == {} and fake.pipeline.calls == []


def test_unknown_app_is_not_found(fake):
    for argv in (["config", "nope"], ["domains", "nope"], ["releases", "nope"],
                 ["config:set", "nope", "A=1"]):
        with pytest.raises(NotFound, match="apps:create nope"):
            call(fake, *argv)


# help

def test_every_command_has_usage_summary_and_help(fake):
    commands._load_modules()
    for name, cmd in commands.COMMANDS.items():
        assert cmd.usage.split()[0] == name and cmd.summary
        _, out, _ = call(fake, name, "--help")
        assert out.startswith(f"usage: {cmd.usage}\n")
    assert sorted(n for n, c in commands.COMMANDS.items() if c.pty) == ["run", "services:connect"]


def test_help_for_a_namespace_and_a_command(fake):
    _, out, _ = call(fake, "help", "config")
    assert "config:set APP KEY=VALUE" in out and "config:unset" in out
    _, out, _ = call(fake, "help", "config:set")
    assert "KEY=@-" in out
    _, out, _ = call(fake, "help", "logs")
    assert out.startswith("usage: logs APP")
    _, out, _ = call(fake, "help", key="dev")
    assert "logs APP" in out and "config:set" not in out
    with pytest.raises(UsageError, match="unexpected|unrecognized"):
        call(fake, "config:set", "hello", "A=1", "--bogus")


def test_a_bad_option_value_is_a_usage_error(fake):
    with pytest.raises(UsageError, match="invalid int value"):
        call(fake, "logs", "hello", "-n", "lots")

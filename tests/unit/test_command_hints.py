"""What commands say when the user is one step off: a typo, a wildcard
domain, a shell script split by ssh, services an app leaves behind, the
server's name in a git URL (issue #29, the smaller items)."""

from pathlib import Path

import pytest

from gitd.commands import run
from gitd.verbs import domains
from gitd.core.config import Settings
from gitd.core.errors import UsageError
from hooks.specs import app_network
from tests.fakes import FakeGitd, call

README = Path(__file__).resolve().parents[2] / "README.md"


def test_an_unknown_command_suggests_the_closest(fake):
    with pytest.raises(UsageError, match=r"unknown command 'apps:destory'; did you mean apps:destroy\?"):
        call(fake, "apps:destory")
    with pytest.raises(UsageError, match=r"did you mean config:set\?"):
        call(fake, "confg:set")
    with pytest.raises(UsageError) as nothing_close:
        call(fake, "xyzzy")
    assert "did you mean" not in nothing_close.value.message
    # a deployer key is offered only what it may run
    with pytest.raises(UsageError) as for_deployer:
        call(fake, "config:sett", key="dev")
    assert "did you mean" not in for_deployer.value.message
    with pytest.raises(UsageError, match=r"did you mean apps:list\?"):
        call(fake, "apps:lst", key="dev")
    with pytest.raises(UsageError, match="unknown command"):
        call(fake, "apps:" + "x" * 100_000)


@pytest.mark.parametrize("text", ["*.x.test", "*.x.test/api", "a.*.test", "*"])
def test_a_wildcard_domain_says_why_it_is_refused(text):
    with pytest.raises(UsageError, match="wildcard domains are not routed") as refused:
        domains.parse_routes([text])
    assert "DNS-01" in refused.value.message and "domains:add APP a.example.com" in refused.value.message


def test_a_wildcard_domain_changes_nothing(fake):
    with pytest.raises(UsageError, match="DNS-01"):
        call(fake, "domains:add", "hello", "ok.example.com", "*.example.com")
    assert fake.store.domains("hello") == ["hello.example.com"]
    assert fake.pipeline.calls == []


@pytest.mark.parametrize("argv", [
    ["sh", "-c", "echo", "a", "b"],
    ["/bin/bash", "-lc", "ls", "-l"],
    ["ash", "-ec", "touch", "/app/x"],
])
def test_a_shell_script_split_by_ssh_is_refused_with_the_quoting(argv):
    with pytest.raises(UsageError, match="quote the script once more") as refused:
        run.parse_run(["hello", "--", *argv])
    words = " ".join(argv[2:])
    assert f"\"'{words}'\"" in refused.value.message


@pytest.mark.parametrize("argv", [
    ["sh", "-c", "echo a b"],                # quoted as the help says
    ["sh", "-c", "echo $1", "_", "value"],   # positional parameters, on purpose
    ["sh", "-c", "env"],
    ["sh", "script.sh", "a", "b"],
    ["python3", "-c", "print", "x"],
    ["sh"],
])
def test_shell_commands_that_arrived_whole_run(argv):
    assert run.parse_run(["hello", *argv]) == ("hello", argv, "")


class DestroyingGitd(FakeGitd):
    def destroy_app(self, name, out):
        self.store.delete_app(name)


def test_apps_destroy_says_which_services_keep_running(store, tmp_path):
    gitd = DestroyingGitd(store, Settings(data_dir=tmp_path, instance="t1234567"))
    store.create_app("other")
    for name, kind in (("shopdb", "postgres"), ("cache", "redis")):
        store.create_service(name=name, kind=kind, version="1", image="i", password="p",
                             volume="v")
    store.add_link("shopdb", "hello", "DATABASE_URL")
    store.add_link("cache", "hello", "REDIS_URL")
    store.add_link("cache", "other", "REDIS_URL")
    _, out, _ = call(gitd, "apps:destroy", "hello", "--force")
    assert "Destroyed hello" in out
    assert "Unlinked, still running with their data:" in out
    assert "  shopdb\n" in out and "  cache; still linked to other\n" in out
    assert "services:destroy NAME --force" in out

    _, out, _ = call(gitd, "apps:destroy", "other", "--force")
    assert "  cache\n" in out and "shopdb" not in out
    store.create_app("lonely")
    _, out, _ = call(gitd, "apps:destroy", "lonely", "--force")
    assert "still running" not in out


def test_apps_create_gives_the_host_gitd_knows(store, tmp_path):
    named = FakeGitd(store, Settings(data_dir=tmp_path, domain="apps.example.com", ssh_port=2200))
    named.create_app = store.create_app
    _, out, _ = call(named, "apps:create", "shop")
    assert "git remote add paas ssh://git@apps.example.com:2200/shop\n" in out
    assert "HOST" not in out

    local = FakeGitd(store, Settings(data_dir=tmp_path))  # domain: localhost
    local.create_app = store.create_app
    _, out, _ = call(local, "apps:create", "shop2")
    assert "ssh://git@HOST:2222/shop2" in out
    assert "HOST: this server's name or address" in out


def test_the_readme_names_the_networks_gitd_makes():
    text = README.read_text()
    assert app_network("<instance>", "<app>") in text

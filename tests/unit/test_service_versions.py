"""What version a service runs: the server's own word, and upgrades an
image setting cannot perform refused before anything is touched."""

from types import SimpleNamespace

import pytest

from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.services import kind
from gitd.services.base import version_matches
from gitd.services.lifecycle import Services


def test_a_version_asked_matches_what_the_server_says():
    assert version_matches("15", "15.18") and version_matches("15.4", "15.4.2")
    assert version_matches("7", "7.0.15") and version_matches("15.18", "15.18")
    assert not version_matches("16", "15.18") and not version_matches("1", "15.18")
    assert not version_matches("15.4", "15.18")


def test_the_servers_say_their_version():
    assert kind("postgres").parse_version("15.18 (Debian 15.18-0+deb12u1)\n") == "15.18"
    assert kind("redis").parse_version(
        "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n") == "7.0.15"
    assert kind("postgres").parse_version("psql: error: connection refused") is None
    assert kind("redis").parse_version("NOAUTH Authentication required.") is None


def test_only_an_image_named_with_its_version_can_change_version():
    pg = kind("postgres")
    assert pg.versioned({}) and pg.versioned({"postgres": "mirror/pg:{version}"})
    assert not pg.versioned({"postgres": "gitd-ci/postgres:latest"})


class Untouchable:
    def __getattr__(self, name):
        raise AssertionError(f"the refused upgrade touched {name}")


def test_an_upgrade_the_image_cannot_perform_is_refused_with_nothing_done(tmp_path):
    settings = Settings(data_dir=tmp_path, instance="abcd1234",
                        service_images={"postgres": "gitd-ci/postgres:latest"})
    services = Services(SimpleNamespace(settings=settings, engine=Untouchable(),
                                        store=Untouchable()))
    db = SimpleNamespace(name="shopdb", kind="postgres", version="16",
                         image="gitd-ci/postgres:latest", volume="v")
    with pytest.raises(GitdError, match=r"shopdb cannot move to postgres 17: its image "
                                        r"\(gitd-ci/postgres:latest.*has no \{version\}.*"
                                        r"nothing changed"):
        services.upgrade(db, "17", print)
    assert not (tmp_path / "backups").exists()

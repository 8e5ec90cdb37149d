"""gitd.verbs.buildpacks called directly: the data returned, access, and bad
settings refused with nothing changed."""

import pytest

from gitd import gitserve
from gitd.core.errors import PermissionDenied, UsageError
from gitd.verbs import Session, buildpacks


def session(fake, key="admin"):
    return Session(fake, fake.store.get_key(key))


def settings(fake):
    return fake.store.get_app("hello").settings


def test_set_unset_clear_return_the_settings(fake):
    s = session(fake)
    assert buildpacks.set_settings(s, "hello", "nix", build_dir="./api/", attr="img") == {
        "app": "hello", "buildpack": "nix", "build_dir": "api",
        "options": {"image_attr": "img"}, "cleared": False}
    done = buildpacks.set_settings(s, "hello", package="pkg")
    assert done["options"] == {"package_attr": "pkg"} and done["buildpack"] == "nix"
    assert buildpacks.set_settings(s, "hello", build_dir=".")["build_dir"] == ""
    done = buildpacks.unset(s, "hello", ["package"])
    assert (done["buildpack"], done["options"], done["cleared"]) == ("nix", {}, False)
    assert buildpacks.unset(s, "hello")["cleared"] is True
    assert settings(fake) == {}


def test_show_and_dockerfile_before_any_push(fake):
    gitserve.create_repo(fake.settings.repos_dir, "hello")
    s = session(fake)
    data = buildpacks.show(s, "hello")
    assert (data["app"], data["reason"], data["commit"], data["selected"]) == \
        ("hello", "no push yet", None, None)
    buildpacks.set_settings(s, "hello", "python")
    assert buildpacks.show(s, "hello")["selected"] == "python"
    with pytest.raises(UsageError, match="no push yet"):
        buildpacks.dockerfile(s, "hello")


def test_a_deployer_reads_granted_apps_only_and_sets_nothing(fake):
    gitserve.create_repo(fake.settings.repos_dir, "hello")
    dev = session(fake, "dev")
    for verb in (lambda: buildpacks.show(dev, "hello"), lambda: buildpacks.dockerfile(dev, "hello")):
        with pytest.raises(PermissionDenied):
            verb()
    fake.store.grant("hello", "dev")
    assert buildpacks.show(dev, "hello")["app"] == "hello"
    for verb in (lambda: buildpacks.set_settings(dev, "hello", "nix"),
                 lambda: buildpacks.unset(dev, "hello", ["dir"]),
                 lambda: buildpacks.clear(dev, "hello")):
        with pytest.raises(PermissionDenied):
            verb()
    assert settings(fake) == {}


@pytest.mark.parametrize("kwargs,error", [
    ({}, "nothing to set"),
    ({"buildpack": "cobol"}, "unknown buildpack"),
    ({"buildpack": "nix", "build_dir": "../up"}, "invalid build directory"),
    ({"buildpack": "nix", "build_dir": "a/../b"}, "invalid build directory"),
    ({"buildpack": "nix", "attr": "a.b"}, "invalid --attr"),
    ({"buildpack": "nix", "attr": "x", "package": "y"}, "exclude each other"),
    ({"package": "-rf"}, "invalid --package"),
    ({"build_dir": 5}, "--dir must be text"),
    ({"buildpack": "nix", "attr": ["x"]}, "--attr must be text"),
])
def test_bad_settings_change_nothing(fake, kwargs, error):
    buildpacks.set_settings(session(fake), "hello", "dockerfile", build_dir="web")
    before = settings(fake)
    with pytest.raises(UsageError, match=error):
        buildpacks.set_settings(session(fake), "hello", **kwargs)
    with pytest.raises(UsageError, match="cannot unset"):
        buildpacks.unset(session(fake), "hello", ["dir", "everything"])
    assert settings(fake) == before

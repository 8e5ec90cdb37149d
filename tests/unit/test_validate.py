import pytest

from gitd.core import validate
from gitd.core.errors import UsageError


@pytest.mark.parametrize("name", ["hello", "a", "my-app-2", "x" * 30])
def test_good_app_names(name):
    assert validate.app_name(name) == name


@pytest.mark.parametrize("name", ["", "Hello", "1app", "-app", "app-", "a_b", "a.b",
                                  "x" * 31, "../etc", "a/b", "app\n", "app "])
def test_bad_app_names(name):
    with pytest.raises(UsageError):
        validate.app_name(name)
    with pytest.raises(UsageError):
        validate.plain_app_name(name)


def test_a_preview_s_name_is_an_app_name_but_not_one_apps_create_takes():
    assert validate.app_name("a--b") == "a--b"
    assert validate.app_name("hello--feature-x-2") == "hello--feature-x-2"
    assert validate.app_name("a--" + "b" * 60) == "a--" + "b" * 60  # 63: one DNS label
    for name in ("a--b", "a--" + "b" * 61, "a---b", "a--b--c", "a--b-", "a--", "--b",
                 "A--b", "1a--b", "a--B", "a--b.c", "a--b/c"):
        with pytest.raises(UsageError):
            validate.plain_app_name(name)
        if name != "a--b":
            with pytest.raises(UsageError):
                validate.app_name(name)
    with pytest.raises(UsageError, match="preview app"):
        validate.repo_path_to_app("/a--b.git")


@pytest.mark.parametrize("path", ["hello", "hello.git", "/hello", "/hello.git"])
def test_repo_paths(path):
    assert validate.repo_path_to_app(path) == "hello"


@pytest.mark.parametrize("path", ["../hello", "/srv/hello.git", "hello.git.git", "~/hello", "//hello"])
def test_repo_paths_refused(path):
    with pytest.raises(UsageError):
        validate.repo_path_to_app(path)


def test_config_pairs_keep_everything_after_the_first_equals():
    assert validate.config_pair("A=b=c") == ("A", "b=c")
    assert validate.config_pair("URL=") == ("URL", "")
    assert validate.config_pair("MSG=two words\nand 'quotes'") == ("MSG", "two words\nand 'quotes'")
    for bad in ("NOEQUALS", "=x", "1A=x", "A-B=x"):
        with pytest.raises(UsageError):
            validate.config_pair(bad)


def test_hostnames():
    assert validate.hostname("Www.Example.COM.") == "www.example.com"
    for bad in ("localhost", "-a.com", "a..com", "a b.com", "a.com/x", "*.a.com"):
        with pytest.raises(UsageError):
            validate.hostname(bad)


def test_release_versions():
    assert validate.release_version("v3") == 3
    assert validate.release_version("12") == 12
    for bad in ("v0", "x", "v-1", ""):
        with pytest.raises(UsageError):
            validate.release_version(bad)

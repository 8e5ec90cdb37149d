"""Path routes (issue #13): validation, ownership per (host, prefix), the
Traefik rules and priorities they become, and the migration of old domains."""

import sqlite3

import pytest

from gitd.core import validate
from gitd.verbs import domains
from gitd.core.errors import GitdError, NotFound, UsageError
from gitd.core.store import HostRoute, Store
from hooks import router


def test_hosts_with_prefixes_are_parsed_and_normalised():
    assert validate.host_and_path("Example.COM") == ("example.com", "/")
    assert validate.host_and_path("example.com/") == ("example.com", "/")
    assert validate.host_and_path("example.com/api/") == ("example.com", "/api")
    assert validate.host_and_path("example.com/v1/Users_x-y.z~") == ("example.com", "/v1/Users_x-y.z~")
    assert domains.parse_routes(["a.test/api", "A.test/api/", "a.test"], strip_prefix=True) == [
        HostRoute("a.test", "/api", True), HostRoute("a.test", "/", False)]


@pytest.mark.parametrize("bad", [
    "a.test//api", "a.test/api//x", "a.test/..", "a.test/a/../b", "a.test/.", "a.test/a/./b",
    "a.test/a b", "a.test/a`)||Host(`evil.test", "a.test/%2e%2e", "a.test/a?x=1", "a.test/a#f",
    "a.test/a;b", "a.test/é", "a.test/a\\b", "a.test/a\nb", "a.test/" + "x" * 100,
    "a.test/a*", "a.test/{id}", "evil`.test/api", "/api", "a.test/a:b", "a.test/a@b",
])
def test_hostile_prefixes_are_refused(bad):
    with pytest.raises(UsageError):
        validate.host_and_path(bad)


def test_prefix_length_is_bounded_but_a_long_one_passes():
    assert validate.path_prefix("/" + "x" * 99) == "/" + "x" * 99
    with pytest.raises(UsageError):
        validate.path_prefix(None)


def test_a_prefix_matches_itself_and_below_not_a_longer_word():
    assert router.path_rule(["a.test"], "/") == "Host(`a.test`)"
    assert router.path_rule(["a.test"], "/api") == \
        "Host(`a.test`) && (Path(`/api`) || PathPrefix(`/api/`))"
    assert router.path_rule(["a.test", "b.test"], "/api") == \
        "(Host(`a.test`) || Host(`b.test`)) && (Path(`/api`) || PathPrefix(`/api/`))"


def test_longest_prefix_wins_across_apps_and_newer_deploys_within_a_prefix():
    # app "web" deployed many times at "/", app "api" once at "/api"
    assert router.priority(5000, "/") < router.priority(1, "/api")
    assert router.priority(1, "/api") < router.priority(1, "/api/v2")
    assert router.priority(7, "/api") < router.priority(8, "/api")
    assert router.priority(3, "/") == 1003  # what plain apps always had
    top = router.priority(10**12, "/" + "x" * 99)
    assert top < router.REDIRECT_PRIORITY
    assert router.priority(10**12, "/a") < router.priority(0, "/ab")


def test_labels_make_a_router_per_prefix_with_strip_middleware():
    paths = [HostRoute("a.test", "/"), HostRoute("a.test", "/api", True),
             HostRoute("b.test", "/api", True), HostRoute("a.test", "/docs")]
    labels = router.labels("web", 4, paths, 5000)
    rules = {k: v for k, v in labels.items() if k.endswith(".rule")}
    assert rules == {
        "traefik.http.routers.web-s4.rule": "Host(`a.test`)",
        "traefik.http.routers.web-s4-p1.rule":
            "(Host(`a.test`) || Host(`b.test`)) && (Path(`/api`) || PathPrefix(`/api/`))",
        "traefik.http.routers.web-s4-p2.rule": "Host(`a.test`) && (Path(`/docs`) || PathPrefix(`/docs/`))",
    }
    assert labels["traefik.http.routers.web-s4-p1.middlewares"] == "web-s4-p1-strip"
    assert labels["traefik.http.middlewares.web-s4-p1-strip.stripprefix.prefixes"] == "/api"
    assert "traefik.http.routers.web-s4-p2.middlewares" not in labels
    assert "traefik.http.routers.web-s4.middlewares" not in labels
    services = {v for k, v in labels.items() if k.endswith(".service")}
    assert services == {"web-s4"}  # one service, every router
    assert labels["traefik.http.routers.web-s4-p1.priority"] == str(router.priority(4, "/api"))


def test_a_prefix_only_app_still_has_the_plain_router_name_and_tls_routers():
    plan = router.TLSPlan(resolver="gitd", custom_hosts=frozenset({"b.test"}))
    planned = router.routes("api", 2, [HostRoute("a.test", "/api", True),
                                       HostRoute("b.test", "/api", True)], tls=plan)
    assert [(r.router, r.hosts, r.tls, r.path, r.strip_prefix) for r in planned] == [
        ("api-s2", ("a.test", "b.test"), False, "/api", True),
        ("api-s2-tls", ("a.test",), True, "/api", True),
        ("api-s2-tlsc", ("b.test",), True, "/api", True),
    ]
    labels = router.labels("api", 2, [HostRoute("a.test", "/api", True)], 5000, tls=plan)
    assert labels["traefik.http.routers.api-s2-tls.rule"] == \
        "Host(`a.test`) && (Path(`/api`) || PathPrefix(`/api/`))"
    assert labels["traefik.http.routers.api-s2-tls.middlewares"] == "api-s2-tls-strip"


def test_plain_hosts_keep_their_labels():
    assert router.labels("w", 1, ["a.test"], 5000) == router.labels("w", 1, [HostRoute("a.test")], 5000)


def test_two_apps_share_a_host_by_distinct_prefixes_only(tmp_path):
    store = Store(tmp_path / "gitd.db")
    for name in ("web", "api"):
        store.create_app(name)
    store.add_domains("web", ["shop.test"])
    store.add_routes("api", [HostRoute("shop.test", "/api", True)])
    with pytest.raises(GitdError, match="shop.test/api is already used by app 'api'"):
        store.add_routes("web", [HostRoute("shop.test", "/docs"), HostRoute("shop.test", "/api")])
    assert store.routes("web") == [HostRoute("shop.test")]  # nothing changed
    assert store.routes_of_host("shop.test") == {"/": "web", "/api": "api"}
    store.add_routes("api", [HostRoute("shop.test", "/api", False)])  # an update of its own
    assert store.routes("api") == [HostRoute("shop.test", "/api", False)]
    with pytest.raises(NotFound):
        store.remove_routes("web", [HostRoute("shop.test", "/api")])
    store.remove_routes("api", [HostRoute("shop.test", "/api")])
    assert store.domains("api") == []
    store.delete_app("web")
    assert store.routes_of_host("shop.test") == {}


def test_an_old_domains_table_becomes_routes_at_slash(tmp_path):
    path = tmp_path / "gitd.db"
    Store(path)
    conn = sqlite3.connect(path)  # as a gitd before path routes left it
    conn.execute("DROP TABLE routes")
    conn.execute("CREATE TABLE domains (host TEXT PRIMARY KEY, app TEXT)")
    conn.execute("INSERT INTO domains VALUES ('a.test', 'web'), ('b.test', 'web'), ('c.test', 'x')")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.routes("web") == [HostRoute("a.test"), HostRoute("b.test")]
    assert store.domains("x") == ["c.test"]
    assert "domains" not in store.db.table_names()
    assert Store(path).domains("web") == ["a.test", "b.test"]  # migrating twice is harmless


def test_the_port_of_a_deploys_labels_is_read_back_in_one_place():
    from gitd.core.store import HostRoute
    from hooks import router

    made = router.labels("hello_api", 3, [HostRoute("hello.test", "/", False)], 8080)
    assert router.labelled_port(made, "hello_api", 3) == 8080
    assert router.labelled_port(made, "hello_api", 2) is None  # another deploy's route
    assert router.labelled_port(router.labels("hello", 3, [], 8080), "hello", 3) is None  # not routed
    key = router.port_label("hello", 3)
    for hostile in ("", "-1", "0", "65536", "99999999999999999999", "80 ", "８０"):
        assert router.labelled_port({key: hostile}, "hello", 3) is None


def test_a_route_file_is_written_beside_the_watched_dir_and_moved_in(tmp_path, monkeypatch):
    """No temporary file ever shows in the dir Traefik watches (each is an
    event of its file provider, and the real change then waits out its
    throttle); the file is private, and a failed write leaves nothing."""
    import os

    import pytest

    from hooks import router

    watched = tmp_path / "tls" / "dynamic"
    watched.mkdir(parents=True)
    seen, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: seen.append(
        sorted(p.name for p in watched.iterdir())) or real_replace(src, dst))
    router.write_route_file(watched / "bridge-a-s1.yml", '{"http": {}}')
    assert seen == [[]]  # nothing in the watched dir before the move
    target = watched / "bridge-a-s1.yml"
    assert target.read_text() == '{"http": {}}' and target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["dynamic"]

    def refused(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OSError):
        router.write_route_file(watched / "bridge-a-s2.yml", "{}")
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["dynamic"]
    assert [p.name for p in watched.iterdir()] == ["bridge-a-s1.yml"]


def test_route_files_a_killed_gitd_was_staging_are_swept_at_start_and_nothing_else(tmp_path):
    from hooks import router

    tls = tmp_path / "tls"
    watched = tls / "dynamic"
    watched.mkdir(parents=True)
    left = [tls / ".bridge-a-s1.yml.k2j3h4.tmp", tls / ".certs.yml.abc.tmp"]
    kept = [tls / "acme.json", tls / ".acme.json.x.tmp", watched / "bridge-a-s1.yml",
            watched / ".bridge-b-s1.yml.q.tmp"]
    for path in left + kept:
        path.write_text("{}")
    outside = tmp_path / "elsewhere.yml"
    outside.write_text("mine")
    (tls / ".route-c-s1.yml.zz.tmp").symlink_to(outside)  # the link goes, never its target
    assert router.sweep_staged(watched) == 3
    assert sorted(p.name for p in tls.iterdir()) == [".acme.json.x.tmp", "acme.json", "dynamic"]
    assert all(p.exists() for p in kept) and outside.read_text() == "mine"
    assert router.sweep_staged(tmp_path / "none" / "dynamic") == 0

"""Maintenance mode (issue #25): the routes planned, the page, the verbs'
switch (with Traefik's API answered from the route files) and the page server."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from gitd.core.config import Settings
from gitd.core.errors import GitdError, PermissionDenied, UsageError
from gitd.core.store import HostRoute
from gitd.pages import PageServer
from hooks import maintenance, router
from tests.fakes import FakeGitd, call, deployed


def test_one_router_per_path_group_over_http_and_https_with_no_servers():
    config = maintenance.route_config(
        "shop", [HostRoute("shop.example.com"), HostRoute("www.shop.com"),
                 HostRoute("example.com", "/shop", strip_prefix=True)],
        entrypoint="web", tls_entrypoint="websecure")
    http = config["http"]
    assert sorted(http["routers"]) == ["gitd-maintenance_shop_p0", "gitd-maintenance_shop_p0_tls",
                                       "gitd-maintenance_shop_p1", "gitd-maintenance_shop_p1_tls"]
    root, prefixed = http["routers"]["gitd-maintenance_shop_p0"], http["routers"]["gitd-maintenance_shop_p1"]
    assert root["rule"] == "Host(`shop.example.com`) || Host(`www.shop.com`)"
    assert prefixed["rule"] == "Host(`example.com`) && (Path(`/shop`) || PathPrefix(`/shop/`))"
    assert http["routers"]["gitd-maintenance_shop_p1_tls"]["entryPoints"] == ["websecure"]
    assert http["routers"]["gitd-maintenance_shop_p1_tls"]["tls"] == {}
    assert "tls" not in root
    # the header outermost: it stays when the page takes the body
    assert root["middlewares"] == ["gitd-maintenance_shop_retry-after", "gitd-maintenance_shop_page"]
    assert http["services"] == {"gitd-maintenance_shop": {"loadBalancer": {"servers": []}}}
    assert all(r["service"] == "gitd-maintenance_shop" for r in http["routers"].values())
    page = http["middlewares"]["gitd-maintenance_shop_page"]["errors"]
    assert page == {"status": ["503"], "service": maintenance.PAGE_SERVICE, "query": "/shop"}
    headers = http["middlewares"]["gitd-maintenance_shop_retry-after"]["headers"]
    assert headers["customResponseHeaders"]["Retry-After"] == str(maintenance.RETRY_AFTER_SECONDS)


def test_no_routes_no_config_and_no_tls_routers_without_https():
    assert maintenance.route_config("shop", []) == {}
    config = maintenance.route_config("shop", ["shop.example.com"])
    assert maintenance.router_names(config) == ["gitd-maintenance_shop_p0"]


@pytest.mark.parametrize("path", ["/", "/a", "/api", "/" + "x" * 99])
def test_above_every_deploy_of_its_prefix_below_any_longer_prefix(path):
    top = maintenance.priority(path)
    for seq in (0, 1, 5000, 998_998, 998_999, 10**12):
        assert router.priority(seq, path) < top
    assert top < router.priority(0, path + "b")  # another app's longer prefix still wins
    assert top < router.REDIRECT_PRIORITY  # HTTP->HTTPS redirects and ACME go first
    assert router.priority(0, path) - 1 < top  # the fallback's 503 routes are below it


def test_no_app_name_makes_another_apps_router_names():
    one = maintenance.router_names(maintenance.route_config("a-p1", ["x.test"], tls_entrypoint="s"))
    two = maintenance.router_names(maintenance.route_config(
        "a", ["y.test", HostRoute("y.test", "/p")], tls_entrypoint="s"))
    assert not set(one) & set(two)


def test_message_is_bounded_plain_text():
    assert maintenance.check_message(None) == maintenance.DEFAULT_MESSAGE
    assert maintenance.check_message("  \n ") == maintenance.DEFAULT_MESSAGE
    assert maintenance.check_message(" back at 5\nsorry ") == "back at 5\nsorry"
    assert maintenance.check_message("x" * maintenance.MAX_MESSAGE) == "x" * maintenance.MAX_MESSAGE
    with pytest.raises(UsageError, match="at most 500"):
        maintenance.check_message("x" * (maintenance.MAX_MESSAGE + 1))
    for hostile in ("\x1b[31mred", "a\x00b", "right\u202eto left", "bell\x07", "c1\x95",
                    "lone \ud800 surrogate", "lone\rreturn", "windows\r\n"):
        with pytest.raises(UsageError, match="control characters"):
            maintenance.check_message(hostile)


@pytest.mark.parametrize("text", ["plain", "tab\tand\nlines", "é 😀 <b>&", "zero\u200bwidth",
                                  "\x1b[2J", "a\x00", "\x95", "\u202e", "\u2066", "x\r"])
def test_the_api_schema_pattern_accepts_exactly_what_the_check_does(text):
    import re
    try:
        maintenance.check_message(text)
        accepted = True
    except UsageError:
        accepted = False
    assert bool(re.search(maintenance.MESSAGE_PATTERN, text)) is accepted
    # a pattern Schemathesis can draw from (else it drops it and sends anything)
    from schemathesis.core.jsonschema.patterns import enforced_pattern
    assert enforced_pattern(maintenance.MESSAGE_PATTERN) is not None


def test_page_escapes_the_message_and_keeps_its_lines():
    page = maintenance.page_html("shop", '<script>alert("x")</script>\n& back "soon"')
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;<br>\n&amp; back &quot;soon&quot;" in page
    assert page.count("<p>") == 1


# --- the verbs, Traefik's API answered from the route files as its file provider reads them --


@pytest.fixture
def traefik(fake, monkeypatch):
    """Traefik's routers: those of the dynamic dir's files, unless `broken`."""
    state = {"broken": False}

    def router_status(api_url, name, provider="docker"):
        assert provider == "file"
        if state["broken"]:
            return "disabled"
        for path in fake.settings.dynamic_dir.glob("*.yml"):
            if name in (json.loads(path.read_text()).get("http") or {}).get("routers", {}):
                return "enabled"
        return None

    monkeypatch.setattr(router, "router_status", router_status)
    return state


def route_file(fake, app="hello"):
    return fake.settings.dynamic_dir / maintenance.route_file_name(app)


def test_on_then_off_writes_confirms_and_removes(fake, traefik):
    status, out, _ = call(fake, "maintenance:on", "hello", "--message", "Back at <b>5</b>")
    assert status == 0 and "hello is in maintenance" in out
    config = json.loads(route_file(fake).read_text())
    assert "hello.example.com" in config["http"]["routers"]["gitd-maintenance_hello_p0"]["rule"]
    state = fake.store.get_app("hello").settings["maintenance"]
    assert state["message"] == "Back at <b>5</b>" and state["since"] > 0
    _, out, _ = call(fake, "maintenance", "hello", "--json")
    shown = json.loads(out)
    assert shown["on"] is True and shown["message"] == "Back at <b>5</b>"
    status, out, _ = call(fake, "maintenance:off", "hello")
    assert status == 0 and "out of maintenance" in out
    assert not route_file(fake).exists()
    assert "maintenance" not in fake.store.get_app("hello").settings
    assert json.loads(call(fake, "maintenance", "hello", "--json")[1])["on"] is False
    assert "was not in maintenance" in call(fake, "maintenance:off", "hello")[1]


def test_on_again_changes_the_message_and_keeps_since(fake, traefik):
    call(fake, "maintenance:on", "hello")
    since = fake.store.get_app("hello").settings["maintenance"]["since"]
    _, out, _ = call(fake, "maintenance:on", "hello", "--message", "later")
    assert "stays in maintenance" in out
    assert fake.store.get_app("hello").settings["maintenance"] == {"message": "later", "since": since}


def test_traefik_not_taking_it_up_leaves_nothing_changed(fake, traefik, monkeypatch):
    monkeypatch.setattr(maintenance, "confirm", _failing_confirm)
    with pytest.raises(GitdError, match="did not take up"):
        call(fake, "maintenance:on", "hello")
    assert not route_file(fake).exists()
    assert "maintenance" not in fake.store.get_app("hello").settings


def _failing_confirm(api_url, names, live, timeout=0.0):
    raise GitdError("Traefik did not take up the maintenance routes within 0s")


@pytest.mark.parametrize("message", ["x" * 501, "\x1b]0;pwned\x07", "a\x00b"])
def test_hostile_messages_change_nothing(fake, traefik, message):
    with pytest.raises(UsageError):
        call(fake, "maintenance:on", "hello", "--message", message)
    assert not route_file(fake).exists()
    assert "maintenance" not in fake.store.get_app("hello").settings


def test_an_external_traefik_is_refused_with_nothing_changed(store, tmp_path, traefik):
    external = FakeGitd(store, Settings(data_dir=tmp_path, instance="t1234567", traefik="external"))
    with pytest.raises(GitdError, match="needs the managed Traefik.*nothing changed"):
        call(external, "maintenance:on", "hello")
    assert "maintenance" not in store.get_app("hello").settings
    assert not route_file(external).exists()


def test_deployers_switch_only_their_granted_apps(fake, traefik):
    with pytest.raises(PermissionDenied):
        call(fake, "maintenance:on", "hello", key="dev")
    fake.store.grant("hello", "dev")
    assert call(fake, "maintenance:on", "hello", key="dev")[0] == 0
    assert call(fake, "maintenance:off", "hello", key="dev")[0] == 0


def test_apps_info_says_so(fake, traefik, monkeypatch):
    from gitd.verbs import apps, maintenance as verbs
    from gitd.commands.base import Context
    from tests.fakes import Bridge

    ctx = Context(fake, fake.store.get_key("admin"), Bridge())
    verbs.on(ctx, "hello", "soon")
    state = verbs.state_of(fake.store.get_app("hello"))
    assert state["on"] is True and state["message"] == "soon" and state["since"]
    monkeypatch.setattr(apps, "linked_services", lambda s, name: {})
    fake.scheduler = type("S", (), {"dynos": staticmethod(lambda name: [])})()
    fake.locks.busy = lambda: set()
    assert apps.info(ctx, "hello")["maintenance"] == state


def test_sync_follows_routes_and_removes_files_of_apps_gone(fake, traefik):
    call(fake, "maintenance:on", "hello")
    fake.store.add_domains("hello", ["shop.example.org"])
    stray = fake.settings.dynamic_dir / maintenance.route_file_name("gone")
    stray.write_text("{}")
    maintenance.sync(fake.settings, fake.store)
    assert "shop.example.org" in route_file(fake).read_text()
    assert not stray.exists()
    fake.store.update_app_settings("hello", maintenance=None)
    maintenance.sync(fake.settings, fake.store)
    assert not route_file(fake).exists()


def test_the_routes_of_app_json_services_get_the_page_too(store, tmp_path):
    """A service's `/api` on each domain is a longer prefix than the
    domain's own route: without a router of its own it would outrank it."""
    store.add_routes("hello", [HostRoute("shop.test", "/shop")])
    deployed(store)
    release = store.current_release("hello")
    store.update_release("hello", release.version, components={
        "frontend": {"routes": [["/", False]]}, "backend": {"routes": [["/api", True]]}})
    settings = Settings(data_dir=tmp_path, instance="t1234567")
    routers = maintenance.app_config(settings, store, "hello")["http"]["routers"]
    rules = {r["rule"]: r["priority"] for r in routers.values()}
    api = "Host(`hello.example.com`) && (Path(`/api`) || PathPrefix(`/api/`))"
    assert rules[api] == maintenance.priority("/api") > router.priority(10**6, "/api")
    assert "Host(`shop.test`) && (Path(`/shop/api`) || PathPrefix(`/shop/api/`))" in rules
    assert "Host(`hello.example.com`)" in rules
    assert "Host(`shop.test`) && (Path(`/shop`) || PathPrefix(`/shop/`))" in rules


def test_a_deploys_new_routes_are_covered_before_it_only_in_maintenance(fake, traefik):
    new = [HostRoute("hello.example.com", "/extra", True)]
    maintenance.cover(fake.settings, fake.store, "hello", new)
    assert not route_file(fake).exists()  # not in maintenance: nothing to cover
    call(fake, "maintenance:on", "hello")
    maintenance.cover(fake.settings, fake.store, "hello", new)
    assert "PathPrefix(`/extra/`)" in route_file(fake).read_text()
    maintenance.sync(fake.settings, fake.store)  # after the deploy: what the app has
    assert "/extra" not in route_file(fake).read_text()


# --- the page server --------------------------------------------------------------------


def test_page_server_answers_503_with_the_escaped_message_and_publishes_itself(fake, traefik):
    fake.store.update_app_settings("hello", maintenance={"message": "<i>soon</i>", "since": 1.0})

    async def fetch_pages():
        server = PageServer(fake)
        port = await server.start()
        try:
            return port, [await asyncio.to_thread(_get, port, path)
                          for path in ("/hello", "/nosuchapp", "/Bad..name")]
        finally:
            await server.stop()

    port, answers = asyncio.run(fetch_pages())
    published = json.loads((fake.settings.dynamic_dir / maintenance.PAGE_FILE).read_text())
    assert published["http"]["services"][maintenance.PAGE_SERVICE]["loadBalancer"]["servers"] == [
        {"url": f"http://127.0.0.1:{port}"}]
    (status, headers, body), *others = answers
    assert status == 503 and headers["Retry-After"] == str(maintenance.RETRY_AFTER_SECONDS)
    assert headers["Content-Type"].startswith("text/html")
    assert "&lt;i&gt;soon&lt;/i&gt;" in body and "<i>" not in body
    for status, _, body in others:
        assert status == 503 and maintenance.DEFAULT_MESSAGE in body


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()

"""The dashboard's sessions, CSRF checks and access rules, through its real
routes on the API's application (aiohttp's test server), over the fakes:
no Docker."""

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from gitd.api import build_app
from gitd.core.config import Settings
from gitd.core.errors import Conflict
from gitd.dashboard import COOKIE, LOGIN_COOKIE, MAX_FORM, mount, sessions
from gitd.verbs import Session, overview, tokens
from hooks.scheduler import DockerScheduler, ExitWatch
from tests.fakes import Engine, FakeGitd, app_container


class NoContainers:
    """The scheduler of an app never deployed."""

    def dynos(self, app):
        return []

    def dynos_of(self, apps):
        return {app: [] for app in apps}

    def units(self, app, **labels):
        return []


class DashboardGitd(FakeGitd):
    scheduler = NoContainers()


@pytest.fixture
def gitd(fake):
    fake.store.create_app("other")
    fake.store.grant("hello", "dev")
    fake.store.set_config("hello", {"SECRET": "s3cr3t"})
    fake.store.set_config("other", {"OTHER": "x"})
    return DashboardGitd(fake.store, fake.settings)


def token_of(gitd, key: str) -> str:
    return tokens.create(Session(gitd, gitd.store.get_key(key)), f"t-{key}")["token"]


def browse(gitd, scenario, proxy_secret=None):
    """Run `scenario(client)` against the API's app with the dashboard mounted."""
    async def run():
        app = build_app(gitd)
        app["proxy_secret"] = proxy_secret
        mount(app)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)
    return asyncio.run(run())


def hidden(html: str, name: str = "csrf") -> str:
    return re.search(rf'name="{name}" value="([^"]+)"', html)[1]


async def log_in(client, token: str):
    form = await client.get("/dashboard/login")
    return await client.post("/dashboard/login", data={"csrf": hidden(await form.text()),
                                                        "token": token}, allow_redirects=False)


def test_a_token_opens_a_session_whose_cookie_is_httponly_strict_and_stored_hashed(gitd):
    admin = token_of(gitd, "admin")

    async def scenario(client):
        answer = await log_in(client, admin)
        page = await client.get("/dashboard/")
        return answer, page.status, await page.text()

    answer, status, html = browse(gitd, scenario)
    assert answer.status == 303 and answer.headers["Location"] == "/dashboard/"
    cookie = answer.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/dashboard"
    assert not cookie["secure"]  # plain HTTP on the API's own port
    assert status == 200 and 'href="/dashboard/apps/hello"' in html
    dump = "\n".join(gitd.store.db.iterdump())
    assert cookie.value not in dump and admin not in dump


def test_no_session_no_page(gitd):
    async def scenario(client):
        page = await client.get("/dashboard/", allow_redirects=False)
        app = await client.get("/dashboard/apps/hello", allow_redirects=False)
        forged = await client.get("/dashboard/", cookies={COOKIE: "x" * 43},
                                  allow_redirects=False)
        return [(r.status, r.headers.get("Location")) for r in (page, app, forged)]

    assert browse(gitd, scenario) == [(303, "/dashboard/login")] * 3


def test_wrong_tokens_are_braked_as_the_api_brakes_them(gitd):
    gitd.settings.api_auth_failures = 3

    async def scenario(client):
        statuses = [(await log_in(client, f"gitd_{'0' * 12}_nope{i}")).status for i in range(4)]
        good = await log_in(client, token_of(gitd, "admin"))
        return statuses, good.status

    statuses, good = browse(gitd, scenario)
    assert statuses == [401, 401, 401, 429] and good == 429


def test_the_login_form_needs_its_own_csrf_token(gitd):
    admin = token_of(gitd, "admin")

    async def scenario(client):
        bare = await client.post("/dashboard/login", data={"token": admin}, allow_redirects=False)
        return bare.status, COOKIE in bare.cookies

    assert browse(gitd, scenario) == (403, False)


def test_a_post_without_or_with_a_wrong_csrf_token_changes_nothing(gitd):
    admin = token_of(gitd, "admin")

    async def scenario(client):
        await log_in(client, admin)
        url = "/dashboard/apps/hello/config"
        without = await client.post(url, data={"key": "A", "value": "1"}, allow_redirects=False)
        wrong = await client.post(url, data={"key": "A", "value": "1", "csrf": "x" * 43},
                                  allow_redirects=False)
        unset = await client.post(url + "/unset", data={"key": "SECRET"}, allow_redirects=False)
        page = await (await client.get("/dashboard/apps/hello")).text()
        right = await client.post(url, data={"key": "A", "value": "1", "csrf": hidden(page)},
                                  allow_redirects=False)
        return without.status, wrong.status, unset.status, right.status

    assert browse(gitd, scenario) == (403, 403, 403, 303)
    assert gitd.store.get_config("hello") == {"SECRET": "s3cr3t", "A": "1"}


def test_a_form_posted_from_another_origin_is_refused_even_from_the_same_site(gitd):
    """An app's page on a sibling host (hog.example.com beside the dashboard's
    gitd.example.com) is the same site: SameSite=Strict cookies go with its
    form posts, and it can set a cookie for the parent domain (the login
    form's token). The browser's Origin tells it apart."""
    admin, dev = token_of(gitd, "admin"), token_of(gitd, "dev")
    foreign = {"Origin": "http://hog.example.com"}

    async def scenario(client):
        own = {"Origin": str(client.make_url("")).rstrip("/")}
        form = await client.get("/dashboard/login")
        login_csrf = hidden(await form.text())
        tossed = await client.post("/dashboard/login", data={"csrf": login_csrf, "token": dev},
                                   headers=foreign, allow_redirects=False)
        opaque = await client.post("/dashboard/login", data={"csrf": login_csrf, "token": dev},
                                   headers={"Origin": "null"}, allow_redirects=False)
        await log_in(client, admin)
        page = await (await client.get("/dashboard/apps/hello")).text()
        url = "/dashboard/apps/hello/config"
        forged = await client.post(url, data={"key": "A", "value": "1", "csrf": hidden(page)},
                                   headers=foreign, allow_redirects=False)
        right = await client.post(url, data={"key": "B", "value": "2", "csrf": hidden(page)},
                                  headers=own, allow_redirects=False)
        return (tossed.status, COOKIE in tossed.cookies, opaque.status, forged.status,
                right.status)

    assert browse(gitd, scenario) == (403, False, 403, 403, 303)
    assert gitd.store.get_config("hello") == {"SECRET": "s3cr3t", "B": "2"}


def test_logout_ends_the_session_and_its_cookie_is_worth_nothing_after(gitd):
    admin = token_of(gitd, "admin")

    async def scenario(client):
        answer = await log_in(client, admin)
        cookie = answer.cookies[COOKIE].value
        page = await (await client.get("/dashboard/")).text()
        out = await client.post("/dashboard/logout", data={"csrf": hidden(page)},
                                allow_redirects=False)
        client.session.cookie_jar.clear()
        again = await client.get("/dashboard/", cookies={COOKIE: cookie}, allow_redirects=False)
        post = await client.post("/dashboard/apps/hello/config", cookies={COOKIE: cookie},
                                 data={"key": "A", "value": "1", "csrf": hidden(page)})
        return out.status, again.status, post.status

    assert browse(gitd, scenario) == (303, 303, 401)
    assert "A" not in gitd.store.get_config("hello")
    assert gitd.store.db["dashboard_sessions"].count == 0


def test_revoking_the_token_ends_its_sessions(gitd):
    admin = token_of(gitd, "admin")

    async def scenario(client):
        await log_in(client, admin)
        before = await client.get("/dashboard/", allow_redirects=False)
        tokens.revoke(Session(gitd, gitd.store.get_key("admin")), "t-admin")
        after = await client.get("/dashboard/", allow_redirects=False)
        return before.status, after.status

    assert browse(gitd, scenario) == (200, 303)


def test_removing_the_key_or_the_session_expiring_ends_it(gitd):
    dev = token_of(gitd, "dev")
    opened = sessions.open_session(gitd.store, dev)
    assert sessions.current(gitd.store, opened.session_id).key.name == "dev"
    gitd.store.db["dashboard_sessions"].update(sessions._hash(opened.session_id),
                                               {"expires_at": 1.0})
    assert sessions.current(gitd.store, opened.session_id) is None
    again = sessions.open_session(gitd.store, dev)
    gitd.store.remove_key("dev")
    assert sessions.current(gitd.store, again.session_id) is None
    assert sessions.open_session(gitd.store, "gitd_" + "0" * 12 + "_x") is None


def test_a_token_holds_a_bounded_number_of_sessions(gitd):
    dev = token_of(gitd, "dev")
    opened = [sessions.open_session(gitd.store, dev) for _ in range(sessions.PER_TOKEN + 3)]
    assert gitd.store.db["dashboard_sessions"].count == sessions.PER_TOKEN
    assert sessions.current(gitd.store, opened[0].session_id) is None
    assert sessions.current(gitd.store, opened[-1].session_id) is not None


def test_a_key_holds_a_bounded_number_of_tokens_so_of_sessions(gitd):
    """Sessions are bounded per token: a deployer minting tokens without end
    would have no bound on them (nor on the tokens' table)."""
    dev = Session(gitd, gitd.store.get_key("dev"))
    for n in range(tokens.MAX_PER_KEY):
        tokens.create(dev, f"n{n}")
    with pytest.raises(Conflict, match=f"{tokens.MAX_PER_KEY} tokens"):
        tokens.create(dev)
    assert len(gitd.store.list_tokens("dev")) == tokens.MAX_PER_KEY
    tokens.revoke(dev, "n0")
    assert tokens.create(dev, "again")["token"]


def test_a_deployer_sees_and_does_only_its_granted_app(gitd):
    dev = token_of(gitd, "dev")

    async def scenario(client):
        await log_in(client, dev)
        apps = await (await client.get("/dashboard/")).text()
        mine = await client.get("/dashboard/apps/hello")
        mine_html = await mine.text()
        other = await client.get("/dashboard/apps/other")
        reveal = await client.get("/dashboard/apps/hello?reveal=1")
        forced = await client.post("/dashboard/apps/hello/config",
                                   data={"key": "A", "value": "1", "csrf": hidden(mine_html)})
        rollback = await client.post("/dashboard/apps/hello/releases/1/rollback",
                                     data={"csrf": hidden(mine_html)})
        return apps, mine.status, mine_html, other.status, reveal.status, forced.status, \
            rollback.status

    apps, mine, mine_html, other, reveal, forced, rollback = browse(gitd, scenario)
    assert "/dashboard/apps/hello" in apps and "other" not in apps
    assert mine == 200 and "Config" not in mine_html and "SECRET" not in mine_html
    assert (other, reveal, forced, rollback) == (403, 403, 403, 403)
    assert gitd.store.get_config("hello") == {"SECRET": "s3cr3t"}


def test_config_values_show_only_when_revealed_and_escaped(gitd):
    gitd.store.set_config("hello", {"EVIL": "<script>alert(1)</script>"})
    admin = token_of(gitd, "admin")

    async def scenario(client):
        await log_in(client, admin)
        shut = await (await client.get("/dashboard/apps/hello")).text()
        shown = await client.get("/dashboard/apps/hello?reveal=1")
        return shut, await shown.text(), shown.headers["Content-Security-Policy"]

    shut, shown, policy = browse(gitd, scenario)
    assert "EVIL" in shut and "s3cr3t" not in shut and "alert" not in shut
    assert "s3cr3t" in shown and "<script>alert" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "script-src 'self'" in policy


def test_a_form_past_the_bound_is_refused_and_changes_nothing(gitd):
    admin = token_of(gitd, "admin")

    async def scenario(client):
        await log_in(client, admin)
        page = await (await client.get("/dashboard/apps/hello")).text()
        big = await client.post("/dashboard/apps/hello/config",
                                data={"csrf": hidden(page), "key": "A", "value": "x" * MAX_FORM})
        twice = await client.post("/dashboard/apps/hello/config",
                                  data=[("csrf", hidden(page)), ("key", "A"), ("key", "B"),
                                        ("value", "1")])
        return big.status, twice.status

    assert browse(gitd, scenario) == (413, 400)
    assert gitd.store.get_config("hello") == {"SECRET": "s3cr3t"}


def test_the_cookie_is_secure_when_the_page_came_over_https_through_gitds_traefik(gitd):
    admin = token_of(gitd, "admin")

    async def scenario(client):
        proxied = {"X-Gitd-Proxy": "p" * 32, "X-Forwarded-Proto": "https",
                   "X-Forwarded-For": "203.0.113.9"}
        form = await client.get("/dashboard/login", headers=proxied)
        login_cookie = form.cookies[LOGIN_COOKIE]
        answer = await client.post("/dashboard/login", headers=proxied, allow_redirects=False,
                                   cookies={LOGIN_COOKIE: login_cookie.value},
                                   data={"csrf": hidden(await form.text()), "token": admin})
        return login_cookie["secure"], answer.cookies[COOKIE]["secure"]

    assert browse(gitd, scenario, proxy_secret="p" * 32) == (True, True)


def test_the_token_never_reaches_the_log(gitd):
    admin = token_of(gitd, "admin")
    with capture_logs() as logs:
        browse(gitd, lambda client: log_in(client, admin))
    assert logs and admin not in repr(logs)


def test_a_form_that_arrives_in_pieces_is_read_whole(gitd):
    admin = token_of(gitd, "admin")
    value = "v" * 20_000

    async def scenario(client):
        await log_in(client, admin)
        page = await (await client.get("/dashboard/apps/hello")).text()
        body = f"csrf={hidden(page)}&key=LONG&value={value}".encode()

        async def pieces():
            for start in range(0, len(body), 1000):
                yield body[start:start + 1000]
                await asyncio.sleep(0.01)
        answer = await client.post("/dashboard/apps/hello/config", data=pieces(),
                                   headers={"Content-Type": "application/x-www-form-urlencoded"},
                                   allow_redirects=False)
        return answer.status

    assert browse(gitd, scenario) == 303
    assert gitd.store.get_config("hello")["LONG"] == value


def test_the_apps_overview_says_what_each_apps_own_verbs_say(gitd):
    """The apps page reads every app in a few queries: the same facts as
    apps:info and the app's last deployment, one app at a time."""
    store = gitd.store
    store.new_release("hello", kind="push", commit="c" * 40, pushed_by="dev", status="succeeded")
    store.set_live("hello", 1, 1)
    store.new_deployment("hello", "push")
    store.new_deployment("hello", "api")
    store.new_deployment("other", "push")
    store.create_service(name="db", kind="postgres", version="16", image="i", password="p",
                         volume="v")
    store.update_service("db", last_backup_ok=False, last_backup_message="<b>disk full</b>")
    store.add_link("db", "hello", "DATABASE_URL")
    for key, expected in (("admin", ["hello", "other"]), ("dev", ["hello"])):
        s = Session(gitd, store.get_key(key))
        listed = overview.apps_overview(s)
        assert [a["name"] for a in listed] == expected
        for item in listed:
            one = overview.app_summary(s, item["name"])
            assert item == {k: one[k] for k in item}, item["name"]
    assert listed[0]["commit"] == "c" * 40 and listed[0]["last_deployment"]["trigger"] == "api"
    assert listed[0]["services"]["db"]["last_backup_ok"] is False


def test_a_failed_backup_and_the_state_show_on_the_apps_page_escaped(gitd):
    gitd.store.create_service(name="db", kind="postgres", version="16", image="i", password="p",
                              volume="v")
    gitd.store.update_service("db", last_backup_ok=False, last_backup_message="<b>disk</b>")
    gitd.store.add_link("db", "hello", "DATABASE_URL")
    admin = token_of(gitd, "admin")

    async def scenario(client):
        await log_in(client, admin)
        return await (await client.get("/dashboard/")).text()

    html = browse(gitd, scenario)
    assert "backup of db failed: &lt;b&gt;disk&lt;/b&gt;" in html and "not deployed" in html


def test_markup_as_an_app_name_in_the_url_is_refused_and_escaped(gitd):
    admin = token_of(gitd, "admin")

    async def scenario(client):
        await log_in(client, admin)
        answer = await client.get("/dashboard/apps/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        return answer.status, await answer.text()

    status, html = browse(gitd, scenario)
    assert status == 400 and "<script>alert" not in html and "&lt;script&gt;" in html


def test_the_docker_scheduler_lists_several_apps_dynos_in_one_listing(monkeypatch):
    class Counted(Engine):
        listings = 0

        def containers(self, app=None, **labels):
            Counted.listings += 1
            return super().containers(app, **labels)

    monkeypatch.setattr(ExitWatch, "start", lambda self: None)  # no engine events here
    engine = Counted([app_container("a", 1, 1), app_container("a", 1, 1, "worker", None, "exited"),
                      app_container("b", 2, 2), app_container("c", 1, 1)])
    docker = DockerScheduler(engine, Settings())
    one_by_one = {app: docker.dynos(app) for app in ("a", "b", "z")}
    Counted.listings = 0
    together = docker.dynos_of(["a", "b", "z"])
    assert Counted.listings == 1
    for rows in (*one_by_one.values(), *together.values()):
        for row in rows:
            row.pop("uptime")  # counted from now
    assert together == one_by_one and len(together["a"]) == 2 and together["z"] == []


def test_another_apps_deploy_log_stream_is_not_found_and_none_without_a_session(gitd):
    theirs = gitd.store.new_deployment("other", "push")
    dev = token_of(gitd, "dev")

    async def scenario(client):
        anonymous = await client.get(f"/dashboard/deployments/{theirs.id}/log")
        await log_in(client, dev)
        other = await client.get(f"/dashboard/deployments/{theirs.id}/log")
        odd = await client.get("/dashboard/deployments/%C2%B2/log")
        return anonymous.status, other.status, odd.status, await other.text()

    anonymous, other, odd, text = browse(gitd, scenario)
    assert (anonymous, other, odd) == (401, 404, 400) and "data:" not in text

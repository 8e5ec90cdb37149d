"""The dashboard in a real browser (Debian's chromium, headless, driven by
Selenium through chromedriver) against a real gitd with real apps: log in,
the apps page, an app's page, a push whose log streams into the page, a
rollback by its button, a config var set, logging out; a deployer's view;
and the hostile cases (CSRF, stale cookies, another app by URL, markup in
config values, build and app log lines). Screenshots go to a temporary
directory, or to GITD_SCREENSHOTS (`GITD_SCREENSHOTS=docs/screenshots`
refreshes the README's): a test run leaves the source tree as it was."""

from __future__ import annotations

import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import make_key, make_repo, unique_app

pytestmark = pytest.mark.e2e

SHOTS = Path(os.environ.get("GITD_SCREENSHOTS")
             or Path(tempfile.gettempdir()) / "gitd-dashboard-screenshots")
HOSTILE = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"


def app_files(version: str, build_seconds: int = 0) -> dict:
    """A busybox httpd app whose build and run print markup, answering `version`."""
    steps = "".join(f"RUN echo 'step {i} {HOSTILE}' && sleep 1\n" for i in range(build_seconds))
    return {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n{steps}"
        f"RUN mkdir -p /www && echo '{version}' > /www/index.html\n"
        f"CMD [\"sh\", \"-c\", \"echo '{HOSTILE}'; exec httpd -f -p $PORT -h /www\"]\n")}


def new_token(server, key=None) -> str:
    result = server.ssh("tokens:create", key=key)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(gitd, tmp_path_factory):
    """Two apps, a deployer key granted the second, a token for each key."""
    root = tmp_path_factory.mktemp("dashboard")
    deployer_key = make_key(root, "deployer")
    deployer = f"dep-{unique_app('d')[2:]}"
    assert gitd.ssh("keys:add", deployer, input=(root / "deployer.pub").read_text()).returncode == 0
    main, granted = unique_app("dash"), unique_app("dgrant")
    for app in (main, granted):
        assert gitd.ssh("apps:create", app).returncode == 0
    assert gitd.ssh("apps:grant", granted, deployer).returncode == 0
    return {"root": root, "main": main, "granted": granted, "deployer_key": deployer_key,
            "admin_token": new_token(gitd), "deployer_token": new_token(gitd, deployer_key),
            "base": f"http://127.0.0.1:{gitd.gitd_api_port}/dashboard"}


def wait(driver, condition, timeout: float = 60):
    """Until `condition(driver)`; an element read as the page moves on (a
    form's post and redirect, a reload) is read again at the next look."""
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def log_in(driver, base: str, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    wait(driver, lambda d: d.find_elements(By.ID, "logout"))


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def no_script_ran(driver) -> None:
    assert driver.execute_script("return window.pwned === undefined")


class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, cookie: str | None = None, data: dict | None = None, keep: bool = False):
    """(status, location, body) without following redirects; with `keep`,
    the gitd_session cookie it set is left in fetch.last_set_cookie."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Cookie": f"gitd_session={cookie}"}
                                 if cookie else {})
    try:
        with urllib.request.build_opener(Stay).open(req, timeout=30) as resp:
            answer = resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        answer = exc.code, exc.headers, exc.read().decode(errors="replace")
    status, headers, text = answer
    if keep:
        found = re.search(r"gitd_session=([^;]+)", " ".join(headers.get_all("Set-Cookie") or []))
        fetch.last_set_cookie = found and found[1]
    return status, headers.get("Location"), text


def session_cookie(driver) -> str:
    return driver.get_cookie("gitd_session")["value"]


def test_an_admin_deploys_watches_rolls_back_sets_config_and_logs_out(gitd, site, browser):
    base, app = site["base"], site["main"]
    browser.delete_all_cookies()
    browser.get(f"{base}/login")
    shot(browser, "login")
    log_in(browser, base, site["admin_token"])
    repo = make_repo(site["root"] / app, app_files("v1"), message=f"first {HOSTILE}")
    assert gitd.push(repo, app).returncode == 0
    assert gitd.wait_for(gitd.host(app), "v1")[0] == 200

    def listed_running(driver) -> bool:
        driver.get(f"{base}/")  # the push's lock and health settle just after it returns
        text = driver.find_element(By.CSS_SELECTOR, f'tr[data-app="{app}"]').text
        seen.append(text)
        return "running" in text and "v1" in text
    seen: list[str] = []
    try:
        wait(browser, listed_running, timeout=30)
    except TimeoutException:
        raise AssertionError(f"the apps page says: {seen[-3:]}") from None
    shot(browser, "apps")

    # a push while the page is open: its log streams in, then the page follows
    make_repo(repo, app_files("v2", build_seconds=6), message=f"second {HOSTILE}")
    pusher = gitd.push_async(repo, app)
    try:
        deadline = time.monotonic() + 120
        while not browser.find_elements(By.ID, "deploy-log"):
            assert time.monotonic() < deadline, "the deploy never showed as running"
            browser.get(f"{base}/apps/{app}")
            time.sleep(0.5)
        log = browser.find_element(By.ID, "deploy-log")
        first = log.text
        # the same element grows: streamed into the page (a reload would make it stale)
        wait(browser, lambda d: len(log.text) > len(first) and "step 3" in log.text, timeout=120)
        assert HOSTILE in log.text  # shown as text, not markup
        shot(browser, "deploy")
        no_script_ran(browser)
        assert pusher.wait(timeout=300) == 0
    finally:
        pusher.kill()
    wait(browser, lambda d: not d.find_elements(By.ID, "deploy-log")
         and d.find_element(By.ID, "release").text == "v2", timeout=60)
    assert gitd.wait_for(gitd.host(app), "v2")[0] == 200
    assert HOSTILE in browser.find_element(By.ID, "logs").text  # the app's own log line
    no_script_ran(browser)

    # roll back with the button
    browser.find_element(By.CSS_SELECTOR, 'tr[data-version="1"] button.rollback').click()
    wait(browser, lambda d: d.find_element(By.ID, "release").text == "v3", timeout=120)
    assert gitd.wait_for(gitd.host(app), "v1")[0] == 200

    # a config var, markup in its value
    browser.find_element(By.ID, "config-key").send_keys("GREETING")
    browser.find_element(By.ID, "config-value").send_keys(HOSTILE)
    browser.find_element(By.ID, "config-submit").click()
    wait(browser, lambda d: d.find_element(By.ID, "release").text == "v4", timeout=120)
    assert HOSTILE not in browser.page_source.replace("&lt;", "<")  # hidden until revealed
    browser.find_element(By.ID, "reveal").click()
    value = browser.find_element(By.CSS_SELECTOR, 'tr[data-key="GREETING"] .value')
    assert value.text == HOSTILE
    no_script_ran(browser)
    browser.find_element(By.ID, "hide").click()
    shot(browser, "app")

    # log out: the old cookie opens nothing any more
    cookie = session_cookie(browser)
    browser.find_element(By.ID, "logout").click()
    wait(browser, lambda d: d.find_elements(By.ID, "token"))
    status, location, _ = fetch(f"{base}/", cookie)
    assert (status, location) == (303, "/dashboard/login")


def test_a_deployer_sees_only_its_app_and_admin_actions_are_refused(gitd, site, browser):
    base = site["base"]
    log_in(browser, base, site["deployer_token"])
    browser.get(f"{base}/")
    listed = [r.get_attribute("data-app") for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-app]")]
    assert listed == [site["granted"]]
    browser.get(f"{base}/apps/{site['granted']}")
    assert not browser.find_elements(By.ID, "config-set")
    assert not browser.find_elements(By.CSS_SELECTOR, "button.rollback")
    shot(browser, "deployer")
    browser.set_window_size(390, 844)  # a phone
    try:
        browser.get(f"{base}/")
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(browser, "phone")
    finally:
        browser.set_window_size(1280, 1000)
    browser.get(f"{base}/apps/{site['granted']}")
    cookie = session_cookie(browser)
    csrf = browser.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")
    status, _, body = fetch(f"{base}/apps/{site['main']}", cookie)
    assert status == 403 and site["main"] not in body.replace(f"/apps/{site['main']}", "")
    status, _, _ = fetch(f"{base}/apps/{site['granted']}/config", cookie,
                         {"csrf": csrf, "key": "FORCED", "value": "1"})
    assert status == 403
    assert "FORCED" not in gitd.ssh("config", site["granted"]).stdout


def log_in_by_hand(base: str, token: str) -> str:
    """The session cookie a login over plain HTTP gets (the login form's CSRF
    token rides on its own cookie: both sent by hand)."""
    _, _, html = fetch(f"{base}/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)[1]
    status, location, _ = fetch(f"{base}/login", f"x; gitd_login={csrf}",
                                {"csrf": csrf, "token": token}, keep=True)
    assert (status, location) == (303, "/dashboard/"), status
    return fetch.last_set_cookie


def test_a_post_without_csrf_and_a_cookie_after_revocation_do_nothing(gitd, site):
    base, app = site["base"], site["granted"]
    name = f"dash-{unique_app('r')[2:]}"
    result = gitd.ssh("tokens:create", "--name", name)
    assert result.returncode == 0, result.stderr
    cookie = log_in_by_hand(base, result.stdout.strip().splitlines()[-1])
    assert fetch(f"{base}/", cookie)[0] == 200
    status, _, _ = fetch(f"{base}/apps/{app}/config", cookie, {"key": "NOCSRF", "value": "1"})
    assert status == 403
    assert "NOCSRF" not in gitd.ssh("config", app).stdout
    assert gitd.ssh("tokens:revoke", name).returncode == 0
    assert fetch(f"{base}/", cookie)[:2] == (303, "/dashboard/login")


def test_the_dashboard_answers_at_api_host_through_gitds_traefik(gitd):
    deadline = time.monotonic() + 30
    while (answer := gitd.get("gitd.localhost", "/dashboard/login"))[0] != 200:
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
    assert 'name="token"' in answer[1]

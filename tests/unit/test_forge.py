"""Apps that follow a repository: webhook verification for each forge, URL
and ref validation, the webhook's answers, one sync at a time per app with
the newest push winning, and who may do what. No network, no Docker."""

import hashlib
import hmac
import json
import re
import stat
import threading

import pytest

from gitd import webhooks
from gitd.core.errors import GitdError, PermissionDenied, UsageError
from gitd.verbs import Session, apps, git
from hooks import remote
from tests.fakes import FakeGitd, call
from gitd.core.config import Settings

SECRET = "s3cret-of-hello"
SHA = "a" * 40


def push_body(branch="main", after=SHA) -> bytes:
    return json.dumps({"ref": f"refs/heads/{branch}", "after": after,
                       "repository": {"full_name": "me/hello"}}).encode()


def github(body: bytes, secret=SECRET, event="push", delivery="d-1") -> dict:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={sig}", "Content-Type": "application/json"}


def gitea(body: bytes, secret=SECRET, delivery="g-1") -> dict:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    # Gitea sends GitHub's headers too; its own signature has no prefix
    return {"X-Gitea-Event": "push", "X-Gitea-Delivery": delivery, "X-Gitea-Signature": sig,
            "X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}"}


def gitlab(token=SECRET, event="Push Hook", delivery="l-1") -> dict:
    return {"X-Gitlab-Event": event, "X-Gitlab-Token": token, "X-Gitlab-Event-UUID": delivery}


# verification

def test_each_forge_signed_push_is_read():
    body = push_body()
    for headers, forge in ((github(body), "github"), (gitea(body), "gitea"), (gitlab(), "gitlab")):
        got = webhooks.read(headers, body, SECRET)
        assert (got.forge, got.event, got.branch, got.commit) == (forge, "push", "main", SHA)
        assert got.delivery


@pytest.mark.parametrize("headers", [
    lambda b: github(b, secret="wrong"),
    lambda b: {k: v for k, v in github(b).items() if k != "X-Hub-Signature-256"},
    lambda b: {**github(b), "X-Hub-Signature-256": "sha1=" + "0" * 40},
    lambda b: {**github(b), "X-Hub-Signature-256": "sha256="},
    lambda b: gitea(b, secret="wrong"),
    lambda b: gitlab(token="wrong"),
    lambda b: gitlab(token=""),
    lambda b: {"Content-Type": "application/json"},
])
def test_a_bad_or_missing_signature_is_refused(headers):
    body = push_body()
    with pytest.raises(webhooks.Unverified):
        webhooks.read(headers(body), body, SECRET)


def test_no_secret_refuses_even_a_matching_empty_signature():
    body = push_body()
    for headers in (github(body, secret=""), gitlab(token="")):
        with pytest.raises(webhooks.Unverified):
            webhooks.read(headers, body, None)


def test_a_body_changed_after_signing_is_refused():
    body = push_body()
    with pytest.raises(webhooks.Unverified):
        webhooks.read(github(body), push_body(after="b" * 40), SECRET)


def test_ping_delete_tag_and_garbage():
    ping = b'{"zen": "hi"}'
    assert webhooks.read(github(ping, event="ping"), ping, SECRET).event == "ping"
    deleted = push_body(after="0" * 40)
    assert webhooks.read(github(deleted), deleted, SECRET).commit is None
    tag = json.dumps({"ref": "refs/tags/v1", "after": SHA}).encode()
    assert webhooks.read(github(tag), tag, SECRET).event == "push-without-branch"
    for junk in (b"not json", b"[1, 2]", b"\xff\xfe"):
        with pytest.raises(GitdError):
            webhooks.read(github(junk), junk, SECRET)
    bad_commit = push_body(after="$(reboot)")
    with pytest.raises(GitdError):
        webhooks.read(github(bad_commit), bad_commit, SECRET)


def test_an_odd_delivery_id_is_kept_as_a_digest():
    body = push_body()
    got = webhooks.read(github(body, delivery="x" * 5000), body, SECRET)
    assert len(got.delivery) == 64


# URLs and refs

@pytest.mark.parametrize("url,kind", [
    ("https://github.com/me/hello.git", "https"), ("ssh://git@github.com/me/hello.git", "ssh"),
    ("git@github.com:me/hello.git", "ssh"), ("/srv/git/hello.git", "file"),
    ("file:///srv/git/hello.git", "file")])
def test_repository_urls_gitd_fetches(url, kind):
    assert remote.url_kind(url) == kind


@pytest.mark.parametrize("url", [
    "http://example.com/x.git", "git://example.com/x.git", "ext::sh -c reboot", "-uhttps://x",
    "https://user:pw@example.com/x.git", "", "relative/path", "https://", "https://h:99999/x",
    "https://[::1", "ssh://u:pw@h/x",
    "fd::3", "https://example.com/a b", "x" * 3000, "file://host/etc"])
def test_other_urls_are_refused(url):
    with pytest.raises(UsageError):
        remote.url_kind(url)


@pytest.mark.parametrize("ref", ["-oops", "a..b", "main:refs/heads/x", "x y", "", "/abs", "a//b",
                                 "a/", "a.", ".hidden", "+main", "main^", "a" * 300, "main\n"])
def test_hostile_refs_are_refused(ref):
    with pytest.raises(UsageError):
        remote.check_ref(ref)


@pytest.mark.parametrize("url", [
    "/srv/git/x.git", "/", "file:///srv/x", "https://github.com/me/x.git", "https://h:8443",
    "ssh://git@github.com/me/x.git", "ssh://h:2222/x", "git@github.com:me/x.git", "/a/../b"])
def test_what_the_api_schema_admits_is_fetched(url):
    """The API's schema (URL_PATTERN) admits only URLs url_kind takes: a
    schema-valid body is never refused for its URL."""
    assert re.fullmatch(remote.URL_PATTERN, url)
    assert remote.url_kind(url)


def test_the_refused_urls_are_outside_the_api_schema_too():
    for url in ("http://x/y", "git://x/y", "ext::sh -c id", "-u", "https://u:p@h/x",
                "https://u@h/x", "https://h:0/x", "https://h:99999/x", "ssh://u:p@h/x", "x y"):
        assert not re.fullmatch(remote.URL_PATTERN, url), url


def test_a_url_is_shown_without_credentials():
    assert remote.display("https://tok:x-oauth@github.com/me/a.git") == "https://github.com/me/a.git"


# the webhook's answers

@pytest.fixture
def fake(store, tmp_path):  # noqa: F811 - store is the fixture
    return FakeGitd(store, Settings(data_dir=tmp_path, instance="t1234567", http_port=8080))


@pytest.fixture
def following(fake, monkeypatch):
    admin = Session(fake, fake.store.get_key("admin"))
    git.follow(admin, "hello", "https://example.com/hello.git", "main")
    secret = git.webhook(admin, "hello")["secret"]
    submitted = []
    monkeypatch.setattr(git.Followers, "submit", lambda self, app: submitted.append(app) or "deploying")
    return fake, secret, submitted


def test_the_webhook_deploys_the_followed_branch_once_per_delivery(following):
    fake, secret, submitted = following
    body = push_body()
    assert git.receive_webhook(fake, "hello", github(body, secret), body) == \
        (202, {"status": "deploying", "commit": SHA})
    status, answer = git.receive_webhook(fake, "hello", github(body, secret), body)
    assert (status, answer["status"]) == (200, "ignored: delivery already received")
    assert submitted == ["hello"]
    other = push_body(branch="feature")
    assert git.receive_webhook(fake, "hello", github(other, secret, delivery="d-2"), other) == \
        (202, {"status": "ignored: branch"})
    ping = b"{}"
    assert git.receive_webhook(fake, "hello", github(ping, secret, event="ping"), ping)[0] == 200
    assert submitted == ["hello"]


def test_unknown_apps_look_like_bad_signatures(following):
    fake, secret, submitted = following
    body = push_body()
    for app in ("nope", "../hello", "HELLO", "x" * 500):
        with pytest.raises(webhooks.Unverified):
            git.receive_webhook(fake, app, github(body, secret), body)
    assert submitted == []


def test_a_rotated_secret_refuses_the_old_one(following):
    fake, secret, submitted = following
    git.webhook(Session(fake, fake.store.get_key("admin")), "hello", rotate=True)
    body = push_body()
    with pytest.raises(webhooks.Unverified):
        git.receive_webhook(fake, "hello", github(body, secret), body)
    assert submitted == []


def test_pushes_during_a_sync_collapse_into_one_more(fake, monkeypatch):
    started, release = threading.Event(), threading.Event()
    runs = []

    def sync_once(self, app):
        runs.append(app)
        started.set()
        release.wait(5)

    monkeypatch.setattr(git.Followers, "_sync_once", sync_once)
    followers = git.Followers(fake)
    assert followers.submit("hello") == "deploying"
    assert started.wait(5)
    assert [followers.submit("hello") for _ in range(3)] == ["queued"] * 3
    release.set()
    assert followers.wait_idle(5)
    assert runs == ["hello", "hello"]


# access and validation

def test_deployers_cannot_see_secrets_keys_or_change_the_url(fake):
    fake.store.grant("hello", "dev")
    dev = Session(fake, fake.store.get_key("dev"))
    with pytest.raises(PermissionDenied):
        git.webhook(dev, "hello")
    with pytest.raises(PermissionDenied):
        git.deploy_key(dev, "hello")
    with pytest.raises(PermissionDenied):
        git.sync(dev, "hello", "https://example.com/x.git")
    with pytest.raises(UsageError, match="follows no repository"):
        git.sync(dev, "hello")
    assert fake.store.get_app("hello").settings.get("source") is None


def test_create_with_a_bad_repo_makes_nothing(fake):
    admin = Session(fake, fake.store.get_key("admin"))
    with pytest.raises(UsageError):
        apps.create(admin, "other", repo_url="git://example.com/x.git")
    with pytest.raises(UsageError):
        apps.create(admin, "other", repo_url="https://example.com/x.git", branch="-x")
    assert not fake.store.app_exists("other")


def test_the_deploy_key_is_private_stable_and_goes_with_the_app(fake):
    admin = Session(fake, fake.store.get_key("admin"))
    first = git.deploy_key(admin, "hello")["public_key"]
    assert first.startswith("ssh-ed25519 ") and first.endswith(" gitd-deploy-hello")
    assert git.deploy_key(admin, "hello")["public_key"] == first
    path = git.key_path(fake.settings, "hello")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    git.forget(fake.settings, "hello")
    assert not path.exists()


def test_ssh_commands(fake):
    status, out, _ = call(fake, "git:webhook", "hello", "--json")
    hook = json.loads(out)
    assert status == 0 and len(hook["secret"]) == 64 and hook["url"].endswith(
        "/api/v1/apps/hello/webhook")
    with pytest.raises(PermissionDenied):
        call(fake, "git:webhook", "hello", key="dev")
    with pytest.raises(UsageError, match="--branch goes with --repo"):
        call(fake, "apps:create", "other", "--branch", "x")

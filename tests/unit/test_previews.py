"""Preview apps (issue #25): names from branches, the policy, config and
bounds (gitd.core.previews), their records (the store) and the push-side
logic (gitd.previews) over a fake daemon."""

import contextlib
import hashlib
import hmac
import json
import time
import types

import pytest

from gitd import gitserve, webhooks
from gitd.core import notify
from gitd.core import previews as rules
from gitd.core import validate
from gitd.core.config import Settings
from gitd.core.errors import Conflict, GitdError, PermissionDenied, UsageError
from gitd.previews import Previews
from gitd.verbs import Session, git
from gitd.verbs import previews as verbs
from tests.fakes import FakeGitd, NotifyRecorder, Pipeline, call


@pytest.mark.parametrize("branch, name", [
    ("feature/login", "hello--feature-login"),
    ("Feature/Ünïcödé.Dots", "hello--feature-unicode-dots"),
    ("--leading-dashes--", "hello--leading-dashes"),
    ("a..b//c__d", "hello--a-b-c-d"),
    ("v1.2.3", "hello--v1-2-3"),
    ("main-2", "hello--main-2"),
    ("日本語-x", "hello--x"),
])
def test_a_branch_becomes_one_dns_label(branch, name):
    assert rules.name_of("hello", branch) == name
    assert rules.split_name(name) == ("hello", name.split("--", 1)[1])


def test_a_huge_branch_name_is_cut_to_a_label_without_a_dash_at_its_end():
    name = rules.name_of("hello", "x" * 55 + "-" + "y" * 5000)  # cut after the dash
    assert name == "hello--" + "x" * 55
    assert len(rules.name_of("hello", "x" * 5000)) == 63
    longest = rules.name_of("a" * 30, "b" * 100)
    assert len(longest) == 63 and rules.split_name(longest) == ("a" * 30, "b" * 31)


@pytest.mark.parametrize("branch", ["---", "日本語", "._/_.", ""])
def test_a_branch_without_letters_or_digits_is_refused_in_words(branch):
    with pytest.raises(UsageError, match="no letter or digit to name a preview by"):
        rules.name_of("hello", branch)


def test_a_preview_name_never_is_a_plain_app_s():
    assert rules.split_name("hello") is None
    assert rules.split_name("hello--x--y") is None
    assert rules.split_name("Hello--x") is None
    assert rules.split_name("hello--" + "x" * 57) is None  # 64 characters


@pytest.mark.parametrize("text, seconds", [("7d", 7 * 86400), ("12h", 43200), ("30m", 1800),
                                           ("5s", 5), ("365d", 365 * 86400)])
def test_ttls(text, seconds):
    assert rules.ttl_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0s", "4s", "366d", "7", "d", "-1d", "1.5h", "99999999999d",
                                  "7 d", "nan", ""])
def test_bad_ttls(text):
    with pytest.raises(UsageError):
        rules.ttl_seconds(text)


@pytest.mark.parametrize("value", [0, 21, -1, "1e3", True, 2.5, "", None, [], "5000"])
def test_bad_max_counts(value):
    with pytest.raises(UsageError):
        rules.max_count(value)


def app_json(previews) -> str:
    return json.dumps({"name": "x", "previews": previews})


def test_the_policy_is_off_by_default_on_with_app_json_and_the_commands_win():
    assert rules.policy({}, None) is None
    assert rules.policy({}, json.dumps({"name": "x"})) is None
    on = rules.policy({}, app_json({"ttl": "2d", "exclude": ["DATABASE_URL"], "env": {"X": "1"}}))
    assert on == {"ttl": 2 * 86400, "max": rules.DEFAULT_MAX, "exclude": ["DATABASE_URL"],
                  "env": {"X": "1"}, "services": "shared"}
    assert rules.policy({"previews": {"enabled": False}}, app_json({})) is None
    flags = rules.policy({"previews": {"enabled": True, "max": 2, "ttl": 60}}, app_json({"max": 9}))
    assert (flags["max"], flags["ttl"]) == (2, 60)
    assert rules.policy({"previews": {"enabled": True}}, None)["ttl"] == rules.DEFAULT_TTL


@pytest.mark.parametrize("section", [
    [], "yes", {"max": 100}, {"ttl": "forever"}, {"exclude": "SECRET"}, {"exclude": ["a b"]},
    {"env": {"A": 1}}, {"env": {"bad key": "x"}}, {"env": ["A"]}, {"services": "own"},
    {"unknown": 1}, {"exclude": ["K"] * 201}, {"env": {"A": "x" * (32 * 1024 + 1)}},
    {"env": {"GITD_APP": "x"}}, {"env": {"DYNO": "web.1"}}, {"env": {"PORT": "http"}},
    {"env": {"PORT": "99999"}},
])
def test_a_broken_previews_section_is_refused(section):
    with pytest.raises(UsageError):
        rules.from_app_json(app_json(section))


@pytest.mark.parametrize("scripts", [{"postdeploy": 5}, {"postdeploy": ""}, {"postdeploy": "x" * 5000},
                                     {"postdeploy": "a\x00b"}, {"postdeploy": ["seed"]}])
def test_a_broken_postdeploy_is_refused(scripts):
    with pytest.raises(UsageError, match="scripts.postdeploy"):
        rules.from_app_json(json.dumps({"previews": {"services": "fresh"}, "scripts": scripts}))


def test_postdeploy_and_fresh_service_names():
    assert rules.postdeploy(json.dumps({"scripts": {"postdeploy": "./seed"}})) == "./seed"
    assert rules.postdeploy(json.dumps({"scripts": {}})) is None
    assert rules.postdeploy(None) is None
    name = rules.fresh_service_name("hello--x", "db")
    assert name == rules.fresh_service_name("hello--x", "db") != rules.fresh_service_name("hello--y", "db")
    assert validate.service_name(name) == name


def test_the_config_is_the_parent_s_minus_exclude_plus_env():
    policy = {"exclude": ["SECRET", "NOT_THERE"], "env": {"B": "2", "A": "override"}}
    assert rules.config_of({"A": "1", "SECRET": "s", "C": "3"}, policy) == \
        {"A": "override", "B": "2", "C": "3"}


def test_resources_are_the_lower_of_the_parent_s_and_the_preview_caps(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert rules.bounded_resources(settings, {}) == {"memory": "256m", "cpus": "0.5", "pids": "256"}
    small = {"resources": {"memory": "64m", "cpus": "0.25", "pids": "100"}}
    assert rules.bounded_resources(settings, small) == {"memory": "64m", "cpus": "0.25",
                                                        "pids": "100"}
    uncapped = Settings(data_dir=tmp_path, preview_memory="", preview_cpus="0", default_pids="")
    assert rules.bounded_resources(uncapped, {}) == {"memory": "1g", "cpus": "1", "pids": "256"}


def test_a_preview_is_granted_to_whoever_its_parent_is(store):
    store.create_app("hello--x")
    store.add_preview("hello--x", "hello", "x")
    assert not store.granted("hello--x", "dev")
    store.grant("hello", "dev")
    assert store.granted("hello--x", "dev") and store.granted("hello", "dev")
    assert not store.granted("other--x", "dev")
    with pytest.raises(Conflict):
        store.add_preview("hello--y", "hello", "x")
    store.delete_app("hello--x")
    assert store.preview("hello--x") is None and store.previews("hello") == []


class PushPipeline(Pipeline):
    def push(self, app, repo, commit, pushed_by, sink):
        self.calls.append(("push", app, commit, pushed_by))
        if self.fail:
            raise GitdError("the build failed")
        return types.SimpleNamespace(app=app, app_json=None)


class Services:
    """Services made in the store alone; their URL names them."""

    def __init__(self, store):
        self.store, self.unmade = store, []
        self.runtime = self

    def create(self, kind, name, version, emit, node=None):
        return self.store.create_service(name=name, kind=kind, version=version, image="i",
                                         password="p", volume=f"v-{name}", created_at=0.0)

    def url(self, svc):
        return f"{svc.kind}://{svc.name}"

    def unmake(self, svc, emit):
        self.unmade.append(svc.name)


class PreviewGitd(FakeGitd):
    """FakeGitd with what previews use: app creation and destruction in
    the store, a pipeline that records pushes."""

    def __init__(self, store, settings):
        super().__init__(store, settings)
        self.pipeline, self.destroyed = PushPipeline(), []
        self.previews = Previews(self)
        self.services = Services(store)

    def create_app(self, name):
        self.store.create_app(name)
        self.store.add_domains(name, [f"{name}.{self.settings.domain}"])

    def destroy_app(self, name, out):
        self.previews.destroy_all(name, out)
        fresh = self.previews.fresh_of(name)
        self.destroyed.append(name)
        self.store.delete_app(name)
        self.previews.remove_fresh(fresh, out)


@pytest.fixture
def daemon(store, tmp_path):
    store.set_config("hello", {"A": "1", "SECRET": "s"})
    return PreviewGitd(store, Settings(data_dir=tmp_path, instance="t1234567", domain="example.com"))


def push(daemon, branch, commit=b"c" * 40):
    lines = []
    return daemon.previews.push("hello", branch, None, commit, "dev", lines.append), lines


def test_a_branch_push_with_previews_off_makes_nothing(daemon):
    assert push(daemon, "feature")[0] is None
    assert daemon.store.list_apps()[-1].name == "hello" and daemon.pipeline.calls == []


def test_a_branch_push_makes_configures_and_deploys_its_preview(daemon):
    daemon.store.update_app_settings("hello", previews={"enabled": True}, build_dir="web")
    name, lines = push(daemon, "feature/x")
    assert name == "hello--feature-x"
    assert "-----> Creating preview app hello--feature-x for branch feature/x" in lines
    assert daemon.pipeline.calls == [("push", name, b"c" * 40, "dev")]
    assert daemon.store.get_config(name) == {"A": "1", "SECRET": "s"}
    settings = daemon.store.get_app(name).settings
    assert settings["build_dir"] == "web" and settings["resources"]["memory"] == "256m"
    assert daemon.store.preview(name).commit == "c" * 40
    # the parent's config changes reach the next push; stale keys go
    daemon.store.set_config("hello", {"B": "2"}, unset=["SECRET"])
    assert push(daemon, "feature/x", b"d" * 40)[0] == name
    assert daemon.store.get_config(name) == {"A": "1", "B": "2"}
    assert daemon.store.preview(name).commit == "d" * 40


def test_a_failed_first_deploy_leaves_nothing_and_a_later_one_keeps_the_preview(daemon):
    daemon.store.update_app_settings("hello", previews={"enabled": True})
    daemon.pipeline.fail = True
    with pytest.raises(GitdError, match="the build failed"):
        push(daemon, "broken")
    assert not daemon.store.app_exists("hello--broken") and daemon.store.previews() == []
    daemon.pipeline.fail = False
    push(daemon, "ok")
    daemon.pipeline.fail = True
    with pytest.raises(GitdError):
        push(daemon, "ok", b"e" * 40)
    assert daemon.store.preview("hello--ok").commit == "c" * 40


def test_clashing_branches_and_the_max_are_refused_in_words_with_nothing_made(daemon):
    daemon.store.update_app_settings("hello", previews={"enabled": True, "max": 2})
    push(daemon, "Feature.X")
    with pytest.raises(GitdError, match="branch 'feature-x' would be the preview hello--feature-x, "
                                        "which branch 'Feature.X' has already"):
        push(daemon, "feature-x")
    push(daemon, "two")
    with pytest.raises(GitdError, match="hello has 2 previews, its most"):
        push(daemon, "three")
    assert [p.branch for p in daemon.store.previews("hello")] == ["Feature.X", "two"]
    assert len(daemon.pipeline.calls) == 2


def test_a_deleted_branch_removes_its_preview_and_the_parent_takes_its_previews_along(daemon):
    daemon.store.update_app_settings("hello", previews={"enabled": True})
    push(daemon, "a")
    push(daemon, "b")
    assert daemon.previews.remove_branch("hello", "nothing", print) is None
    assert daemon.previews.remove_branch("hello", "a", print) == "hello--a"
    assert daemon.destroyed == ["hello--a"]
    daemon.destroy_app("hello", print)
    assert daemon.destroyed == ["hello--a", "hello--b", "hello"]


def test_the_reaper_removes_idle_previews_and_those_of_apps_turned_off(daemon):
    daemon.store.update_app_settings("hello", previews={"enabled": True, "ttl": 60})
    push(daemon, "old")
    created = daemon.store.preview("hello--old").updated_at
    assert daemon.previews.reap(created + 59) == []
    with daemon.locks.hold("hello", 0):  # a parent deploying is left for the next look
        assert daemon.previews.reap(created + 61) == []
    assert daemon.previews.reap(created + 61) == ["hello--old"]
    push(daemon, "new")
    daemon.store.update_app_settings("hello", previews={"enabled": False})
    assert daemon.previews.reap(created) == ["hello--new"]
    daemon.store.create_app("gone--x")  # its parent's destruction was cut short
    daemon.store.add_preview("gone--x", "gone", "x")
    assert daemon.previews.reap(created) == ["gone--x"]


def session(daemon, key="admin"):
    return Session(daemon, daemon.store.get_key(key))


def test_enable_is_an_admin_s_and_a_granted_deployer_lists_and_destroys(daemon):
    with pytest.raises(PermissionDenied):
        verbs.enable(session(daemon, "dev"), "hello")
    assert verbs.enable(session(daemon), "hello", "1h", "3")["max"] == 3
    assert verbs.enable(session(daemon), "hello")["ttl_seconds"] == 3600  # kept
    push(daemon, "x")
    with pytest.raises(PermissionDenied):
        verbs.list_previews(session(daemon, "dev"), "hello")
    daemon.store.grant("hello", "dev")
    listed = verbs.list_previews(session(daemon, "dev"), "hello")
    assert [(p["name"], p["url"]) for p in listed["previews"]] == \
        [("hello--x", "http://hello--x.example.com")]
    with pytest.raises(UsageError, match="is a preview app"):
        verbs.enable(session(daemon), "hello--x")
    with pytest.raises(GitdError, match="hello has no preview of branch 'y'"):
        verbs.destroy(session(daemon, "dev"), "hello", "y")
    assert verbs.destroy(session(daemon, "dev"), "hello", "x")["removed"] == "hello--x"
    push(daemon, "z")
    assert verbs.disable(session(daemon), "hello")["removed"] == ["hello--z"]
    assert verbs.show_policy(session(daemon), "hello") == {"app": "hello", "enabled": False}


def test_apps_list_marks_previews_and_shows_a_deployer_those_of_its_apps(daemon):
    daemon.store.update_app_settings("hello", previews={"enabled": True})
    push(daemon, "x")
    daemon.store.grant("hello", "dev")
    status, out, _ = call(daemon, "apps:list", key="dev")
    assert status == 0 and out.splitlines() == ["hello  (not deployed)",
                                                "hello--x  (not deployed)  (preview of hello)"]
    with pytest.raises(UsageError, match="'--' is kept for preview apps"):
        call(daemon, "apps:create", "a--b")


# pull (merge) requests from a forge's webhook

def pull_body(action, number=7, sha="a" * 40, head_repo=1, base_repo=1) -> bytes:
    """GitHub's shape (Gitea's has the same `repo` objects, and `repo_id`)."""
    return json.dumps({"action": action, "number": number,
                       "pull_request": {"head": {"sha": sha, "repo": {"id": head_repo}},
                                        "base": {"repo": {"id": base_repo}}}}).encode()


def signed(body: bytes, secret: str, event="pull_request", delivery="d-1", forge="github") -> dict:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if forge == "gitea":
        return {"X-Gitea-Event": event, "X-Gitea-Delivery": delivery, "X-Gitea-Signature": sig}
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={sig}"}


def test_each_forge_s_pull_request_events_are_read():
    secret = "s"
    for forge in ("github", "gitea"):
        body = pull_body("opened")
        read = webhooks.read(signed(body, secret, forge=forge), body, secret)
        assert (read.event, read.branch, read.commit, read.ref, read.action) == \
            ("pull_request", "pr-7", "a" * 40, "refs/pull/7/head", "update")
        body = pull_body("closed")
        assert webhooks.read(signed(body, secret, forge=forge), body, secret).action == "close"
    body = json.dumps({"object_attributes": {"iid": 3, "action": "update",
                                             "source_project_id": 5, "target_project_id": 5,
                                             "last_commit": {"id": "b" * 40}}}).encode()
    read = webhooks.read({"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": secret},
                         body, secret)
    assert (read.branch, read.commit, read.ref) == ("pr-3", "b" * 40, "refs/merge-requests/3/head")
    body = pull_body("labeled")
    assert webhooks.read(signed(body, secret), body, secret).event == "pull_request-ignored"
    for hostile in (pull_body("opened", number=True), pull_body("opened", number="7"),
                    pull_body("opened", number=-1), pull_body("opened", number=10**10),
                    pull_body("opened", sha="--upload-pack=x"), b'{"action": "opened"}'):
        with pytest.raises(GitdError):
            webhooks.read(signed(hostile, secret), hostile, secret)


def test_a_pull_request_from_a_fork_deploys_nothing():
    """Anyone may open a pull request from a fork of a public repository: its
    code must not run as a preview with the app's config and services."""
    secret = "s"
    forks = [pull_body("opened", head_repo=2), pull_body("synchronize", head_repo=None),
             json.dumps({"action": "opened", "number": 7, "pull_request": {
                 "head": {"sha": "a" * 40}, "base": {"repo": {"id": 1}}}}).encode()]
    for body in forks:
        assert webhooks.read(signed(body, secret), body, secret).event == \
            "pull_request-from-a-fork"
    gitea = json.dumps({"action": "opened", "number": 7, "pull_request": {
        "head": {"sha": "a" * 40, "repo_id": 9}, "base": {"repo_id": 4}}}).encode()
    assert webhooks.read(signed(gitea, secret, forge="gitea"), gitea, secret).event == \
        "pull_request-from-a-fork"
    same = gitea.replace(b'"repo_id": 9', b'"repo_id": 4')
    assert webhooks.read(signed(same, secret, forge="gitea"), same, secret).event == \
        "pull_request"
    gitlab = json.dumps({"object_attributes": {"iid": 3, "action": "open",
                                               "source_project_id": 8, "target_project_id": 5,
                                               "last_commit": {"id": "b" * 40}}}).encode()
    assert webhooks.read({"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": secret},
                         gitlab, secret).event == "pull_request-from-a-fork"
    closed = pull_body("closed", head_repo=2)  # nothing of a fork's was made: nothing to undo
    assert webhooks.read(signed(closed, secret), closed, secret).action == "close"


@pytest.fixture
def following(daemon, monkeypatch):
    admin = Session(daemon, daemon.store.get_key("admin"))
    git.follow(admin, "hello", "https://example.com/hello.git", "main")
    secret = git.webhook(admin, "hello")["secret"]
    fetched = []
    monkeypatch.setattr(git, "fetch", lambda gitd, app, url, ref, progress:
                        fetched.append(ref) or "f" * 40)
    monkeypatch.setattr(gitserve, "open_repo", lambda repos_dir, app: type(
        "Repo", (), {"close": lambda self: None})())
    daemon.using_repo = lambda app: contextlib.nullcontext()
    return daemon, secret, fetched


def deliver(daemon, secret, body, delivery):
    answer = git.receive_webhook(daemon, "hello", signed(body, secret, delivery=delivery), body)
    deadline = time.monotonic() + 5
    while not daemon.previews.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    return answer


def test_a_pull_request_opens_updates_and_closes_its_preview(following):
    daemon, secret, fetched = following
    assert deliver(daemon, secret, pull_body("opened"), "d-1") == \
        (202, {"status": "ignored: previews off"})
    daemon.store.update_app_settings("hello", previews={"enabled": True})
    assert deliver(daemon, secret, pull_body("opened"), "d-2") == \
        (202, {"status": "deploying", "branch": "pr-7", "commit": "a" * 40})
    assert fetched == ["refs/pull/7/head"]
    assert daemon.pipeline.calls == [("push", "hello--pr-7", b"f" * 40, "webhook")]
    assert deliver(daemon, secret, pull_body("opened"), "d-2")[1]["status"] == \
        "ignored: delivery already received"
    deliver(daemon, secret, pull_body("synchronize", sha="c" * 40), "d-3")
    assert len(daemon.pipeline.calls) == 2
    assert deliver(daemon, secret, pull_body("closed"), "d-4") == \
        (202, {"status": "removing", "branch": "pr-7"})
    assert not daemon.store.app_exists("hello--pr-7") and daemon.destroyed == ["hello--pr-7"]


def test_a_fork_s_pull_request_is_neither_fetched_nor_deployed(following):
    daemon, secret, fetched = following
    daemon.store.update_app_settings("hello", previews={"enabled": True})
    assert deliver(daemon, secret, pull_body("opened", head_repo=2), "d-1") == \
        (202, {"status": "ignored: event pull_request-from-a-fork"})
    assert fetched == [] and daemon.pipeline.calls == []
    assert not daemon.store.app_exists("hello--pr-7")


def linked(daemon):
    daemon.services.create("postgres", "db", "15", print)
    daemon.store.add_link("db", "hello", "DATABASE_URL")
    daemon.services.create("redis", "cache", "7", print)
    daemon.store.add_link("cache", "hello", "REDIS_URL")
    daemon.store.set_config("hello", {"DATABASE_URL": "postgres://db", "REDIS_URL": "redis://cache"})


def test_a_shared_preview_links_the_parent_s_services_it_keeps(daemon):
    linked(daemon)
    daemon.store.update_app_settings("hello", previews={"enabled": True})
    name = push(daemon, "x")[0]
    assert daemon.store.links_of_app(name) == {"cache": "REDIS_URL", "db": "DATABASE_URL"}
    rules_json = json.dumps({"previews": {"exclude": ["DATABASE_URL"]}})
    daemon.store.new_release("hello", kind="push", status="succeeded", app_json=rules_json)
    daemon.store.set_live("hello", 1, 1)
    push(daemon, "x", b"d" * 40)
    assert daemon.store.links_of_app(name) == {"cache": "REDIS_URL"}  # no network to the database
    assert "DATABASE_URL" not in daemon.store.get_config(name)


def test_a_fresh_preview_gets_empty_services_of_its_own_and_they_go_with_it(daemon):
    linked(daemon)
    rules_json = json.dumps({"previews": {"services": "fresh"}})
    daemon.store.new_release("hello", kind="push", status="succeeded", app_json=rules_json)
    daemon.store.set_live("hello", 1, 1)
    name = push(daemon, "x")[0]
    own = {rules.fresh_service_name(name, "db"): "DATABASE_URL",
           rules.fresh_service_name(name, "cache"): "REDIS_URL"}
    assert daemon.store.links_of_app(name) == own
    config = daemon.store.get_config(name)
    assert config["DATABASE_URL"] == f"postgres://{rules.fresh_service_name(name, 'db')}"
    assert config["REDIS_URL"] == f"redis://{rules.fresh_service_name(name, 'cache')}"
    assert daemon.store.links_of_service("db") == {"hello": "DATABASE_URL"}  # not the parent's
    daemon.previews.remove_branch("hello", "x", print)
    assert sorted(daemon.services.unmade) == sorted(own)
    assert {s.name for s in daemon.store.list_services()} == {"db", "cache"}


def test_a_preview_made_and_removed_is_told_to_the_parents_notifications(daemon):
    daemon.store.update_app_settings("hello", previews={"enabled": True})
    with notify.installed(NotifyRecorder()) as heard:
        daemon.pipeline.fail = True
        with pytest.raises(GitdError):
            push(daemon, "broken")  # never was: nothing told
        daemon.pipeline.fail = False
        name = push(daemon, "feature")[0]
        push(daemon, "feature", b"d" * 40)  # an update is not a creation
        daemon.previews.remove_branch("hello", "feature", lambda line: None)
    assert [(a, e, d["preview"], d["branch"]) for a, e, d in heard.events] == [
        ("hello", "preview.created", name, "feature"), ("hello", "preview.removed", name, "feature")]


@pytest.mark.parametrize("branch, kept", [
    ("pr-7", True), ("PR/7", True), ("pr_12", True), ("pr-7-fix", False), ("april-7", False),
    ("pr-", False), ("pr", False)])
def test_branches_named_like_a_pull_requests_preview_are_kept_for_it(branch, kept):
    assert rules.pull_request_label(branch) is kept
    assert rules.pull_request_label(rules.pull_branch(7))

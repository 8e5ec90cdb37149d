"""Found attacking the HTTP API (review of issue #23's surface): each test
failed before its fix. The API runs in-process (aiohttp's test server) over
a real store; nothing reaches Docker."""

import asyncio
import os
import subprocess
import contextlib
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

from gitd import gitserve
from gitd.api import build_app, routing
from gitd.core.config import Settings
from gitd.core.errors import GitdError, UsageError
from gitd.core.store import Store
from gitd.verbs import Session, deployments, tokens
from hooks import remote
from hooks.deployments import Deployments
from hooks.locks import AppLocks
from tests.fakes import StoreGitd


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gitd.db")
    s.add_key("admin", "SHA256:admin", "ssh-ed25519 AAAA admin", True)
    s.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    s.create_app("hello")
    s.grant("hello", "dev")
    return s


def token(gitd, key: str) -> str:
    return tokens.create(Session(gitd, gitd.store.get_key(key)))["token"]


def requests(gitd, *asked: tuple[str, str, str]) -> list[tuple[int, dict]]:
    """(method, path, token) each, in order: (status, JSON answer) each."""
    async def run():
        async with TestClient(TestServer(build_app(gitd))) as client:
            answers = []
            for method, path, presented in asked:
                response = await client.request(
                    method, path, headers={"Authorization": f"Bearer {presented}"})
                answers.append((response.status, await response.json()))
            return answers
    return asyncio.run(run())


@pytest.mark.parametrize("raw", ["²", "%C2%B2", "١", "1²", "𝟙"])
def test_a_deployment_id_of_unicode_digits_is_a_400_not_a_500(store, raw):
    gitd = StoreGitd(store)
    dev = token(gitd, "dev")
    answers = requests(gitd, ("GET", f"/api/v1/deployments/{raw}", dev),
                       ("GET", f"/api/v1/deployments/{raw}/log", dev))
    for status, answer in answers:
        assert status == 400, answer
        assert "deployment's number" in answer["error"]


# following a repository: what reaches git's argv

@pytest.mark.parametrize("url", ["https://ghp_SECRET@github.com/me/x.git",
                                 "https://oauth2:@gitlab.com/me/x.git",
                                 "https://x-access-token@github.com/me/x.git"])
def test_an_https_url_with_a_user_is_refused_it_would_be_in_gits_argv(url):
    with pytest.raises(UsageError, match="no credential"):
        remote.url_kind(url)


def test_an_ssh_login_name_is_still_fine():
    assert remote.url_kind("ssh://git@github.com/me/x.git") == "ssh"


@pytest.mark.parametrize("ref", ["main\n", "v1.0\n"])
def test_a_ref_with_a_final_newline_is_refused(ref):
    with pytest.raises(UsageError):
        remote.check_ref(ref)


# live logs (server-sent events) and the verb threads

class DeployingGitd(StoreGitd):
    """hello's deployment 1 pending: its log is followed live, forever."""

    def __init__(self, store):
        super().__init__(store)
        self.deployments = Deployments(store, 10_000)
        self.pending = self.deployments.create("hello", "api", by="dev")


def test_live_log_followers_are_capped_and_never_starve_the_other_requests(store):
    """Each follower used to hold a thread of the verbs' pool (16) while it
    waited for lines: a few dozen of them made every request (the token
    check too) wait seconds in the queue behind them."""
    gitd = DeployingGitd(store)
    dev, admin = token(gitd, "dev"), token(gitd, "admin")
    live = {"Authorization": f"Bearer {dev}", "Accept": "text/event-stream"}

    async def run():
        async with TestClient(TestServer(build_app(gitd))) as client:
            followers = [await client.get(f"/api/v1/deployments/{gitd.pending.id}/log",
                                          headers=live) for _ in range(40)]
            started = time.monotonic()
            listed = await client.get("/api/v1/apps", headers={"Authorization": f"Bearer {admin}"})
            took = time.monotonic() - started
            statuses = sorted(f.status for f in followers)
            refused = next(f for f in followers if f.status == 429)
            answer = (await refused.json(), refused.headers.get("Retry-After"))
            for follower in followers:
                follower.close()
            again = 429
            for _ in range(30):  # a follower whose client left gives its slot back
                retry = await client.get(f"/api/v1/deployments/{gitd.pending.id}/log",
                                         headers=live)
                again = retry.status
                retry.close()
                if again == 200:
                    break
                await asyncio.sleep(0.2)
            assert again == 200
            return listed.status, took, statuses, answer

    status, took, statuses, (refusal, retry_after) = asyncio.run(run())
    assert status == 200 and took < 1.0, took
    assert statuses == [200] * routing.FOLLOWERS_PER_KEY + [429] * (40 - routing.FOLLOWERS_PER_KEY)
    assert "live logs" in refusal["error"] and int(retry_after) >= 1


# a deploy of a ref: whose code it is decides how it builds

class RefDeployGitd(StoreGitd):
    """hello's repository with main at one commit, a pipeline that records
    how it was asked to build."""

    def __init__(self, store, tmp_path):
        super().__init__(store)
        self.settings = Settings(data_dir=tmp_path, instance="t")
        self.settings.repos_dir.mkdir(parents=True, exist_ok=True)
        repo = Repo.init_bare(str(gitserve.repo_path(self.settings.repos_dir, "hello")), mkdir=True)
        blob = Blob.from_string(b"FROM scratch\n")
        tree = Tree()
        tree.add(b"Dockerfile", 0o100644, blob.id)
        commit = Commit()
        commit.tree, commit.message = tree.id, b"deployer's code"
        commit.author = commit.committer = b"t <t@example.com>"
        commit.commit_time = commit.author_time = commit.commit_timezone = commit.author_timezone = 0
        for obj in (blob, tree, commit):
            repo.object_store.add_object(obj)
        repo.refs[b"refs/heads/main"] = commit.id
        self.commit = commit.id.decode()
        self.deployments = Deployments(store, 10_000)
        self.locks = AppLocks()
        self.built = []
        self.pipeline = self

    @contextlib.contextmanager
    def using_repo(self, app):
        yield

    def app_lock(self, app, notify=None):
        return self.locks.hold(app, 1.0)

    def push(self, app, repo, commit, by, sink, trigger, deployment, trusted=None):
        self.built.append((by, trusted))
        self.deployments.cancel(deployment, "recorded")


def deploy_main(gitd, key: str):
    row = deployments.create(Session(gitd, gitd.store.get_key(key)), "hello")
    for _ in range(100):
        if gitd.built:
            return gitd.built.pop()
        time.sleep(0.02)
    raise AssertionError(f"deployment {row['id']} never built")


def test_an_admins_deploy_of_a_deployers_commit_builds_as_a_deployers_push(store, tmp_path):
    """The app's main may hold what a deployer pushed: an admin's token asking
    for a deploy used to build it as an admin's push (Nix unsandboxed, an
    image script run on the host), a way from deployer to root."""
    gitd = RefDeployGitd(store, tmp_path)
    store.new_release("hello", kind="push", commit=gitd.commit, pushed_by="dev", status="succeeded")
    assert deploy_main(gitd, "admin") == ("admin", False)
    assert deploy_main(gitd, "dev") == ("dev", False)


def test_an_admins_deploy_of_a_commit_an_admin_pushed_still_builds_as_an_admins(store, tmp_path):
    gitd = RefDeployGitd(store, tmp_path)
    store.new_release("hello", kind="push", commit=gitd.commit, pushed_by="admin", status="failed")
    assert deploy_main(gitd, "admin") == ("admin", True)
    assert deploy_main(gitd, "dev") == ("dev", False)
    store.add_key("old", "SHA256:old", "ssh-ed25519 AAAA old", True)
    store.remove_key("admin")  # the admin who pushed it is gone: nobody vouches now
    assert deploy_main(gitd, "old") == ("old", False)


# bodies: a nullable field (a list of types) is checked, not a 500

NULLABLE = {"type": "object", "properties": {"value": routing.nullable(routing.STRING),
                                              "n": routing.nullable({**routing.INTEGER, "maximum": 3})}}


@pytest.mark.parametrize("body", [{"value": None}, {"value": "x"}, {"n": None}, {"n": 3}])
def test_a_nullable_field_takes_null_or_its_type(body):
    routing.check(body, NULLABLE, "body")


@pytest.mark.parametrize("body", [{"value": 1}, {"value": []}, {"n": True}, {"n": 4}, {"n": "1"}])
def test_a_nullable_field_refuses_anything_else_as_a_usage_error(body):
    with pytest.raises(UsageError):
        routing.check(body, NULLABLE, "body")


def test_a_live_log_stops_once_its_key_loses_the_app(store, monkeypatch):
    """A follower kept streaming a deployment's log after its grant was
    revoked or its key removed (`logs -f` stops within seconds)."""
    monkeypatch.setattr(deployments, "ACCESS_CHECK", 0.0)
    gitd = DeployingGitd(store)
    dev = Session(gitd, store.get_key("dev"))
    lines = deployments.follow(dev, gitd.pending.id)
    assert next(lines) == ""  # pending: nothing yet, it goes on
    store.revoke("hello", "dev")
    assert next(lines, None) is None
    store.grant("hello", "dev")
    lines = deployments.follow(dev, gitd.pending.id)
    assert next(lines) == ""
    store.remove_key("dev")
    assert next(lines, None) is None


def test_a_huge_upstream_stops_at_max_repo_bytes_not_at_a_full_disk(tmp_path):
    """The repository's size was checked only after the fetch: an upstream of
    any size was written to disk first."""
    upstream = tmp_path / "upstream"
    subprocess.run(["git", "init", "-q", "-b", "main", str(upstream)], check=True)
    (upstream / "big").write_bytes(os.urandom(3 * 1024 * 1024))  # random: no compression
    subprocess.run(["git", "-C", str(upstream), "add", "big"], check=True)
    subprocess.run(["git", "-C", str(upstream), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "big"], check=True)
    mine = tmp_path / "hello.git"
    subprocess.run(["git", "init", "-q", "--bare", str(mine)], check=True)
    with pytest.raises(GitdError, match="larger than max_repo_bytes"):
        remote.fetch(mine, str(upstream), "main", None, 60, max_file_bytes=1024 * 1024)
    assert sum(f.stat().st_size for f in mine.rglob("*") if f.is_file()) < 1024 * 1024 + 100_000
    assert len(remote.fetch(mine, str(upstream), "main", None, 60, max_file_bytes=8 * 1024 * 1024)) == 40


def test_a_fetch_of_many_small_objects_is_one_bounded_pack(tmp_path):
    """Loose objects (fewer than git's unpackLimit) are each a file under the
    limit, and together past it."""
    upstream = tmp_path / "upstream"
    subprocess.run(["git", "init", "-q", "-b", "main", str(upstream)], check=True)
    for i in range(20):
        (upstream / f"f{i}").write_bytes(os.urandom(200 * 1024))
    subprocess.run(["git", "-C", str(upstream), "add", "."], check=True)
    subprocess.run(["git", "-C", str(upstream), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "many"], check=True)
    mine = tmp_path / "hello.git"
    subprocess.run(["git", "init", "-q", "--bare", str(mine)], check=True)
    with pytest.raises(GitdError, match="larger than max_repo_bytes"):
        remote.fetch(mine, str(upstream), "main", None, 60, max_file_bytes=1024 * 1024)


def test_a_live_log_ends_once_its_token_is_revoked(store, monkeypatch):
    monkeypatch.setattr(deployments, "ACCESS_CHECK", 0.0)
    gitd = DeployingGitd(store)
    made = tokens.create(Session(gitd, store.get_key("dev")), "live")

    async def run():
        async with TestClient(TestServer(build_app(gitd))) as client:
            follower = await client.get(
                f"/api/v1/deployments/{gitd.pending.id}/log",
                headers={"Authorization": f"Bearer {made['token']}", "Accept": "text/event-stream"})
            assert follower.status == 200
            tokens.revoke(Session(gitd, store.get_key("dev")), "live")
            return await asyncio.wait_for(follower.read(), 10)  # it ends: all was read

    assert b"event: end" not in asyncio.run(run())

"""Apps that follow a repository elsewhere: apps:create --repo and git:sync,
end to end (a local path, which only admins may give)."""

import hashlib
import hmac
import json
import subprocess
import time

import pytest

from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, git, make_key, make_repo, unique_app

pytestmark = pytest.mark.e2e


def bare_clone(repo, path):
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(path)], check=True)
    return path


def publish(repo, bare):
    git(repo, "push", "-q", str(bare), "main")


def test_git_sync_deploys_the_followed_branch_and_moves_main_only_on_success(gitd, tmp_path):
    app = unique_app("follow")
    upstream = make_repo(tmp_path / "up", web_app("synced v1"))
    bare = bare_clone(upstream, tmp_path / "up.git")
    created = gitd.ssh("apps:create", app, "--repo", str(bare))
    assert created.returncode == 0, created.stderr
    assert f"follows {bare} main" in created.stdout

    first = gitd.ssh("git:sync", app)
    assert first.returncode == 0, first.stderr
    assert f"-----> Fetching main from {bare}" in first.stdout
    assert gitd.get(gitd.host(app)) == (200, "synced v1\n")
    again = gitd.ssh("git:sync", app)
    assert again.returncode == 0 and "nothing to deploy" in again.stdout

    v2 = commit(upstream, web_app("synced v2"), "v2")
    publish(upstream, bare)
    second = gitd.ssh("git:sync", app)
    assert second.returncode == 0, second.stderr
    assert gitd.get(gitd.host(app)) == (200, "synced v2\n")
    main = subprocess.run(["git", "ls-remote", gitd.remote(app), "refs/heads/main"], cwd=upstream,
                          env=gitd.git_env(), capture_output=True, text=True).stdout.split()[0]
    assert main == v2

    commit(upstream, {"Dockerfile": "FROM gitd-test/busybox:latest\nRUN exit 3\n"}, "broken")
    publish(upstream, bare)
    broken = gitd.ssh("git:sync", app)
    assert broken.returncode != 0 and "RUN exit 3" in broken.stdout + broken.stderr
    assert gitd.get(gitd.host(app)) == (200, "synced v2\n")
    main_after = subprocess.run(["git", "ls-remote", gitd.remote(app), "refs/heads/main"],
                                cwd=upstream, env=gitd.git_env(), capture_output=True,
                                text=True).stdout.split()[0]
    assert main_after == v2

    missing = gitd.ssh("git:sync", app, str(tmp_path / "nowhere.git"))
    assert missing.returncode != 0 and "could not fetch main" in missing.stderr
    info = gitd.ssh("apps:info", app)
    assert f"follows:    {bare} main" in info.stdout  # a failed sync follows nothing new


def test_deployers_sync_only_what_an_admin_set(gitd, tmp_path):
    app = unique_app("follow")
    assert gitd.ssh("apps:create", app).returncode == 0
    dev = f"dev-{app}"
    dev_key = make_key(tmp_path, dev)
    assert gitd.ssh("keys:add", dev, input=(tmp_path / f"{dev}.pub").read_text()).returncode == 0
    assert gitd.ssh("apps:grant", app, dev).returncode == 0
    refused = gitd.ssh("git:sync", app, "/etc", key=dev_key)
    assert refused.returncode != 0 and "only admins" in refused.stderr
    nothing = gitd.ssh("git:sync", app, key=dev_key)
    assert nothing.returncode != 0 and "follows no repository" in nothing.stderr
    for url in ("git://127.0.0.1/x.git", "http://127.0.0.1/x.git", "ext::sh -c id", "--upload-pack=id"):
        bad = gitd.ssh("git:sync", app, url)
        assert bad.returncode != 0, url
    assert gitd.ssh("apps:info", app).stdout.count("follows:") == 0


def test_git_sync_over_ssh_with_the_apps_deploy_key(gitd, tmp_path):
    """The upstream is another app on this same gitd, reached over its SSH
    port: the follower's deploy key is a deployer key granted on it."""
    upstream_app, app = unique_app("upstream"), unique_app("follow")
    assert gitd.ssh("apps:create", upstream_app).returncode == 0
    source = make_repo(tmp_path / "src", web_app("over ssh"))
    assert gitd.push(source, upstream_app).returncode == 0
    assert gitd.ssh("apps:create", app).returncode == 0
    shown = gitd.ssh("git:deploy-key", app)
    assert shown.returncode == 0 and shown.stdout.startswith("ssh-ed25519 ")
    url = f"ssh://git@127.0.0.1:{gitd.ssh_port}/{upstream_app}"
    before = gitd.ssh("git:sync", app, url)
    assert before.returncode != 0 and "could not fetch main" in before.stderr  # not granted yet

    key_name = f"deploy-{app}"
    assert gitd.ssh("keys:add", key_name, input=shown.stdout).returncode == 0
    assert gitd.ssh("apps:grant", upstream_app, key_name).returncode == 0
    synced = gitd.ssh("git:sync", app, url)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert gitd.get(gitd.host(app)) == (200, "over ssh\n")
    assert f"follows:    {url} main" in gitd.ssh("apps:info", app).stdout
    destroyed = gitd.ssh("apps:destroy", app, "--force")
    assert destroyed.returncode == 0
    assert not (gitd.data_dir / "deploy-keys" / app).exists()


def signed_push(secret: str, branch: str, after: str, delivery: str) -> tuple[bytes, dict]:
    body = json.dumps({"ref": f"refs/heads/{branch}", "after": after}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
                  "X-Hub-Signature-256": f"sha256={signature}"}


def wait_deployment(api, token: str, deployment: int, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, row, _ = api.request("GET", f"/api/v1/deployments/{deployment}", token)
        assert status == 200, row
        if row["status"] in ("succeeded", "failed", "cancelled"):
            return row
        time.sleep(0.5)
    raise AssertionError(f"deployment {deployment} did not end: {row}")


def webhook_deployments(gitd, app: str) -> list[tuple[str, str]]:
    with gitd.db() as db:
        return db.execute("SELECT trigger, status FROM deployments WHERE app = ? ORDER BY id",
                          [app]).fetchall()


def test_a_signed_push_webhook_deploys_the_followed_branch(gitd, api, tmp_path):
    app = unique_app("hook")
    upstream = make_repo(tmp_path / "up", web_app("hooked v1"))
    bare = bare_clone(upstream, tmp_path / "up.git")
    assert gitd.ssh("apps:create", app, "--repo", str(bare)).returncode == 0
    hook = json.loads(gitd.ssh("git:webhook", app, "--json").stdout)
    path = f"/api/v1/apps/{app}/webhook"
    v1 = git(upstream, "rev-parse", "HEAD").strip()

    body, headers = signed_push("not the secret", "main", v1, "d-0")
    assert api.request("POST", path, raw=body, headers=headers)[0] == 401
    body, headers = signed_push(hook["secret"], "main", v1, "d-0")
    assert api.request("POST", path, raw=body, headers={**headers, "X-Hub-Signature-256": ""})[0] == 401
    assert webhook_deployments(gitd, app) == []  # nothing fetched

    ping = b'{"zen": "hi"}'
    ping_headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "p-1", "X-Hub-Signature-256":
                    "sha256=" + hmac.new(hook["secret"].encode(), ping, hashlib.sha256).hexdigest()}
    assert api.request("POST", path, raw=ping, headers=ping_headers)[:2] == (200, {"status": "pong"})
    body, headers = signed_push(hook["secret"], "feature", v1, "d-1")
    assert api.request("POST", path, raw=body, headers=headers)[:2] == \
        (202, {"status": "ignored: branch"})

    body, headers = signed_push(hook["secret"], "main", v1, "d-2")
    status, answer, _ = api.request("POST", path, raw=body, headers=headers)
    assert (status, answer["status"]) == (202, "deploying")
    assert gitd.wait_for(gitd.host(app), "hooked v1\n", timeout=180)[0] == 200
    again = api.request("POST", path, raw=body, headers=headers)
    assert again[:2] == (200, {"status": "ignored: delivery already received"})

    v2 = commit(upstream, web_app("hooked v2"), "v2")
    publish(upstream, bare)
    body, headers = signed_push(hook["secret"], "main", v2, "d-3")
    assert api.request("POST", path, raw=body, headers=headers)[0] == 202
    assert gitd.wait_for(gitd.host(app), "hooked v2\n", timeout=180)[0] == 200
    deadline = time.monotonic() + 30
    while webhook_deployments(gitd, app)[-1:] != [("webhook", "succeeded")] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert webhook_deployments(gitd, app) == [("webhook", "succeeded"), ("webhook", "succeeded")]


def test_an_app_created_over_the_api_with_a_repo_url_deploys_at_once(gitd, api, tmp_path):
    app = unique_app("apirepo")
    upstream = make_repo(tmp_path / "up", web_app("from the api"))
    bare = bare_clone(upstream, tmp_path / "up.git")
    body = {"name": app, "repo_url": str(bare), "branch": "main"}
    assert api.request("POST", "/api/v1/apps", api.deployer, body=body)[0] == 403
    assert not gitd.ssh("apps:info", app).returncode == 0
    status, created, _ = api.request("POST", "/api/v1/apps", api.admin, body=body)
    assert status == 201 and created["follows"] == {"url": str(bare), "branch": "main"}
    assert created["deployment"]["status"] == "pending"
    assert created["deployment"]["trigger"] == "api"
    row = wait_deployment(api, api.admin, created["deployment"]["id"])
    assert row["status"] == "succeeded", row["log"]
    assert "-----> Fetching main from" in row["log"]
    assert gitd.get(gitd.host(app)) == (200, "from the api\n")
    bad = {"name": unique_app("apirepo"), "repo_url": "git://127.0.0.1/x.git"}
    assert api.request("POST", "/api/v1/apps", api.admin, body=bad)[0] == 400
    assert gitd.ssh("apps:info", bad["name"]).returncode != 0

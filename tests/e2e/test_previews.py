"""Preview apps (issue #25), end to end: real git pushes of branches, real
gitd, Docker and Traefik."""

import hashlib
import hmac
import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import commit, git, make_repo, unique_app

pytestmark = pytest.mark.e2e


def env_app(version: str, app_json: dict | None = None) -> dict:
    """A busybox httpd app answering `version` at / and its config at /env.txt."""
    files = {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest\n"
        f"RUN mkdir -p /www && echo '{version}' > /www/index.html\n"
        'CMD ["sh", "-c", "echo \\"A=$A B=$B SECRET=$SECRET\\" > /www/env.txt; '
        'exec httpd -f -p $PORT -h /www"]\n')}
    if app_json is not None:
        files["app.json"] = json.dumps(app_json)
    return files


def app_rows(gitd, app: str) -> list:
    with gitd.db() as db:
        return db.execute("SELECT name FROM apps WHERE name = ? OR name LIKE ? ORDER BY name",
                          [app, f"{app}--%"]).fetchall()


def gone_from_traefik(gitd, host: str, timeout: float = 15.0) -> int:
    """The status at `host` once its routes went (Traefik reloads its files)."""
    deadline = time.monotonic() + timeout
    while gitd.get(host)[0] != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    return gitd.get(host)[0]


def test_a_branch_push_deploys_a_preview_with_the_parent_config_and_a_deletion_removes_it(
        gitd, docker_client, tmp_path):
    app = unique_app("pv")
    assert gitd.ssh("apps:create", app).returncode == 0
    assert gitd.ssh("config:set", "--no-restart", app, "A=1", "SECRET=prod-only").returncode == 0
    rules = {"previews": {"exclude": ["SECRET"], "env": {"B": "2"}}}
    repo = make_repo(tmp_path / "app", env_app("prod", rules))
    main = gitd.push(repo, app)
    assert main.returncode == 0, main.stderr

    git(repo, "checkout", "-q", "-b", "Feature/Ünï.x")
    commit(repo, env_app("preview v1", rules), "preview v1")
    first = gitd.push(repo, app, "Feature/Ünï.x")
    assert first.returncode == 0, first.stderr
    preview = f"{app}--feature-uni-x"
    assert f"Creating preview app {preview}" in first.stderr
    host = gitd.host(preview)
    assert gitd.get(host) == (200, "preview v1\n")
    assert gitd.get(host, "/env.txt") == (200, "A=1 B=2 SECRET=\n")
    assert gitd.get(gitd.host(app)) == (200, "prod\n")  # production untouched
    (container,) = gitd.live_containers(docker_client, preview)
    assert container.attrs["HostConfig"]["Memory"] == 256 * 2**20  # setting preview_memory
    assert container.attrs["HostConfig"]["NanoCpus"] == 500_000_000

    listed = gitd.ssh("previews", app, "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["enabled"] is True and data["exclude"] == ["SECRET"]
    (row,) = data["previews"]
    assert row["branch"] == "Feature/Ünï.x" and row["name"] == preview
    assert row["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert row["url"] == f"http://{preview}.localhost:{gitd.http_port}"
    apps = json.loads(gitd.ssh("apps:list", "--json").stdout)
    assert {"name": preview, "release": 1, "preview_of": app} in apps
    token = gitd.ssh("tokens:create").stdout.strip().splitlines()[-1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{gitd.gitd_api_port}/api/v1/apps/{app}/previews",
        headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        over_http = json.load(answer)
    assert over_http["previews"][0]["name"] == preview
    assert {**over_http, "previews": None} == {**data, "previews": None}

    commit(repo, env_app("preview v2", rules), "preview v2")
    second = gitd.push(repo, app, "Feature/Ünï.x")
    assert second.returncode == 0, second.stderr
    assert gitd.get(host) == (200, "preview v2\n")

    # another branch sanitising to the same name is refused in words, nothing made
    git(repo, "checkout", "-q", "-b", "feature-uni-x")
    clash = gitd.push(repo, app, "feature-uni-x")
    assert clash.returncode != 0
    assert f"would be the preview {preview}, which branch 'Feature/Ünï.x' has already" \
        in clash.stderr
    assert len(app_rows(gitd, app)) == 2

    gone = gitd.push(repo, app, ":Feature/Ünï.x")
    assert gone.returncode == 0, gone.stderr
    assert f"Removing preview app {preview}" in gone.stderr
    assert app_rows(gitd, app) == [(app,)]
    assert gitd.containers(docker_client, preview) == []
    assert docker_client.images.list(name=f"gitd/{preview}") == []
    assert gone_from_traefik(gitd, host) == 404
    assert json.loads(gitd.ssh("previews", app, "--json").stdout)["previews"] == []
    assert gitd.get(gitd.host(app)) == (200, "prod\n")


def test_previews_are_off_by_default_and_bounded_in_number(gitd, docker_client, tmp_path):
    app = unique_app("pvmax")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / "app", env_app("prod"))
    assert gitd.push(repo, app).returncode == 0
    git(repo, "checkout", "-q", "-b", "one")
    off = gitd.push(repo, app, "one")
    assert off.returncode == 0, off.stderr
    assert "branch one stored, not deployed" in off.stderr
    assert app_rows(gitd, app) == [(app,)]

    enabled = gitd.ssh("previews:enable", app, "--max", "1", "--ttl", "2h")
    assert enabled.returncode == 0, enabled.stderr
    assert "2h 0m after its last push, 1 at most" in enabled.stdout
    commit(repo, env_app("one"), "one")
    assert gitd.push(repo, app, "one").returncode == 0
    git(repo, "checkout", "-q", "-b", "two")
    refused = gitd.push(repo, app, "two")
    assert refused.returncode != 0
    assert f"{app} has 1 previews, its most" in refused.stderr
    assert "[remote rejected] two -> two" in refused.stderr
    assert len(app_rows(gitd, app)) == 2
    for bad in (["--max", "21"], ["--max", "-1"], ["--ttl", "0s"], ["--ttl", "9999999d"]):
        result = gitd.ssh("previews:enable", app, *bad)
        assert result.returncode == 2, (bad, result.stderr)

    destroyed = gitd.ssh("apps:destroy", app, "--force")
    assert destroyed.returncode == 0, destroyed.stderr
    assert app_rows(gitd, app) == []
    assert gitd.containers(docker_client, f"{app}--one") == []


def test_idle_previews_go_once_their_ttl_passes(own_gitd, docker_client, tmp_path):
    own_gitd.start(extra_env={"GITD_PREVIEW_REAP_INTERVAL": "1"})
    app = unique_app("pvttl")
    assert own_gitd.ssh("apps:create", app).returncode == 0
    assert own_gitd.ssh("previews:enable", app, "--ttl", "8s").returncode == 0
    repo = make_repo(tmp_path / "app", env_app("prod"))
    git(repo, "checkout", "-q", "-b", "short")
    pushed = own_gitd.push(repo, app, "short")
    assert pushed.returncode == 0, pushed.stderr
    preview = f"{app}--short"
    assert own_gitd.get(own_gitd.host(preview)) == (200, "prod\n")
    assert app_rows(own_gitd, app) == [(app,), (preview,)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(app_rows(own_gitd, app)) > 1:
        time.sleep(0.5)
    assert app_rows(own_gitd, app) == [(app,)]
    assert own_gitd.containers(docker_client, preview) == []
    assert gone_from_traefik(own_gitd, own_gitd.host(preview)) == 404


def test_hostile_branch_names(gitd, docker_client, tmp_path):
    app = unique_app("pvbad")
    assert gitd.ssh("apps:create", app).returncode == 0
    assert gitd.ssh("previews:enable", app).returncode == 0
    repo = make_repo(tmp_path / "app", env_app("hostile"))
    # a name as long as git takes, with a leading dash: cut to one 63-character label
    long_branch = "-" + "Ü" * 40 + "/" + "x" * 200
    pushed = gitd.push(repo, app, f"HEAD:refs/heads/{long_branch}")
    assert pushed.returncode == 0, pushed.stderr
    preview = f"{app}--" + "u" * 40 + "-" + "x" * (63 - len(app) - 2 - 41)
    assert len(preview) == 63
    assert gitd.get(gitd.host(preview)) == (200, "hostile\n")
    # nothing to name a preview by: refused in words, nothing made
    refused = gitd.push(repo, app, "HEAD:refs/heads/_-_/_")
    assert refused.returncode != 0
    assert "has no letter or digit to name a preview by" in refused.stderr
    assert app_rows(gitd, app) == [(app,), (preview,)]
    # a pull request preview's name (pr-N) is kept for the forge's events
    for branch in ("pr-7", "PR/7"):
        refused = gitd.push(repo, app, f"HEAD:refs/heads/{branch}")
        assert refused.returncode != 0
        assert "would be named as a pull request's preview (pr-N)" in refused.stderr
    assert app_rows(gitd, app) == [(app,), (preview,)]
    # pushing to a preview's own name is not a way around its parent
    direct = gitd.push(repo, preview, "HEAD:refs/heads/main")
    assert direct.returncode != 0 and "is a preview app" in direct.stderr
    assert gitd.push(repo, app, f":refs/heads/{long_branch}").returncode == 0
    assert app_rows(gitd, app) == [(app,)]


def signed_pull(secret: str, action: str, number: int, head: str, delivery: str):
    repo = {"id": 1, "full_name": "owner/hello"}  # a branch of the repository, not a fork's
    body = json.dumps({"action": action, "number": number,
                       "pull_request": {"head": {"sha": head, "repo": repo},
                                        "base": {"ref": "main", "repo": repo}}}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
                  "X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"}


def post_webhook(gitd, app: str, body: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{gitd.gitd_api_port}/api/v1/apps/{app}/webhook", data=body,
        headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_a_pull_request_webhook_opens_updates_and_closes_its_preview(gitd, docker_client,
                                                                      tmp_path):
    app = unique_app("pvpr")
    upstream = make_repo(tmp_path / "up", env_app("main"))
    bare = tmp_path / "up.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(upstream), str(bare)], check=True)
    assert gitd.ssh("apps:create", app, "--repo", str(bare)).returncode == 0
    assert gitd.ssh("previews:enable", app).returncode == 0
    secret = json.loads(gitd.ssh("git:webhook", app, "--json").stdout)["secret"]
    # the forge's head of pull request 7: a ref outside refs/heads, as GitHub keeps it
    head = commit(upstream, env_app("pull 7 v1"), "pr v1")
    git(upstream, "push", "-q", str(bare), "HEAD:refs/pull/7/head")
    preview = f"{app}--pr-7"

    assert post_webhook(gitd, app, *signed_pull(secret, "opened", 7, head, "p-1")) == \
        (202, {"status": "deploying", "branch": "pr-7", "commit": head})
    assert gitd.wait_for(gitd.host(preview), "pull 7 v1\n", timeout=180)[0] == 200
    head = commit(upstream, env_app("pull 7 v2"), "pr v2")
    git(upstream, "push", "-q", "-f", str(bare), "HEAD:refs/pull/7/head")
    assert post_webhook(gitd, app, *signed_pull(secret, "synchronize", 7, head, "p-2"))[0] == 202
    assert gitd.wait_for(gitd.host(preview), "pull 7 v2\n", timeout=180)[0] == 200

    assert post_webhook(gitd, app, *signed_pull(secret, "closed", 7, head, "p-3")) == \
        (202, {"status": "removing", "branch": "pr-7"})
    deadline = time.monotonic() + 60
    while len(app_rows(gitd, app)) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert app_rows(gitd, app) == [(app,)]
    assert gitd.containers(docker_client, preview) == []
    bad = signed_pull("not the secret", "opened", 8, head, "p-4")
    assert post_webhook(gitd, app, *bad)[0] == 401


def test_a_fresh_preview_gets_its_own_empty_redis_seeded_by_postdeploy(own_gitd, docker_client,
                                                                        tmp_path):
    from tests.e2e.services_helpers import IMAGES_ENV, REDIS_IMAGE, client_app

    own_gitd.start(extra_env=IMAGES_ENV)
    app, cache = unique_app("pvfresh"), unique_app("cache")
    assert own_gitd.ssh("services:create", "redis", cache).returncode == 0
    assert own_gitd.ssh("apps:create", app).returncode == 0
    assert own_gitd.ssh("services:link", cache, app).returncode == 0
    rules = {"previews": {"services": "fresh"},
             "scripts": {"postdeploy": 'redis-cli --no-auth-warning -u "$REDIS_URL" SET seeded yes'}}
    files = {**client_app("fresh", REDIS_IMAGE), "app.json": json.dumps(rules)}
    repo = make_repo(tmp_path / "app", files)
    assert own_gitd.push(repo, app).returncode == 0

    def get(target: str, key: str) -> str:
        script = f'redis-cli --no-auth-warning -u "$REDIS_URL" GET {key}'
        result = own_gitd.ssh("run", target, "--", "sh", "-c", f"'{script}'")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    git(repo, "checkout", "-q", "-b", "seed")
    pushed = own_gitd.push(repo, app, "seed")
    assert pushed.returncode == 0, pushed.stderr
    assert "Running scripts.postdeploy" in pushed.stderr
    preview = f"{app}--seed"
    assert get(preview, "seeded") == "yes"
    assert get(app, "seeded") == ""  # the parent's redis is not the preview's
    linked = json.loads(own_gitd.ssh("apps:info", preview, "--json").stdout)["services"]
    (own,) = linked
    assert own != cache and linked[own]["env_var"] == "REDIS_URL"

    commit(repo, {"touch": "again"}, "again")
    again = own_gitd.push(repo, app, "seed")
    assert again.returncode == 0 and "Running scripts.postdeploy" not in again.stderr

    assert own_gitd.push(repo, app, ":seed").returncode == 0
    services = json.loads(own_gitd.ssh("services:list", "--json").stdout)
    assert [s["name"] for s in services] == [cache]
    assert own_gitd.containers(docker_client, preview) == []

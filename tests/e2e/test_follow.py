"""Apps that follow a repository elsewhere: apps:create --repo and git:sync,
end to end (a local path, which only admins may give)."""

import subprocess

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

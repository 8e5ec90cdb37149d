"""Apps that follow a repository elsewhere: git:sync (fetch and deploy now),
the app's deploy key for ssh URLs, and forge webhooks that sync on a push.

The followed repository is the app's `source` setting ({"url", "branch"}),
set by apps:create --repo or git:sync APP URL. What is fetched is deployed
exactly as a push of it would be, and the deploy branch moves only when the
deploy succeeds (as a push's does)."""

from __future__ import annotations

import os
import secrets
import threading
import weakref
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gitd import gitserve, repos, webhooks
from gitd.core import validate
from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.verbs import Session
from hooks import remote

log = structlog.get_logger("gitd.sync")

FETCH_TIMEOUT = 600.0
DEFAULT_BRANCH = "main"


# the followed repository

def source_of(app) -> dict:
    return dict(app.settings.get("source") or {})


def follow(s: Session, app: str, url: str, branch: str = DEFAULT_BRANCH) -> dict:
    """Make `app` follow `url`'s `branch` (admins: a URL is fetched by the server)."""
    s.require_admin()
    s.app(app)
    remote.url_kind(url)
    remote.check_ref(branch)
    s.store.update_app_settings(app, source={"url": url, "branch": branch})
    return {"url": remote.display(url), "branch": branch}


def sync(s: Session, app: str, url: str | None = None, ref: str | None = None) -> dict:
    """Fetch `ref` (default: the followed branch) of `url` (default: the
    followed repository) and deploy it now. A URL given here becomes the
    followed one; only admins may give one."""
    found = s.app(app)
    source = source_of(found)
    if url is not None:
        if not s.key.is_admin:
            raise PermissionDenied("only admins set the repository an app follows")
        remote.url_kind(url)
        branch = ref if ref and not remote.SHA.match(ref) else source.get("branch", DEFAULT_BRANCH)
        source = {"url": url, "branch": remote.check_ref(branch)}
    if not source.get("url"):
        raise UsageError(f"{app} follows no repository: git:sync {app} URL [REF] "
                         f"(or apps:create {app} --repo URL)")
    ref = remote.check_ref(ref or source.get("branch") or DEFAULT_BRANCH)
    # code from elsewhere is built as a deployer's push is, whoever asked
    result = fetch_and_deploy(s.gitd, app, source["url"], ref, f"sync by {s.key.name}",
                              s.progress)
    if url is not None:  # followed from now on, once it fetched and deployed
        follow(s, app, source["url"], source["branch"])
    return result


def fetch_and_deploy(gitd, app: str, url: str, ref: str, by: str | None, progress,
                     trigger: str = "push") -> dict:
    """Fetch, then deploy under the app's lock: one deployment row (`trigger`)
    from the fetch to the end, whatever happens."""
    row = gitd.deployments.create(app, trigger, by=by, ref=ref)
    return sync_recorded(gitd, app, url, ref, by, progress, trigger, row.id)


def sync_recorded(gitd, app: str, url: str, ref: str, by: str | None, progress, trigger: str,
                  deployment: int) -> dict:
    """Fetch and deploy as the pending `deployment`, which ends failed if
    anything goes wrong before the pipeline takes it."""
    run = gitd.deployments.running(deployment)
    run.downstream = progress
    try:
        commit = fetch(gitd, app, url, ref, run)
        with gitd.app_lock(app, notify=run):
            return deploy_fetched(gitd, app, commit, by, progress, trigger, deployment)
    except BaseException as exc:
        if gitd.deployments.running(deployment) is not None:
            gitd.deployments.fail(deployment, exc)
        raise


def fetch(gitd, app: str, url: str, ref: str, progress) -> str:
    """`ref` of `url` into the app's repository (SYNC_REF): its commit."""
    settings = gitd.settings
    path = gitserve.repo_path(settings.repos_dir, app)
    with gitd.using_repo(app):
        progress(f"-----> Fetching {ref} from {remote.display(url)}")
        commit = remote.fetch(path, url, ref, existing_key(settings, app), FETCH_TIMEOUT,
                              settings.max_repo_bytes)
        if repos.size(path) > settings.max_repo_bytes:
            raise GitdError(f"{app}'s repository is larger than max_repo_bytes after the fetch")
    return commit


def deploy_fetched(gitd, app: str, commit: str, by: str | None, progress, trigger: str,
                   deployment: int) -> dict:
    """Deploy a fetched commit as a push of it; the deploy branch moves only
    when it succeeds. The caller holds the app's lock."""
    current = gitd.store.current_release(app)
    if current is not None and current.commit == commit:
        nothing = f"{app} already runs {commit[:12]}: nothing to deploy"
        gitd.deployments.cancel(deployment, nothing)
        if progress is not None:
            progress(f"-----> {nothing}")
        return {"app": app, "commit": commit, "release": current.version, "deployed": False,
                "deployment": deployment}
    with gitd.using_repo(app):
        repo = gitserve.open_repo(gitd.settings.repos_dir, app)
        try:
            release = gitd.pipeline.push(app, repo, commit.encode(), by, progress,
                                         trigger=trigger, deployment=deployment)
            repo.refs[b"refs/heads/" + deploy_branch(repo)] = commit.encode()
        finally:
            repo.close()
    gitd.collect_repo_later(app)
    return {"app": app, "commit": commit, "release": release.version, "deployed": True,
            "deployment": deployment}


def sync_in_background(s: Session, app: str) -> dict:
    """A deployment of the followed branch, fetched and deployed on a thread
    of its own: its pending row (POST /api/v1/apps with a repo_url)."""
    source = source_of(s.app(app))
    if not source.get("url"):
        raise UsageError(f"{app} follows no repository")
    branch = source.get("branch", DEFAULT_BRANCH)
    row = s.gitd.deployments.create(app, "api", by=s.key.name, ref=branch)

    def work():
        try:
            sync_recorded(s.gitd, app, source["url"], branch, f"sync by {s.key.name}", None,
                          "api", row.id)
        except GitdError:
            pass  # recorded in the deployment
        except Exception:
            log.exception("sync failed", app=app, deployment=row.id)

    threading.Thread(target=work, daemon=True, name=f"gitd-sync-{app}-{row.id}").start()
    return row


def deploy_branch(repo) -> bytes:
    """main, or master where the app's repository has only master."""
    refs = repo.refs.as_dict(b"refs/heads/")
    return b"master" if b"master" in refs and b"main" not in refs else b"main"


# the deploy key

def key_path(settings, app: str) -> Path:
    return settings.data_dir / "deploy-keys" / validate.app_name(app)


def existing_key(settings, app: str) -> Path | None:
    path = key_path(settings, app)
    return path if path.is_file() else None


def deploy_key(s: Session, app: str) -> dict:
    """The public half of the app's deploy key (made on first use), to add
    to the forge as a read-only deploy key."""
    s.require_admin()
    s.app(app)
    path = key_path(s.settings, app)
    if not path.is_file():
        write_new_key(path)
    private = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return {"app": app, "public_key": f"{public} gitd-deploy-{app}"}


def write_new_key(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption())
    temporary = path.with_name(path.name + ".new")
    fd = _create_private(temporary)
    with open(fd, "wb") as out:
        out.write(pem)
    temporary.replace(path)


def _create_private(path: Path) -> int:
    path.unlink(missing_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def forget(settings, app: str) -> None:
    """apps:destroy: the deploy key goes with the app (the store's rows go
    with its other rows)."""
    key_path(settings, app).unlink(missing_ok=True)


# webhooks

def webhook(s: Session, app: str, *, rotate: bool = False) -> dict:
    """The app's webhook URL and secret, made on first use or when rotated."""
    s.require_admin()
    s.app(app)
    secret = s.store.webhook_secret(app)
    if secret is None or rotate:
        secret = secrets.token_hex(32)
        s.store.set_webhook_secret(app, secret)
    return {"app": app, "url": webhook_url(s.settings, app), "secret": secret,
            "content_type": "application/json"}


def webhook_url(settings, app: str) -> str:
    host = getattr(settings, "api_host", "")
    if host and settings.domain not in ("", "localhost"):
        return f"{settings.host_url(host)}/api/v1/apps/{app}/webhook"
    return f"http://127.0.0.1:{getattr(settings, 'api_port', 8088)}/api/v1/apps/{app}/webhook"


def receive_webhook(gitd, app: str, headers, body: bytes) -> tuple[int, dict]:
    """A forge's delivery for `app`: (HTTP status, answer). Unknown apps and
    apps without a webhook are refused like a bad signature (401), so the
    endpoint tells nobody which apps exist."""
    store = gitd.store
    try:
        validate.app_name(app)
        found = store.get_app(app)
    except (GitdError, NotFound):
        found = None
    secret = store.webhook_secret(app) if found else None
    delivery = webhooks.read(headers, body, secret)
    if delivery.event == "ping":
        return 200, {"status": "pong"}
    if delivery.event == "pull_request":
        return pull_request(gitd, found, delivery)
    if delivery.event != "push":
        return 202, {"status": f"ignored: event {delivery.event or 'unnamed'}"}
    source = source_of(found)
    if not source.get("url"):
        return 409, {"error": f"{app} follows no repository (git:sync {app} URL)"}
    if delivery.branch != source.get("branch", DEFAULT_BRANCH):
        return 202, {"status": "ignored: branch"}
    if delivery.commit is None:
        return 202, {"status": "ignored: branch deleted"}
    if delivery.delivery and not store.first_delivery(app, delivery.delivery):
        return 200, {"status": "ignored: delivery already received"}
    state = followers(gitd).submit(app)
    return 202, {"status": state, "commit": delivery.commit}


def pull_request(gitd, app, delivery) -> tuple[int, dict]:
    """A pull request opened, updated or closed: its preview (branch pr-N)
    is deployed from the followed repository or removed, in the background,
    in the order the forge sent them."""
    name = app.name
    source = source_of(app)
    if not source.get("url"):
        return 409, {"error": f"{name} follows no repository (git:sync {name} URL)"}
    if delivery.action == "update" and gitd.previews.policy(name) is None:
        return 202, {"status": "ignored: previews off"}
    if delivery.delivery and not gitd.store.first_delivery(name, delivery.delivery):
        return 200, {"status": "ignored: delivery already received"}
    if delivery.action == "close":
        gitd.previews.later(name, lambda sink: _close_pull(gitd, name, delivery, sink))
        return 202, {"status": "removing", "branch": delivery.branch}
    gitd.previews.later(name, lambda sink: _update_pull(gitd, name, source["url"], delivery, sink))
    return 202, {"status": "deploying", "branch": delivery.branch, "commit": delivery.commit}


def _update_pull(gitd, app: str, url: str, delivery, sink) -> None:
    commit = fetch(gitd, app, url, delivery.ref, sink)
    with gitd.app_lock(app, notify=sink), gitd.using_repo(app):
        repo = gitserve.open_repo(gitd.settings.repos_dir, app)
        try:  # built as a deployer's push: the code comes from elsewhere
            gitd.previews.push(app, delivery.branch, repo, commit.encode(), "webhook", sink)
        finally:
            repo.close()


def _close_pull(gitd, app: str, delivery, sink) -> None:
    with gitd.app_lock(app, notify=sink):
        gitd.previews.remove_branch(app, delivery.branch, sink)


class Followers:
    """Syncs started by webhooks, one at a time per app. A push that arrives
    while one runs is queued; pushes queued behind the same run collapse into
    one, which fetches the branch as it is then: the newest commit wins."""

    def __init__(self, gitd):
        self.gitd = gitd
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._queued: set[str] = set()
        self._idle = threading.Condition(self._guard)

    def submit(self, app: str) -> str:
        with self._guard:
            if app in self._running:
                self._queued.add(app)
                return "queued"
            self._running.add(app)
        threading.Thread(target=self._run, args=(app,), daemon=True,
                         name=f"gitd-sync-{app}").start()
        return "deploying"

    def _run(self, app: str) -> None:
        while True:
            self._sync_once(app)
            with self._guard:
                if app not in self._queued:
                    self._running.discard(app)
                    self._idle.notify_all()
                    return
                self._queued.discard(app)

    def _sync_once(self, app: str) -> None:
        try:
            source = source_of(self.gitd.store.get_app(app))
            fetch_and_deploy(self.gitd, app, source["url"], source.get("branch", DEFAULT_BRANCH),
                             "webhook", None, trigger="webhook")
        except (GitdError, KeyError) as exc:
            log.warning("webhook sync failed", app=app, error=getattr(exc, "message", str(exc)))
        except Exception:
            log.exception("webhook sync failed", app=app)

    def wait_idle(self, timeout: float) -> bool:
        with self._guard:
            return self._idle.wait_for(lambda: not self._running, timeout)


_followers: "weakref.WeakKeyDictionary[object, Followers]" = weakref.WeakKeyDictionary()
_followers_guard = threading.Lock()


def followers(gitd) -> Followers:
    with _followers_guard:
        if gitd not in _followers:
            _followers[gitd] = Followers(gitd)
        return _followers[gitd]

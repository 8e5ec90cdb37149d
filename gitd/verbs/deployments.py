"""Deployments (issue #23): every deploy of an app, with its status and
log; and deploys started on demand, of a ref of the app's own repository
or of a prebuilt image.

A deploy created here runs in the background under the app's lock: a
second one queues behind the running one (bounded by `lock_wait`, as a
push does), pending meanwhile, so none is lost; it fails with "another
deploy ... still running" if the wait runs out. At most MAX_WAITING wait
per app (each on a thread); past that a create is refused (409).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import structlog
from dulwich.objects import Commit, Tag

from gitd import gitserve, reachable
from gitd.core import validate
from gitd.core.errors import GitdError, NotFound, PermissionDenied, UsageError
from gitd.core.store import Deployment
from gitd.verbs import Session, iso_time
from hooks.registry import is_own_registry

log = structlog.get_logger("gitd.deployments")

# also the API's schema pattern: (?!.*\n) since `$` matches before a final newline
REF_PATTERN = r"^(?!.*\n)(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<![/.])$"
REF = re.compile(REF_PATTERN)
SHA = re.compile(r"^[0-9a-f]{40}$")
ACCESS_CHECK = 5.0  # seconds between checks that a follower may still read the app
MAX_WAITING = 4  # pending deployments of one app: each waits on a thread of its own


def to_dict(row: Deployment, with_log: bool = True) -> dict:
    data = {"id": row.id, "app": row.app, "status": row.status, "trigger": row.trigger,
            "by": row.by, "ref": row.ref, "commit": row.commit, "image": row.image,
            "release": row.release, "error": row.error,
            "created_at": iso_time(row.created_at), "started_at": iso_time(row.started_at),
            "finished_at": iso_time(row.finished_at)}
    if with_log:
        data["log"] = row.log
    return data


def list_for_app(s: Session, app: str, limit: int = 100) -> list[dict]:
    """The app's deployments, newest first, without their logs."""
    s.app(app)
    return [to_dict(row, with_log=False) for row in s.store.deployments(app, limit)]


def _reachable_row(s: Session, deployment_id: int) -> Deployment:
    """The row, if the caller may reach its app: another app's deployment is
    not found, as one that does not exist."""
    row = s.store.get_deployment(deployment_id)
    if not s.may_touch(row.app):
        raise NotFound(f"no deployment {deployment_id}")
    return row


def get(s: Session, deployment_id: int) -> dict:
    return to_dict(_reachable_row(s, deployment_id))


def log_so_far(s: Session, deployment_id: int) -> dict:
    row = _reachable_row(s, deployment_id)
    running = s.gitd.deployments.running(row.id)
    return {"id": row.id, "status": row.status,
            "log": running.text if running is not None else row.log}


def follow(s: Session, deployment_id: int) -> Iterator[str]:
    """The log so far, then its lines as they come until the deployment
    ends ("" now and then while nothing comes), or until the caller may no
    longer reach its app (key removed, grant revoked: asked again every
    ACCESS_CHECK seconds, as `logs -f` does)."""
    row = _reachable_row(s, deployment_id)
    return _while_reachable(s, row.app, s.gitd.deployments.follow(row.id))


def _while_reachable(s: Session, app: str, lines: Iterator[str]) -> Iterator[str]:
    checked = time.monotonic()
    try:
        for chunk in lines:
            yield chunk
            if time.monotonic() - checked >= ACCESS_CHECK:
                checked = time.monotonic()
                if not _may_still_reach(s, app):
                    return
    finally:
        lines.close()


def _may_still_reach(s: Session, app: str) -> bool:
    key = s.store.key_by_fingerprint(s.key.fingerprint)
    return key is not None and key.name == s.key.name and (
        key.is_admin or s.store.granted(app, key.name))


def resolve_ref(repo, ref: str | None) -> tuple[str, str]:
    """(the ref as named, its commit id) in the app's own repository: a
    branch, a tag or a full commit id that a branch or tag reaches; without
    a ref, the deploy branch (main, else master)."""
    refs = repo.refs.as_dict()
    if ref is None:
        for branch in gitserve.DEPLOY_BRANCHES:
            if branch in refs:
                return branch[len(b"refs/heads/"):].decode(), _peeled_commit(repo, refs[branch])
        raise NotFound("the repository has no main or master branch yet: push first, or name a ref")
    if not isinstance(ref, str) or not REF.fullmatch(ref):
        raise UsageError(f"invalid ref {str(ref)[:80]!r}: a branch, a tag or a full commit id")
    for name in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        if name.startswith(("refs/heads/", "refs/tags/")) and name.encode() in refs:
            return ref, _peeled_commit(repo, refs[name.encode()])
    if SHA.fullmatch(ref):
        tips = [sha for name, sha in refs.items() if name.startswith((b"refs/heads/", b"refs/tags/"))]
        if not reachable.unreachable(repo.object_store, tips, [ref.encode()]):
            return ref, _peeled_commit(repo, ref.encode())
    raise NotFound(f"no branch, tag or commit {ref!r} in the app's repository")


def _peeled_commit(repo, sha: bytes) -> str:
    obj = repo.object_store[sha]
    while isinstance(obj, Tag):
        obj = repo.object_store[obj.object[1]]
    if not isinstance(obj, Commit):
        raise NotFound(f"{sha.decode()} is not a commit")
    return obj.id.decode()


def check_image(s: Session, ref: str) -> str:
    """An image reference gitd may pull for an app: valid, not gitd's own
    images (an app's `gitd/<app>` tags, its own registry's)."""
    ref = validate.image_reference(ref)
    first, slash, rest = ref.partition("/")
    local = ref if not (slash and ("." in first or ":" in first or first == "localhost")) else \
        (rest if first in ("docker.io", "index.docker.io", "registry-1.docker.io") else None)
    if local is not None and (local.startswith("gitd/") or local.startswith("library/gitd/")):
        raise PermissionDenied(f"image {ref}: gitd/ names are the apps' own images; "
                         "push the image to a registry under another name")
    if local is None and is_own_registry(first, s.settings):
        raise PermissionDenied(f"image {ref}: gitd's own registry holds the apps' images; "
                         "deploy an image from another registry")
    return ref


def deploy_image(s: Session, app: str, image: str) -> dict:
    """Deploy a prebuilt image now (admin), its progress live; the
    deployment's row when it succeeded, its error raised otherwise."""
    s.require_admin()
    s.app(app)
    image = check_image(s, image)
    row = s.gitd.deployments.create(app, "image", by=s.key.name, image=image)
    try:
        with s.lock(app):
            _still_there(s, app)
            s.gitd.pipeline.deploy_image(app, image, s.key.name, s.progress, deployment=row.id)
    except BaseException as exc:
        _end_if_pending(s, row.id, exc)
        raise
    return to_dict(s.store.get_deployment(row.id), with_log=False)


def create(s: Session, app: str, ref: str | None = None, image: str | None = None,
           trigger: str | None = None) -> dict:
    """A deployment of a ref of the app's repository (whoever may push to
    it) or of an image (admins), started in the background: the pending row."""
    s.app(app)
    if image is not None and ref is not None:
        raise UsageError("give a ref or an image, not both")
    by = s.key.name
    if image is not None:
        s.require_admin()
        image = check_image(s, image)
        row = s.gitd.deployments.create(app, trigger or "image", MAX_WAITING, by=by,
                                        image=image)

        def work():
            s.gitd.pipeline.deploy_image(app, image, by, None, trigger=row.trigger,
                                         deployment=row.id)
    else:
        with s.gitd.using_repo(app):
            ref, commit = resolve_ref(gitserve.open_repo(s.settings.repos_dir, app), ref)
        row = s.gitd.deployments.create(app, trigger or "api", MAX_WAITING, by=by, ref=ref,
                                        commit=commit)
        trusted = s.key.is_admin and pushed_by_an_admin(s.store, app, commit)

        def work():
            with s.gitd.using_repo(app):
                repo = gitserve.open_repo(s.settings.repos_dir, app)
                s.gitd.pipeline.push(app, repo, commit.encode(), by, None,
                                     trigger=row.trigger, deployment=row.id, trusted=trusted)
    threading.Thread(target=_run, args=(s, app, row.id, work), daemon=True,
                     name=f"deploy-{app}-{row.id}").start()
    return to_dict(row)


def pushed_by_an_admin(store, app: str, commit: str) -> bool:
    """Whether an admin key pushed `commit` to the app: only then may an
    admin's deploy of it build as an admin's push (Nix unsandboxed). The
    app's branches may hold what a deployer pushed, and asking for a deploy
    is not vouching for that code."""
    for release in store.releases(app):
        if release.commit == commit and release.kind == "push" and release.pushed_by:
            try:
                if store.get_key(release.pushed_by).is_admin:
                    return True
            except NotFound:
                continue
    return False


def _run(s: Session, app: str, deployment_id: int, work) -> None:
    try:
        with s.gitd.app_lock(app, notify=lambda line: _note(s, deployment_id, line)):
            _still_there(s, app)
            work()
    except BaseException as exc:  # a background thread: recorded, and logged if a bug
        _end_if_pending(s, deployment_id, exc)
        if not isinstance(exc, GitdError):
            log.exception("deployment failed", app=app, deployment=deployment_id)


def _still_there(s: Session, app: str) -> None:
    """The app (and the caller's right to it) may have gone while waiting."""
    if not s.store.app_exists(app):
        raise NotFound(f"app {app!r} was destroyed before this deployment began")
    key = s.store.key_by_fingerprint(s.key.fingerprint)
    if key is None or key.name != s.key.name or not (key.is_admin or s.store.granted(app, key.name)):
        raise GitdError(f"key {s.key.name} lost its access to {app} before this deployment began")


def _note(s: Session, deployment_id: int, line: str) -> None:
    running = s.gitd.deployments.running(deployment_id)
    if running is not None:
        running.note(line)


def _end_if_pending(s: Session, deployment_id: int, exc: BaseException) -> None:
    """A deployment that never began (busy, app gone): failed or cancelled."""
    running = s.gitd.deployments.running(deployment_id)
    if running is None or running.status != "pending":
        return  # the pipeline recorded its end
    if isinstance(exc, NotFound):
        s.gitd.deployments.cancel(deployment_id, str(exc))
    else:
        s.gitd.deployments.fail(deployment_id, exc)

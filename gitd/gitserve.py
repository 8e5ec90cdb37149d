"""receive-pack and upload-pack served in-process by dulwich over the SSH channel.

dulwich's handlers are synchronous: they run in a worker thread and read the
channel through ReceivableProtocol, so reads cross threads in large chunks.
"""

from __future__ import annotations

from pathlib import Path

from dulwich.protocol import (CAPABILITY_ATOMIC, CAPABILITY_SIDE_BAND_64K, SIDE_BAND_CHANNEL_PROGRESS,
                              ReceivableProtocol)
from dulwich.repo import Repo
from dulwich.server import Backend, ReceivePackHandler, UploadPackHandler

from gitd.errors import GitdError

DEPLOY_BRANCHES = (b"refs/heads/main", b"refs/heads/master")
ZERO_SHA = b"0" * 40


def repo_path(repos_dir: Path, app: str) -> Path:
    """`app` must already be validated: it is the only part of the path."""
    return repos_dir / f"{app}.git"


def create_repo(repos_dir: Path, app: str) -> Repo:
    repos_dir.mkdir(parents=True, exist_ok=True)
    repo = Repo.init_bare(str(repo_path(repos_dir, app)), mkdir=True)
    repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")
    return repo


def open_repo(repos_dir: Path, app: str) -> Repo:
    path = repo_path(repos_dir, app)
    if not path.is_dir():
        raise GitdError(f"app {app!r} has no repository (create it with: apps:create {app})")
    return Repo(str(path))


class _OneRepoBackend(Backend):
    def __init__(self, repo: Repo):
        self.repo = repo

    def open_repository(self, path):
        return self.repo


class DeployingReceivePackHandler(ReceivePackHandler):
    """Runs the pipeline when the deploy branch is pushed, after the pack is
    stored and before the ref moves: a failed deploy rejects the ref."""

    def __init__(self, backend, args, proto, deploy, max_pack_bytes: int, stderr):
        super().__init__(backend, args, proto)
        self._deploy = deploy  # (commit_sha: bytes, sink) -> None, raises GitdError
        self._max_pack_bytes = max_pack_bytes
        self._stderr = stderr

    def _receive_max_input_size(self):
        return self._max_pack_bytes

    def _progress(self, text: str) -> None:
        data = (text + "\n").encode("utf-8", "replace")
        if self._client_capabilities is not None and self.has_capability(CAPABILITY_SIDE_BAND_64K):
            self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, data)
        else:
            self._stderr(data)

    def _apply_pack(self, refs):
        self._update = list(refs)  # _on_update judges a ref against the whole update
        for name, status in super()._apply_pack(refs):
            if name == b"unpack" and b"maximum input size" in status:
                status += b" (settings max_pack_bytes, max_repo_bytes)"
            yield name, status

    def _deploy_refusal(self) -> bytes | None:
        """A deploy cannot be undone once it serves, so it must not be part
        of an update that can still be refused after it: an atomic push
        (all-or-nothing) deploys only on its own, and one push deploys at
        most one branch."""
        refs = [ref for _, _, ref in getattr(self, "_update", [])]
        deploys = [ref for ref in refs if ref in DEPLOY_BRANCHES]
        if len(deploys) > 1:
            return b"push main or master, not both: one push deploys one branch"
        if len(refs) > 1 and self.has_capability(CAPABILITY_ATOMIC):
            return (b"an atomic push cannot deploy beside other refs; "
                    b"push the deploy branch on its own")
        return None

    def _on_update(self, ref_name, old_sha, new_sha):
        if ref_name not in DEPLOY_BRANCHES:
            return None
        if new_sha == ZERO_SHA:
            return b"deleting the deploy branch is not allowed (use apps:destroy)"
        refusal = self._deploy_refusal()
        if refusal:
            return refusal
        try:
            self._deploy(new_sha, self._progress)
        except GitdError as exc:
            return f"deploy failed: {exc.message}".replace("\n", " ").encode()[:200]
        return None


def serve_receive_pack(repo: Repo, bridge, deploy, max_pack_bytes: int) -> None:
    proto = ReceivableProtocol(bridge.recv, bridge.write)
    handler = DeployingReceivePackHandler(_OneRepoBackend(repo), ["."], proto, deploy,
                                          max_pack_bytes, bridge.write_err)
    handler.handle()


def serve_upload_pack(repo: Repo, bridge) -> None:
    proto = ReceivableProtocol(bridge.recv, bridge.write)
    UploadPackHandler(_OneRepoBackend(repo), ["."], proto).handle()

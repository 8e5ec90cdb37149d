"""receive-pack and upload-pack served in-process by dulwich over the SSH channel.

dulwich's handlers are synchronous: they run in a worker thread and read the
channel through ReceivableProtocol, so reads cross threads in large chunks.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import dulwich.repo
import structlog
import dulwich.server
from dulwich.errors import GitProtocolError, HangupException
from dulwich.graph import can_fast_forward
from dulwich.object_filters import parse_filter_spec
from dulwich.objects import valid_hexsha
from dulwich.protocol import (CAPABILITY_ALLOW_REACHABLE_SHA1_IN_WANT,
                              CAPABILITY_ALLOW_TIP_SHA1_IN_WANT, CAPABILITY_ATOMIC,
                              CAPABILITY_DEEPEN_RELATIVE, CAPABILITY_SIDE_BAND_64K, COMMAND_DEEPEN,
                              COMMAND_FILTER, COMMAND_SHALLOW, COMMAND_WANT,
                              SIDE_BAND_CHANNEL_PROGRESS, ReceivableProtocol, ack_type,
                              extract_want_line_capabilities, format_ref_line, format_shallow_line,
                              format_unshallow_line, symref_capabilities)
from dulwich.repo import Repo
from dulwich.server import (Backend, ReceivePackHandler, UploadPackHandler, _ProtocolGraphWalker,
                            _split_proto_line)

from gitd import missing, packs, partial, reachable, shallow
from gitd.bridge import ChannelClosed
from gitd.core.errors import GitdError

log = structlog.get_logger("gitd.git")

# upload-pack writes its pack by copying stored entries (gitd.packs); the
# handler looks the writer up in its module when it sends a pack
dulwich.server.write_pack_from_container = packs.write_pack_reusing
# and finds what a fetch lacks without walking the client's whole history
# (gitd.missing); Repo.find_missing_objects looks the finder up in its module
dulwich.repo.MissingObjectFinder = missing.BoundedMissingObjectFinder

DEPLOY_BRANCHES = (b"refs/heads/main", b"refs/heads/master")
ZERO_SHA = b"0" * 40


def repo_path(repos_dir: Path, app: str) -> Path:
    """`app` must already be validated: it is the only part of the path."""
    return repos_dir / f"{app}.git"


def create_repo(repos_dir: Path, app: str) -> Repo:
    repos_dir.mkdir(parents=True, exist_ok=True)
    repo = Repo.init_bare(str(repo_path(repos_dir, app)), mkdir=True)
    repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")
    reachable.remember_empty(repo)
    return repo


def open_repo(repos_dir: Path, app: str) -> Repo:
    path = repo_path(repos_dir, app)
    if not path.is_dir():
        raise GitdError(f"app {app!r} has no repository (create it with: apps:create {app})")
    repo = Repo(str(path))
    # the same store, receiving packs with one pass less (gitd.packs)
    store = packs.ReceivingObjectStore.from_config(repo.object_store.path, repo.get_config())
    repo.object_store.close()
    repo.object_store = store
    return repo


class _OneRepoBackend(Backend):
    def __init__(self, repo):
        self.repo = repo

    def open_repository(self, path):
        return self.repo


class _CloneAwareRepo:
    """The repository as upload-pack sees it: a filter is applied here, as
    git means it (gitd.partial). A clone gets what its wants reach, never
    every stored object: objects no ref reaches (a force-pushed-away
    commit, a refused push's pack) stay on the server. A repository whose
    objects are all reached still goes out as its stored pack file
    (gitd.packs.write_pack_reusing), and once a clone found them all
    reached, the next clones skip the walk (gitd.reachable)."""

    def __init__(self, repo: Repo):
        self._repo = repo

    def __getattr__(self, name):
        return getattr(self._repo, name)

    def find_missing_objects(self, determine_wants, graph_walker, progress, *,
                             get_tagged=None, depth=None):
        asked = {}

        def wants_of(refs, depth=None):
            asked.update(refs=refs, wants=determine_wants(refs, depth), depth=depth)
            return asked["wants"]

        finder = self._repo.find_missing_objects(wants_of, graph_walker, progress,
                                                 get_tagged=get_tagged, depth=depth)
        handler = getattr(graph_walker, "handler", None)
        spec = getattr(handler, "filter_spec", None)
        if spec is not None and finder is not None:
            handler.filter_spec = None  # filtered here, as git means it (gitd.partial)
            return partial.filtered(self._repo.object_store, list(finder), spec)
        if not _plain_clone(asked, finder, graph_walker):
            return finder
        state = reachable.store_state(self._repo, asked["refs"])
        if reachable.known_all_reached(self._repo, state):
            stored = packs.stored_ids(self._repo.object_store)
            # a pack stored as they were listed (a refused push's) is not sent
            if reachable.store_state(self._repo, asked["refs"]) == state:
                return [(sha, None) for sha in stored]
        found = list(finder)
        reachable.remember_if_all_reached(self._repo, asked["refs"], state, [sha for sha, _ in found])
        return found


def _plain_clone(asked: dict, finder, graph_walker) -> bool:
    """Every ref wanted, nothing in common, no depth, no shallow boundary on
    either side: what the refs reach is all they reach."""
    if finder is None or not asked.get("wants") or asked.get("depth") or finder.get_remote_has():
        return False
    if getattr(graph_walker, "shallow", None) or getattr(graph_walker, "unshallow", None):
        return False
    return set(asked["refs"].values()) <= set(asked["wants"])


class _GitdGraphWalker(_ProtocolGraphWalker):
    """upload-pack's side of the negotiation, as git's own server speaks it
    where dulwich's differs:

    - wants may name an object a ref reaches, not only what a ref points
      at (git's uploadpack.allowReachableSHA1InWant): a partial clone
      fetches the blobs its checkout needs by id. The store also holds
      objects no ref reaches (a force-pushed-away commit, a refused push's
      pack): a want of one is refused as git refuses it, "not our ref"
      (gitd.reachable). Objects named by id are sent whole: a filter
      applies to what refs reach.
    - a shallow client's `shallow` lines may come without `deepen` (a plain
      fetch into a shallow clone), and `shallow`, `deepen` and `filter` in
      any order; `deepen-relative` (`git fetch --deepen`) is served.
    - a shallow repository (a shallow push made it so) advertises its
      boundary, as git's server does, and never walks below it."""

    def __init__(self, handler, object_store, get_peeled, get_symrefs):
        super().__init__(handler, object_store, get_peeled, get_symrefs)
        self.ours = frozenset(handler.repo.get_shallow())
        self.shallow.update(self.ours)

    def determine_wants(self, heads, depth=None):
        self._advertise(heads)
        if self.advertise_refs:
            return []
        first = self.proto.read_pkt_line()
        if not first:
            return []
        line, caps = extract_want_line_capabilities(first)
        self.handler.set_client_capabilities(caps)
        self.set_ack_type(ack_type(caps))
        advertised = set(heads.values())
        allowed = (COMMAND_WANT, COMMAND_SHALLOW, COMMAND_DEEPEN, COMMAND_FILTER, None)
        wants, by_id, deepen = [], [], None
        command, value = _split_proto_line(line, allowed)
        while command is not None:
            if command == COMMAND_WANT:
                if value not in advertised:
                    by_id.append(value)
                wants.append(value)
            elif command == COMMAND_SHALLOW:
                if len(self.client_shallow) >= shallow.MAX_CLIENT_SHALLOW:
                    raise GitProtocolError("too many shallow lines")
                self.client_shallow.add(value)
            elif command == COMMAND_DEEPEN:
                deepen = value
            else:
                self.handler.set_filter(value)
            command, value = self.read_proto_line(allowed)
        if by_id:
            self._refuse_unreachable(heads.values(), by_id)
            self.handler.filter_spec = None
        self.set_wants(wants)
        if deepen is not None:
            self._deepen(wants, deepen)
        else:
            self.shallow.update(self.client_shallow)
        return wants

    def _refuse_unreachable(self, tips, by_id: list) -> None:
        """As git's upload-pack: an ERR line the client shows, "not our ref"."""
        refused = reachable.unreachable(self.store, tips, by_id, self.ours)
        if refused:
            message = f"upload-pack: not our ref {min(refused).decode()}"
            self.proto.write_pkt_line(b"ERR " + message.encode())
            raise GitdError(message)

    def _advertise(self, heads) -> None:
        """The refs, then this repository's boundary (a clone of it is made
        shallow there), then a flush."""
        capabilities = list(self.handler.capabilities()) + \
            symref_capabilities(self.get_symrefs().items())
        for ref, sha in sorted(heads.items()):
            try:
                peeled = self.get_peeled(ref)
            except KeyError:
                continue
            self.proto.write_pkt_line(format_ref_line(ref, sha, capabilities))
            capabilities = None
            if peeled is not None and peeled != sha:
                self.proto.write_pkt_line(format_ref_line(ref + b"^{}", peeled))
        for sha in sorted(self.ours):
            self.proto.write_pkt_line(format_shallow_line(sha) + b"\n")
        self.proto.write_pkt_line(None)

    def _deepen(self, wants: list, depth: int) -> None:
        """The client's new boundary: `depth` commits from the wants, or
        below its current boundary with deepen-relative."""
        if self.handler.has_capability(CAPABILITY_DEEPEN_RELATIVE):
            heads = [sha for sha in self.client_shallow if sha in self.store]
            depth += 1
        else:
            heads = wants
        boundary, above = shallow.find_shallow(self.store, heads, depth, self.ours)
        self.unshallow = above & self.client_shallow
        for sha in sorted(boundary - self.client_shallow):
            self.proto.write_pkt_line(format_shallow_line(sha) + b"\n")
        for sha in sorted(self.unshallow):
            self.proto.write_pkt_line(format_unshallow_line(sha) + b"\n")
        self.proto.write_pkt_line(None)
        self.shallow.update(boundary, self.client_shallow - self.unshallow)

    def all_wants_satisfied(self, haves) -> bool:
        try:
            return super().all_wants_satisfied(haves)
        except KeyError:  # the walk reached a parent this shallow repository lacks
            return False


# upload-pack's handler makes its graph walker by this module-level name
dulwich.server._ProtocolGraphWalker = _GitdGraphWalker


class GitdUploadPackHandler(UploadPackHandler):
    def capabilities(self):
        return [*super().capabilities(), CAPABILITY_ALLOW_TIP_SHA1_IN_WANT,
                CAPABILITY_ALLOW_REACHABLE_SHA1_IN_WANT, CAPABILITY_DEEPEN_RELATIVE]

    def get_tagged(self, refs=None, repo=None):
        """dulwich finds the tags to send along (include-tag) only through a
        `.repo` attribute this handler's repository lacks: without it a
        shallow or single-branch clone missed the tags of what it got."""
        return super().get_tagged(refs, repo or self.repo)

    def set_filter(self, spec: bytes) -> None:
        try:
            spec = parse_filter_spec(spec, object_store=self.repo.object_store)
        except ValueError as exc:
            raise GitProtocolError(f"invalid filter specification: {exc}") from exc
        refused = partial.unsupported(spec)
        if refused:
            raise GitProtocolError(f"filter {refused!r} not supported")
        self.filter_spec = spec


class _PushProtocol(ReceivableProtocol):
    """A push from a shallow clone names the clone's boundary in `shallow`
    lines before its commands, which dulwich reads as a malformed command:
    they are taken aside here."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.client_shallow: set[bytes] = set()
        self._before_commands = True

    def read_pkt_line(self):
        line = super().read_pkt_line()
        while self._before_commands and line and line.startswith(COMMAND_SHALLOW + b" "):
            sha = line[len(COMMAND_SHALLOW) + 1:].rstrip(b"\n")
            if not valid_hexsha(sha) or len(self.client_shallow) >= shallow.MAX_CLIENT_SHALLOW:
                raise GitProtocolError(f"invalid shallow line from client: {line[:100]!r}")
            self.client_shallow.add(sha)
            line = super().read_pkt_line()
        self._before_commands = False
        return line


class DeployingReceivePackHandler(ReceivePackHandler):
    """Runs the pipeline when the deploy branch is pushed, after the pack is
    stored and before the ref moves: a failed deploy rejects the ref.

    The app's lock is taken once the pack is stored, not while it arrives: a
    slow or idle pusher does not block the app's admin commands. Under the
    lock each ref is compared with the branch as it is now (dulwich ignores
    the result of its compare-and-swap): a push that waited for another one
    goes ahead only when it fast-forwards what that one left."""

    def __init__(self, backend, args, proto, deploy, max_pack_bytes: int, stderr, lock,
                 preview=None):
        super().__init__(backend, args, proto)
        self._deploy = deploy  # (commit_sha: bytes, sink) -> None, raises GitdError
        # (branch, commit_sha or None for a deletion, sink) -> what it did or None
        # (previews off), raises GitdError: the other branches' preview apps
        self._preview = preview
        self._max_pack_bytes = max_pack_bytes
        self._stderr = stderr
        self._lock = lock  # (notify) -> context manager holding the app's lock

    def _apply_pack(self, refs):
        self._update = list(refs)  # _on_update judges a ref against the whole update
        carry = reachable.PushCarry(self.repo)
        steps = super()._apply_pack(refs)
        unpacked = next(steps)  # reads and stores the pack
        if b"maximum input size" in unpacked[1]:
            unpacked = (unpacked[0], unpacked[1] + b" (settings max_pack_bytes, max_repo_bytes)")
        yield unpacked
        if unpacked[1] != b"ok":
            for _, _, ref_name in refs:  # said per ref too, not "failed to report status"
                yield ref_name, b"the pushed pack was not stored"
            return
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._lock(self._progress))
            except GitdError as exc:  # still busy, or the pusher lost its right
                refusal = exc.message.replace("\n", " ").encode()[:200]
                for _, _, ref_name in refs:
                    yield ref_name, refusal
                return
            self._record_shallow()
            # dulwich reads `refs` as it goes on: a push that waited for the
            # lock is checked against the branch as it is now
            refs[:] = [self._against_now(*command) for command in refs]
            yield from steps
            try:
                carry.after_push()
            except Exception as exc:  # noqa: BLE001 - the next clone walks instead
                log.warning("cannot carry the clone shortcut over the push", error=str(exc))

    def _record_shallow(self) -> None:
        """A shallow clone pushed where the history below its boundary is
        missing: the repository becomes shallow there (git's
        receive.shallowUpdate). Listed for every commit of the pack that
        lacks a parent, whether its ref is then accepted or not: the pack
        is stored either way, and the list says only what is true of it."""
        theirs = getattr(self.proto, "client_shallow", None)
        if theirs:
            boundary = shallow.new_boundary(self.repo.object_store, theirs,
                                            self.repo.get_shallow())
            if boundary:
                self.repo.update_shallow(boundary, None)

    def _against_now(self, old_sha, new_sha, ref_name):
        """A branch that moved while this push arrived (another push, which
        held the lock) may still be fast-forwarded to what this one brings."""
        current = _ref_value(self.repo, ref_name)
        if (current != old_sha and ZERO_SHA not in (current, new_sha)
                and can_fast_forward(self.repo, current, new_sha)):
            return current, new_sha, ref_name
        return old_sha, new_sha, ref_name

    def _receive_max_input_size(self):
        return self._max_pack_bytes

    def _progress(self, text: str) -> None:
        data = (text + "\n").encode("utf-8", "replace")
        if self._client_capabilities is not None and self.has_capability(CAPABILITY_SIDE_BAND_64K):
            self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, data)
        else:
            self._stderr(data)

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
        if _ref_value(self.repo, ref_name) != old_sha:
            return b"the branch moved while this push arrived (fetch first)"
        if ref_name not in DEPLOY_BRANCHES:
            if ref_name.startswith(b"refs/heads/"):
                return self._on_branch(ref_name[len(b"refs/heads/"):], new_sha)
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


    def _on_branch(self, branch: bytes, new_sha: bytes) -> bytes | None:
        """A branch other than the deploy branch: its preview app is
        deployed, or removed with the branch, when the app has previews on."""
        shown = branch.decode("utf-8", "replace")
        if self._preview is None:
            done = None
        elif len(self._update) > 1 and self.has_capability(CAPABILITY_ATOMIC) \
                and new_sha != ZERO_SHA:
            return b"an atomic push cannot deploy a preview beside other refs; push the branch on its own"
        else:
            try:
                done = self._preview(_branch_text(branch),
                                     None if new_sha == ZERO_SHA else new_sha, self._progress)
            except GitdError as exc:
                what = "preview removal" if new_sha == ZERO_SHA else "preview"
                return f"{what} failed: {exc.message}".replace("\n", " ").encode()[:200]
        if done is None and new_sha != ZERO_SHA:
            self._progress(f"-----> branch {shown} stored, not deployed "
                           "(pushes of main or master deploy)")
        return None


def _branch_text(branch: bytes) -> str:
    try:
        return branch.decode("utf-8")
    except UnicodeDecodeError:
        raise GitdError("the branch name is not UTF-8 text: rename the branch") from None


def _ref_value(repo: Repo, ref_name: bytes) -> bytes:
    try:
        return repo.refs[ref_name]
    except KeyError:
        return ZERO_SHA


def serve_receive_pack(repo: Repo, bridge, deploy, max_pack_bytes: int, lock,
                       preview=None) -> None:
    """`lock(notify)` holds the app's lock around the ref updates and deploy."""
    proto = _PushProtocol(bridge.recv, bridge.write)
    handler = DeployingReceivePackHandler(_OneRepoBackend(repo), ["."], proto, deploy,
                                          max_pack_bytes, bridge.write_err, lock, preview)
    _handle(handler)


def serve_upload_pack(repo: Repo, bridge) -> None:
    out = bridge.buffered()
    proto = ReceivableProtocol(out.recv, out.write)
    try:
        _handle(GitdUploadPackHandler(_OneRepoBackend(_CloneAwareRepo(repo)), ["."], proto))
    finally:
        out.flush()


def _handle(handler) -> None:
    """A client may hang up once it has read the refs (`git push -o` to a
    server without push options, `git ls-remote`): not gitd's error."""
    try:
        handler.handle()
    except HangupException as exc:
        raise ChannelClosed() from exc

"""The SSH surface: public-key auth against the store, exec requests only,
an allow-list of verbs, no shell, no forwarding, a pty only for `run`.

Every session runs on a thread of its own (never the shared default pool), so
a session that idles or streams for hours (`logs -f`, a git client that never
sends) cannot hold up anyone else's. What bounds the threads, sockets and
file descriptors is the set of caps in `Limits`: connections not yet logged
in, connections of one key, sessions of one key, sessions in total.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import shlex
import socket
import threading
import traceback
from collections import Counter

import asyncssh
import structlog

from gitd import commands, gitserve, repos, sshwindow

from gitd.core import validate
from gitd.bridge import ChannelClosed, ThreadBridge
from gitd.core.errors import DiskFull, GitdError, PermissionDenied, UsageError, is_disk_full
from gitd.service import Gitd

log = structlog.get_logger("gitd.ssh")

GIT_VERBS = ("git-receive-pack", "git-upload-pack")
REFUSED_GRACE = 5.0  # seconds a refused connection has to read why

sshwindow.credit_only_delivered_data()  # a push is held to the window, not queued whole


class Limits:
    """Counts of connections and sessions; touched only on the event loop."""

    def __init__(self, settings):
        self.settings = settings
        self.unauthenticated = 0
        self.connections = Counter()  # key fingerprint -> logged-in connections
        self.sessions = Counter()  # key fingerprint -> running sessions
        self.total_sessions = 0

    def session_refusal(self, key) -> str | None:
        s = self.settings
        if self.total_sessions >= s.max_sessions:
            return (f"gitd is busy: {s.max_sessions} sessions are running "
                    "(setting max_sessions); try again shortly")
        if self.sessions[key.fingerprint] >= s.max_sessions_per_key:
            return (f"key {key.name} has {s.max_sessions_per_key} sessions running already "
                    "(setting max_sessions_per_key); end one and try again")
        return None

    def session_started(self, key) -> None:
        self.total_sessions += 1
        self.sessions[key.fingerprint] += 1

    def session_ended(self, key) -> None:
        self.total_sessions -= 1
        self.sessions[key.fingerprint] -= 1
        if self.sessions[key.fingerprint] <= 0:
            del self.sessions[key.fingerprint]


def ack_at_once(conn) -> None:
    """Linux delays a TCP ACK by up to 40 ms, and OpenSSH's client leaves
    Nagle's algorithm on for a session without a tty (git's, a command's):
    it holds its next small packet until that ACK comes, so most sessions
    waited 40 ms or more for nothing. Quick ACKs take the waits out; the
    kernel drops back to delayed ones by itself, so they are asked for again
    on each read."""
    quickack = getattr(socket, "TCP_QUICKACK", None)  # Linux only
    sock = conn.get_extra_info("socket")
    if quickack is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    received = conn.data_received

    def data_received(data, datatype=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        except OSError:
            pass
        received(data, datatype)

    conn.data_received = data_received  # the transport calls the protocol's attribute


class GitdSSHServer(asyncssh.SSHServer):
    def __init__(self, gitd: Gitd, limits: Limits | None = None):
        self.gitd = gitd
        self.limits = limits or Limits(gitd.settings)
        self.key = None
        self.peer = None
        self.conn = None
        self._pending = False  # counted among the unauthenticated
        self._counted_key = None  # fingerprint counted in limits.connections
        self.refusal = None  # set when the connection is over a cap

    def connection_made(self, conn):
        self.conn = conn
        self.peer = conn.get_extra_info("peername")
        ack_at_once(conn)
        limit = self.gitd.settings.max_unauthenticated
        if self.limits.unauthenticated >= limit:
            log.warning("connection refused: too many not logged in", peer=str(self.peer),
                        limit=limit)
            asyncio.get_running_loop().call_soon(conn.abort)
            return
        self.limits.unauthenticated += 1
        self._pending = True

    def connection_lost(self, exc):
        self._end_pending()
        if self._counted_key:
            self.limits.connections[self._counted_key] -= 1
            if self.limits.connections[self._counted_key] <= 0:
                del self.limits.connections[self._counted_key]
            self._counted_key = None

    def _end_pending(self) -> None:
        if self._pending:
            self._pending = False
            self.limits.unauthenticated -= 1

    def begin_auth(self, username):
        return True  # always authenticate; identity is the key, not the user name

    def password_auth_supported(self):
        return False

    def kbdint_auth_supported(self):
        return False

    def public_key_auth_supported(self):
        return True

    def validate_public_key(self, username, key):
        fingerprint = key.get_fingerprint("sha256")
        found = self.gitd.store.key_by_fingerprint(fingerprint)
        if found is None:
            log.info("key refused", fingerprint=fingerprint, peer=str(self.peer))
            return False
        self.key = found
        return True

    def auth_completed(self):
        self._end_pending()
        fingerprint = self.key.fingerprint
        limit = self.gitd.settings.max_connections_per_key
        if self.limits.connections[fingerprint] >= limit:
            log.warning("connection refused: too many for key", key=self.key.name, limit=limit)
            # its first session says why; the connection goes soon either way
            self.refusal = (f"key {self.key.name} has {limit} connections open already "
                            "(setting max_connections_per_key); close one and try again")
            asyncio.get_running_loop().call_later(REFUSED_GRACE, self.conn.abort)
            return
        self.limits.connections[fingerprint] += 1
        self._counted_key = fingerprint
        log.info("authenticated", key=self.key.name, peer=str(self.peer))


def in_own_thread(func, *args, name: str = "gitd-session"):
    """Run a blocking `func(*args)` on a new daemon thread; await its result.
    A session's thread lives as long as the session, so sessions never wait
    for each other's threads (the callers' caps bound how many there are)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(setter, value):
        if not future.done():
            setter(value)

    def body():
        try:
            result = func(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(settle, future.set_exception, exc)
        else:
            loop.call_soon_threadsafe(settle, future.set_result, result)

    threading.Thread(target=body, daemon=True, name=name).start()
    return future


class SSHService:
    def __init__(self, gitd: Gitd):
        self.gitd = gitd
        self.server = None
        self.active: set[asyncio.Task] = set()
        self.limits = Limits(gitd.settings)

    async def start(self, host: str, port: int, host_key_path) -> int:
        self.server = await asyncssh.create_server(
            lambda: GitdSSHServer(self.gitd, self.limits), host, port,
            server_host_keys=[str(host_key_path)],
            process_factory=self._handle,
            encoding=None,
            allow_pty=True,  # refused below for every verb but `run`
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            keepalive_interval=30,
            keepalive_count_max=3,
            login_timeout=self.gitd.settings.login_timeout,
        )
        sockets = self.server.sockets
        return sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        if self.server:
            self.server.close()

    async def _handle(self, process):
        conn = process.get_extra_info("connection")
        owner: GitdSSHServer = conn.get_owner()
        if owner.refusal:
            await _write_error(process, owner.refusal)
            _exit(process, 1)
            return
        counted = owner.key
        refusal = self.limits.session_refusal(counted)
        if refusal:  # checked before anything starts a thread
            log.warning("session refused", key=counted.name, reason=refusal)
            await _write_error(process, refusal)
            _exit(process, 1)
            return
        self.limits.session_started(counted)  # counted at once: no burst slips past the cap
        task = asyncio.current_task()
        self.active.add(task)
        try:
            key = await self._current_key(owner)
            if key is None:
                await _write_error(process, "this key was removed; the connection is closed")
                # closed a moment later, so the client reads why first
                asyncio.get_running_loop().call_later(1.0, conn.close)
                status = 255
            else:
                status = await self._run(process, key)
        finally:
            self.limits.session_ended(counted)
            self.active.discard(task)
        _exit(process, status)

    async def _current_key(self, owner: GitdSSHServer):
        """The connection's key as the store has it now: None once removed.
        Checked for every session, so a removed key or a revoked grant stops
        counting from the next command of a connection already open
        (ssh -o ControlMaster)."""
        key = owner.key
        if key is None:
            return None
        found = await in_own_thread(self.gitd.store.key_by_fingerprint, key.fingerprint,
                                    name="gitd-key-check")
        if found is None or found.name != key.name:
            log.info("session refused: key removed", key=key.name)
            return None
        owner.key = found
        return found

    async def _run(self, process, key) -> int:
        bridge = ThreadBridge(asyncio.get_running_loop(), process)
        # a git client or a command's stdin (keys:add, KEY=@-) that stops
        # sending is given up on; `run` polls stdin with its own timeout
        bridge.idle_timeout = self.gitd.settings.idle_timeout
        has_pty = process.get_terminal_type() is not None
        command_line = process.command
        try:
            if command_line is None:
                # bare `ssh host`: help, not a shell
                ctx = commands.Context(self.gitd, key, bridge)
                await in_own_thread(commands.show_help, ctx)
                return 0
            try:
                argv = shlex.split(command_line)
            except ValueError as exc:
                raise UsageError(f"cannot parse command: {exc}")
            if not argv:
                raise UsageError("empty command; run `help`")
            log.info("command", key=key.name, verb=argv[0])
            if argv[0] in GIT_VERBS:
                if has_pty:
                    raise UsageError("git does not take a pty")
                with git_session():
                    return await in_own_thread(self._git, argv, key, bridge,
                                               name=f"gitd-{argv[0]}")
            ctx = commands.Context(self.gitd, key, bridge, has_pty=has_pty)
            return await in_own_thread(commands.dispatch, ctx, argv, name=f"gitd-{argv[0][:30]}")
        except ChannelClosed:
            return 255
        except GitdError as exc:
            await _write_error(process, exc.message)
            return exc.exit_status
        except Exception as exc:
            if is_disk_full(exc):  # sqlite's "database or disk is full" among them
                full = DiskFull.at(self.gitd.settings.data_dir, "the command could not finish")
                log.warning("disk full", command=command_line, error=str(exc))
                await _write_error(process, full.message)
                return full.exit_status
            log.error("internal error", command=command_line, exc=traceback.format_exc())
            await _write_error(process, "internal error; see gitd's log")
            return 1

    def _git(self, argv: list[str], key, bridge) -> int:
        if len(argv) != 2:
            raise UsageError(f"usage: {argv[0]} APP")
        app = validate.repo_path_to_app(argv[1])
        store = self.gitd.store
        if not store.app_exists(app):
            raise GitdError(f"app {app!r} does not exist; create it first: ssh ... apps:create {app}")
        if not key.is_admin and not store.granted(app, key.name):
            raise PermissionDenied()
        with self.gitd.using_repo(app):
            repo = gitserve.open_repo(self.gitd.settings.repos_dir, app)
            try:
                if argv[0] == "git-upload-pack":
                    gitserve.serve_upload_pack(repo, bridge)
                    return 0
                settings = self.gitd.settings
                allowance = repos.push_allowance(gitserve.repo_path(settings.repos_dir, app), app,
                                                 settings.max_repo_bytes, settings.max_pack_bytes)
                gitserve.serve_receive_pack(
                    repo, bridge, self.gitd.deploy_push(app, repo, key.name), allowance,
                    lambda notify: self.gitd.push_lock(app, key, notify=notify),
                    self.gitd.preview_push(app, repo, key.name))
            finally:
                repo.close()
        self.gitd.collect_repo_later(app)
        return 0


def _libc_trim():
    """glibc's malloc_trim, or None (another libc). A big clone or push
    leaves the heap grown; glibc keeps freed memory for later unless asked
    to hand it back, and gitd mostly idles between sessions."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_trim = _libc_trim()
_git_sessions = 0
_git_sessions_guard = threading.Lock()


@contextlib.contextmanager
def git_session():
    """Counts git sessions; a moment after the last one ends, memory goes
    back. Not at once: a collection holds the interpreter while it runs
    (~20 ms of a big heap), and the session's end would wait for it."""
    global _git_sessions, _trim_timer
    with _git_sessions_guard:
        _git_sessions += 1
    try:
        yield
    finally:
        with _git_sessions_guard:
            _git_sessions -= 1
        if _trim_timer is not None:
            _trim_timer.cancel()  # one trim after a burst of sessions
        _trim_timer = asyncio.get_running_loop().call_later(TRIM_DELAY,
                                                            _give_back_memory_when_idle)


TRIM_DELAY = 1.0  # seconds after the last git session
_trim_timer: asyncio.TimerHandle | None = None


def _give_back_memory_when_idle() -> None:
    with _git_sessions_guard:
        if _git_sessions:
            return  # the session that runs now gives it back when it ends
    threading.Thread(target=_give_back_memory, daemon=True, name="trim").start()


def _give_back_memory() -> None:
    gc.collect()
    if _trim is not None:
        _trim(0)


def _exit(process, status: int) -> None:
    try:
        process.exit(status)
    except OSError:
        pass


async def _write_error(process, message: str) -> None:
    text = "".join(f" !     {line}\n" for line in message.splitlines() or [""])
    try:
        process.stderr.write(text.encode())
        await process.stderr.drain()
    except (OSError, asyncssh.Error):
        pass

"""The SSH surface: public-key auth against the store, exec requests only,
an allow-list of verbs, no shell, no forwarding, a pty only for `run`."""

from __future__ import annotations

import asyncio
import shlex
import traceback

import asyncssh
import structlog

from gitd import commands, gitserve, validate
from gitd.bridge import ChannelClosed, ThreadBridge
from gitd.errors import GitdError, PermissionDenied, UsageError
from gitd.service import Gitd

log = structlog.get_logger("gitd.ssh")

GIT_VERBS = ("git-receive-pack", "git-upload-pack")


class GitdSSHServer(asyncssh.SSHServer):
    def __init__(self, gitd: Gitd):
        self.gitd = gitd
        self.key = None
        self.peer = None

    def connection_made(self, conn):
        self.peer = conn.get_extra_info("peername")

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
        log.info("authenticated", key=self.key.name, peer=str(self.peer))


class SSHService:
    def __init__(self, gitd: Gitd):
        self.gitd = gitd
        self.server = None
        self.active: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, host_key_path) -> int:
        self.server = await asyncssh.create_server(
            lambda: GitdSSHServer(self.gitd), host, port,
            server_host_keys=[str(host_key_path)],
            process_factory=self._handle,
            encoding=None,
            allow_pty=True,  # refused below for every verb but `run`
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            keepalive_interval=30,
        )
        sockets = self.server.sockets
        return sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        if self.server:
            self.server.close()

    async def _handle(self, process):
        task = asyncio.current_task()
        self.active.add(task)
        try:
            status = await self._run(process)
        finally:
            self.active.discard(task)
        try:
            process.exit(status)
        except OSError:
            pass

    async def _run(self, process) -> int:
        conn = process.get_extra_info("connection")
        owner: GitdSSHServer = conn.get_owner()
        key = owner.key
        bridge = ThreadBridge(asyncio.get_running_loop(), process)
        has_pty = process.get_terminal_type() is not None
        command_line = process.command
        try:
            if command_line is None:
                # bare `ssh host`: help, not a shell
                ctx = commands.Context(self.gitd, key, bridge)
                await asyncio.to_thread(commands.show_help, ctx)
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
                return await asyncio.to_thread(self._git, argv, key, bridge)
            ctx = commands.Context(self.gitd, key, bridge, has_pty=has_pty)
            return await asyncio.to_thread(commands.dispatch, ctx, argv)
        except ChannelClosed:
            return 255
        except GitdError as exc:
            await _write_error(process, exc.message)
            return exc.exit_status
        except Exception:
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
        repo = gitserve.open_repo(self.gitd.settings.repos_dir, app)
        try:
            if argv[0] == "git-upload-pack":
                gitserve.serve_upload_pack(repo, bridge)
                return 0
            gitserve.serve_receive_pack(
                repo, bridge, self.gitd.deploy_push(app, repo, key.name),
                self.gitd.settings.max_pack_bytes,
                lambda notify: self.gitd.app_lock(app, notify=notify))
            return 0
        finally:
            repo.close()


async def _write_error(process, message: str) -> None:
    text = "".join(f" !     {line}\n" for line in message.splitlines() or [""])
    try:
        process.stderr.write(text.encode())
        await process.stderr.drain()
    except (OSError, asyncssh.Error):
        pass

"""The one error boundary: commands raise GitdError, the SSH layer prints it."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3


class GitdError(Exception):
    """An expected failure, shown to the user as ` !     message`."""

    exit_status = 1

    def __init__(self, message: str, exit_status: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_status is not None:
            self.exit_status = exit_status


class UsageError(GitdError):
    """Bad arguments for a command."""

    exit_status = 2


class NotFound(GitdError):
    """An app, release, key or domain that does not exist."""


class PermissionDenied(GitdError):
    def __init__(self, message: str = "permission denied"):
        super().__init__(message)


class BuildError(GitdError):
    """A build that failed: the message says which step."""


class DeployError(GitdError):
    """A deploy that failed: the old release keeps serving."""


class Conflict(GitdError):
    """A name already taken, or a change that must wait for another one
    (the app's deploy lock): try again later."""


class Taken(UsageError, Conflict):
    """A name that is someone else's (another app's default host, gitd's own
    API host): bad arguments to SSH (exit status 2), a conflict (409) to HTTP."""


class TooLarge(GitdError):
    """Input beyond a limit."""


class RateLimited(GitdError):
    """Too many attempts: `retry_after` seconds until the next is heard."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class DiskFull(GitdError):
    """No space left where gitd writes (the data dir's filesystem, or the
    engine's): the message names the filesystem and what is free on it."""

    @classmethod
    def at(cls, path, what: str = "") -> DiskFull:
        path = os.path.abspath(path)
        mount = _mount_point(path)
        try:
            free = f"{shutil.disk_usage(mount).free // 1024} KiB free"
        except OSError:
            free = "free space unknown"
        where = mount if mount == path else f"{mount} (holding {path})"
        return cls(f"no space left on device: {what + ': ' if what else ''}the filesystem "
                   f"mounted at {where} is full ({free}): free some space there and try again")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or a quota, from the OS or through sqlite (SQLITE_FULL)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


def _mount_point(path: str) -> str:
    while not os.path.ismount(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path

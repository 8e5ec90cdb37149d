"""The one error boundary: commands raise GitdError, the SSH layer prints it."""


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

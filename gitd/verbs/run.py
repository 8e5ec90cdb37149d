"""run: a one-off command in a new container made from the current release's
image, with its config; removed afterwards. The scheduler makes it
(hooks.scheduler: a container here; a one-off task on the swarm).

The verb decides what runs (access, the release, the image, its spec) and
hands the front-end the task to bridge: its I/O (attach, start, send,
end_input, resize, wait, stop) belongs to the channel that asked.
"""

from __future__ import annotations

import secrets
from contextlib import contextmanager
from typing import Callable, Iterator

from gitd.core import resources
from gitd.core.errors import GitdError, UsageError
from gitd.verbs import Session
from hooks import components, router
from hooks.specs import app_network, oneoff_spec, service_of

MAX_ARGS_BYTES = 128 * 1024


def check_command(argv: list[str]) -> list[str]:
    """A non-empty list of strings without NUL, of a size an exec takes."""
    if not isinstance(argv, list) or not argv:
        raise UsageError("name a command to run")
    if any(not isinstance(a, str) or "\0" in a for a in argv):
        raise UsageError("a command is a list of strings without NUL")
    if sum(len(a.encode("utf-8", "surrogateescape")) + 1 for a in argv) > MAX_ARGS_BYTES:
        raise UsageError(f"the command is longer than {MAX_ARGS_BYTES} bytes")
    return argv


@contextmanager
def oneoff(s: Session, app: str, argv: list[str], *, service: str = "", tty: bool = False,
           abandoned: Callable[[], bool] | None = None) -> Iterator[object]:
    """The one-off task that runs `argv` in the current release of `app` (of
    its app.json `service`), created and not started, removed on leaving the
    block whatever happened. `abandoned()` says the client went away while
    the task was being placed (swarm)."""
    s.require_admin()
    if service and not components.COMPONENT_NAME.fullmatch(service):
        raise UsageError(f"invalid service name {service[:40]!r}")
    check_command(argv)
    s.app(app)
    release = s.store.require_current_release(app)
    image_id = service_of(release, service).get("image_id") or release.image_id
    router.refuse_routing_labels(
        (s.gitd.engine.image_attrs(image_id).get("Config") or {}).get("Labels"),
        f"the image of v{release.version}" + (f" (service {service})" if service else ""))
    limits = resources.container_args(
        resources.effective(s.settings, s.store.get_app(app).settings))
    spec = oneoff_spec(s.settings, release, argv, tty, secrets.token_hex(3), limits, service,
                       service_networks=s.gitd.pipeline.service_networks(app))
    scheduler = s.gitd.scheduler
    scheduler.prepare(app_network(s.settings.instance, app), app)
    task = scheduler.oneoff(spec, abandoned=abandoned)
    try:
        yield task
    finally:
        task.remove()


def start(task, width: int = 0, height: int = 0) -> None:
    """Start an attached task; a command that cannot start exits 127 (not
    found) or 126 (not runnable), as a shell says."""
    try:
        task.start(width, height)
    except GitdError as exc:
        missing = "not found" in exc.message or "no such file" in exc.message
        raise GitdError(exc.message, exit_status=127 if missing else 126) from exc

"""Web containers started again after their deploy: by the engine (its
restart policy after a crash, or its own restart) or by gitd (hooks.health).

Such a container is out of its deploy's route file (hooks.docker_routes)
until Docker calls it healthy, and where gitd probes deploys itself Docker
checks only every `health_interval` (hooks.checks.web_healthcheck): without
more, a crashed app would answer 503 for up to that long after it is back.
The watch hands each such container to `serve(container)`, which probes it
and writes it back into its deploy's route file at once, as a deploy does.
"""

from __future__ import annotations

import queue
import threading
import time

import structlog

from gitd.core.errors import Conflict
from hooks.dynos import parse_time
from hooks.engine import LABEL_APP, LABEL_PROCESS, LABEL_ROLE

log = structlog.get_logger("gitd.restarts")

# seconds between a container's creation and a start that is not its
# deploy's first (a deploy starts what it creates at once)
STARTED_AGAIN_AFTER = 10.0
WORKERS = 4  # an engine restart starts every app's containers at once
RETRY_AFTER = 2.0  # seconds: a container whose app is busy (a push, a command) is looked at again
WEB = {LABEL_ROLE: "service", LABEL_PROCESS: "web"}


def started_again(attrs: dict) -> bool:
    """Whether the container's current run is not its first: the engine
    restarted it, or it started long after its creation."""
    state = attrs.get("State") or {}
    if attrs.get("RestartCount"):
        return True
    created, started = parse_time(attrs.get("Created")), parse_time(state.get("StartedAt"))
    return created is not None and started is not None and started - created > STARTED_AGAIN_AFTER


def waits_for_docker(attrs: dict) -> bool:
    """Running, and not routed by its health until Docker's first check."""
    state = attrs.get("State") or {}
    return state.get("Status") == "running" and (state.get("Health") or {}).get("Status") == "starting"


class RestartWatch:
    """Listens for the start of this instance's web containers; each that
    started again and waits for Docker's first check goes to `serve`. When
    the listening (re)starts (gitd's start, the engine back after a restart:
    its events meanwhile are lost), the running ones are looked at once."""

    def __init__(self, engine, serve, give_up: float):
        """`serve(container)` raises Conflict while its app is busy: the
        container is looked at again every RETRY_AFTER seconds, for
        `give_up` seconds at most (Docker's own check routes it by then)."""
        self.engine = engine
        self.serve = serve
        self.give_up = give_up
        self._todo: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()  # queued or being looked at: one worker each
        self._busy_since: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self) -> "RestartWatch":
        threading.Thread(target=self._listen, daemon=True, name="restart-watch").start()
        for index in range(WORKERS):
            threading.Thread(target=self._work, daemon=True, name=f"restart-serve-{index}").start()
        return self

    def _listen(self) -> None:
        while True:
            try:
                events = self.engine.events(None, ("start",), **WEB)
                for listed in self.engine.listed(None, **WEB):
                    if listed.status == "running" and listed.health == "starting":
                        self.queue(listed.id)
                for event in events:
                    self.queue(event.get("id", ""))
            except Exception:  # noqa: BLE001 - the engine restarted: listen again
                pass
            time.sleep(1.0)  # a stream that ended, or an engine away: not in a tight loop

    def queue(self, container_id: str) -> None:
        with self._lock:
            if not container_id or container_id in self._queued:
                return
            self._queued.add(container_id)
        self._todo.put(container_id)

    def _work(self) -> None:
        while True:
            container_id = self._todo.get()
            retry = False
            try:
                self.look(container_id)
            except Conflict:  # its app is busy: no worker waits for it
                retry = self._still_worth_it(container_id)
            except Exception as exc:  # noqa: BLE001 - Docker's own check routes it later
                log.warning("cannot serve a restarted web container", container=container_id[:12],
                            error=str(exc))
            with self._lock:
                self._queued.discard(container_id)
                if not retry:
                    self._busy_since.pop(container_id, None)
            if retry:
                timer = threading.Timer(RETRY_AFTER, self.queue, (container_id,))
                timer.daemon = True
                timer.start()

    def _still_worth_it(self, container_id: str) -> bool:
        with self._lock:
            since = self._busy_since.setdefault(container_id, time.monotonic())
        return time.monotonic() - since < self.give_up

    def look(self, container_id: str) -> bool:
        """Serve the container if it started again and waits for Docker's
        check; True when it was handed to `serve`."""
        container = self.engine.container(container_id)
        if container is None or not (started_again(container.attrs)
                                     and waits_for_docker(container.attrs)):
            return False
        log.info("a web container started again: probing and routing it",
                 app=container.labels.get(LABEL_APP, ""), container=container.name)
        self.serve(container)
        return True

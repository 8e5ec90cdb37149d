"""An app's health after its deploy: what to call its state (`app_state`,
for apps:info and doctor), and the watcher that restarts a web container
Docker keeps calling unhealthy, with a bounded backoff.

An unhealthy container leaves its deploy's route file (hooks.docker_routes;
an external Traefik's docker provider drops its router); the app's
503 routes (hooks.router.fallback_config) then answer for it. A container
unhealthy for `unhealthy_restart` seconds is restarted; if it is unhealthy
again, the next restart waits twice as long, up to MAX_BACKOFF. A container
healthy again for MAX_BACKOFF starts over.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import structlog

from hooks.engine import LABEL_APP, LABEL_PROCESS, LABEL_ROLE

log = structlog.get_logger("gitd.health")

MAX_BACKOFF = 900.0  # seconds: the longest wait between two restarts of one container


def app_state(rows: list[dict], live_seq: int | None, stopped: bool) -> str:
    """In words, from hooks.dynos rows: whether the app serves."""
    if live_seq is None:
        return "not deployed"
    if stopped:
        return "stopped (ps:start to run it again; its routes answer 503)"
    web = [r for r in rows if r["type"] == "web" and r["role"] == "service" and r["seq"] == live_seq]
    if not web:
        return "web scaled to 0: not serving (its routes answer 503)"
    running = [r for r in web if r["state"] == "running"]
    if any(r["health"] in (None, "healthy") for r in running):
        return "running"
    if any(r["health"] == "starting" for r in running):
        return "starting"
    names = ", ".join(r["name"] for r in web)
    return f"unhealthy: no healthy web process ({names}); its routes answer 503"


@dataclass
class _Watch:
    unhealthy_since: float | None = None
    healthy_since: float | None = None
    restarts: int = 0  # since it was last healthy for MAX_BACKOFF
    next_restart: float = 0.0


class HealthWatcher:
    """Polls the instance's live web containers; `restart(container)` one
    that stays unhealthy, `record(app, container_name, count)` after."""

    def __init__(self, engine, after: float, restart, record, clock=time.monotonic):
        self.engine = engine
        self.after = after
        self.restart = restart
        self.record = record
        self.clock = clock
        self.watches: dict[str, _Watch] = {}
        self._stop = threading.Event()

    def tick(self) -> list[str]:
        """One look; returns the names of the containers restarted."""
        now = self.clock()
        seen, restarted = set(), []
        # listed, not inspected: one request a look, whatever the app count;
        # only a container to restart is fetched whole
        for listed in self.engine.listed(None, **{LABEL_ROLE: "service", LABEL_PROCESS: "web"}):
            if listed.status != "running":
                continue
            seen.add(listed.name)
            watch = self.watches.setdefault(listed.name, _Watch())
            health = listed.health
            if health != "unhealthy":
                watch.unhealthy_since = None
                if health == "healthy":
                    if watch.healthy_since is None:
                        watch.healthy_since = now
                    if now - watch.healthy_since >= MAX_BACKOFF:
                        watch.restarts = 0
                continue
            watch.healthy_since = None
            if watch.unhealthy_since is None:
                watch.unhealthy_since = now
            if now - watch.unhealthy_since < self.after or now < watch.next_restart:
                continue
            watch.restarts += 1
            watch.next_restart = now + min(MAX_BACKOFF, self.after * 2 ** watch.restarts)
            watch.unhealthy_since = None
            app = listed.labels.get(LABEL_APP, "")
            log.warning("restarting a web container that stays unhealthy", app=app,
                        container=listed.name, restarts=watch.restarts)
            container = self.engine.container(listed.id)
            if container is None:  # removed since the listing (a deploy retired it)
                continue
            try:
                self.restart(container)
            except Exception as exc:  # noqa: BLE001 - the next look tries again
                log.warning("cannot restart an unhealthy container", container=listed.name,
                            error=str(exc))
                continue
            restarted.append(listed.name)
            self.record(app, listed.name, watch.restarts)
        for gone in set(self.watches) - seen:
            del self.watches[gone]
        return restarted

    def run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - Docker away for a moment: look again
                log.warning("health watch failed", error=str(exc))

    def start(self, every: float) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(every,), daemon=True, name="health-watch")
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

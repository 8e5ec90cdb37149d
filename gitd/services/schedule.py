"""Scheduled backups, run inside gitd by one thread.

A backup is due when its schedule fired since the later of the last backup
attempt and the moment the schedule was set; so a backup missed while gitd
was down runs once when it is back. Each attempt (failed ones too) is
recorded on the service, which is what services:info, apps:info and
`gitd doctor` show.
"""

from __future__ import annotations

import threading
import time

import structlog

from gitd.core import notify
from gitd.core.errors import GitdError
from gitd.core import cron

log = structlog.get_logger("gitd.backups")

TICK = 15.0  # seconds between looks at the schedules


def due(svc, now: float) -> bool:
    if not svc.schedule:
        return False
    since = max(svc.last_backup_at or 0.0, svc.schedule_since or svc.created_at)
    try:
        return cron.parse(svc.schedule).next_after(since) <= now
    except GitdError:
        return False


class BackupScheduler:
    def __init__(self, gitd, tick: float = TICK):
        self.gitd = gitd
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # dumps cut short by a stop or crash are never a backup
        for partial in (self.gitd.settings.data_dir / "backups").glob("*/*.partial"):
            partial.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="backups")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.run_due(time.time())
            except Exception:  # noqa: BLE001 - the scheduler must outlive one bad look
                log.exception("backup scheduler")

    def run_due(self, now: float) -> list[str]:
        done = []
        for svc in self.gitd.store.list_services():
            if self._stop.is_set() or not due(svc, now):
                continue
            done.append(svc.name)
            self.backup(svc)
        return done

    def backup(self, svc) -> None:
        services = self.gitd.services
        try:
            with self.gitd.locks.hold(f"service:{svc.name}", self.gitd.settings.lock_wait):
                path = services.backup_to_file(svc)
                services.prune_backups(svc, svc.keep)
            log.info("scheduled backup", service=svc.name, path=str(path))
        except Exception as exc:  # noqa: BLE001 - recorded on the service, shown everywhere
            self.gitd.store.update_service(svc.name, last_backup_at=time.time(),
                                           last_backup_ok=False,
                                           last_backup_message=str(exc)[:500])
            log.warning("scheduled backup failed", service=svc.name, error=str(exc))
            linked = sorted(self.gitd.store.links_of_service(svc.name))
            notify.emit(linked, "backup.failed", service=svc.name, apps=linked,
                        error=notify.clip(exc, 500))

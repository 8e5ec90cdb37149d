"""The sqlite state, via sqlite-utils, behind small typed accessors.

One connection guarded by a lock: gitd's writes are few and small, and the
pipeline runs in worker threads. Store is made of one part per concern
(the modules of this package); records.py holds what they take and give.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from gitd.core.store.access import AccessRecords
from gitd.core.store.apps import AppRecords
from gitd.core.store.cron import CronRecords
from gitd.core.store.notify import NotifyRecords
from gitd.core.store.records import (ACTIVE_STATUSES, CRON_RUNS_KEPT, DEPLOYMENT_ENDS, JSON_FIELDS,
                                     App, CronRun, Deployment, HostRoute, Key, Preview, Release,
                                     Service, Token, now)
from gitd.core.store.releases import ReleaseRecords
from gitd.core.store.schema import SCHEMA_VERSION, Migrations, _refuse_newer_schema
from gitd.core.store.services import ServiceRecords

__all__ = ["SCHEMA_VERSION", "Store", "ACTIVE_STATUSES", "DEPLOYMENT_ENDS", "JSON_FIELDS", "now",
           "Key", "App", "Token", "HostRoute", "Release", "Preview", "Deployment", "Service",
           "CronRun", "CRON_RUNS_KEPT"]


class Store(Migrations, AccessRecords, AppRecords, ReleaseRecords, ServiceRecords,
            NotifyRecords, CronRecords):
    def __init__(self, path: Path):
        self.path = Path(path)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            _refuse_newer_schema(conn)
        except BaseException:
            conn.close()
            raise
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=5000")
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        self._migrate()

    @contextmanager
    def _tx(self):
        with self._lock:
            if self.db.conn.in_transaction:  # a step of _migrate: its transaction holds this too
                yield self.db
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # meta

    @property
    def instance(self) -> str:
        return self.db["meta"].get("instance")["value"]

"""The schema: its version, and the migration steps a start runs in one transaction."""

from __future__ import annotations

import secrets
import sqlite3

import sqlite_utils

from gitd.core.errors import GitdError

# The schema this gitd writes: bump it with each _migrate_* step that changes
# the schema, so that an older gitd refuses a data dir it would misread.
# 1: up to services; 2: routes, nodes, webhooks, deployments, tokens;
# 3: cron runs, notifications, previews, dashboard sessions, token names per key.
SCHEMA_VERSION = 3


def _written_schema(conn: sqlite3.Connection) -> int:
    """The schema the database was last written by (0: a new file)."""
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise GitdError(f"the state database is unreadable: {exc}") from exc
    try:
        return int(row[0]) if row else 0
    except (TypeError, ValueError):
        raise GitdError(f"the state database records no schema gitd knows ({row[0]!r})") from None


def _refuse_newer_schema(conn: sqlite3.Connection) -> None:
    written = _written_schema(conn)
    if written > SCHEMA_VERSION:
        raise GitdError(f"this data dir was written by a newer gitd (schema {written}); "
                        f"this gitd knows up to {SCHEMA_VERSION}: upgrade gitd")


def _record_schema(db: sqlite_utils.Database) -> None:
    if _written_schema(db.conn) != SCHEMA_VERSION:
        db["meta"].upsert({"key": "schema", "value": str(SCHEMA_VERSION)}, pk="key")


class Migrations:
    """Part of Store: creates and migrates the tables."""

    def _migrate(self) -> None:
        """Every step in one transaction, the schema recorded last: a start
        killed mid-way leaves the database as it was, and the next start
        runs the steps again (each is idempotent)."""
        with self._tx() as db:
            _refuse_newer_schema(db.conn)  # checked again under the write lock
            if "meta" not in db.table_names():
                db["meta"].create({"key": str, "value": str}, pk="key")
                db["keys"].create(
                    {"name": str, "fingerprint": str, "public_key": str,
                     "is_admin": int, "created_at": float}, pk="name")
                db["keys"].create_index(["fingerprint"], unique=True)
                db["apps"].create(
                    {"name": str, "created_at": float, "current_release": int,
                     "live_seq": int, "next_seq": int, "settings": str, "scale": str},
                    pk="name")
                db["config"].create({"app": str, "key": str, "value": str}, pk=("app", "key"))
                db["domains"].create({"host": str, "app": str}, pk="host")
                db["grants"].create({"app": str, "key_name": str}, pk=("app", "key_name"))
                db["releases"].create(
                    {"app": str, "version": int, "status": str, "kind": str, "commit": str,
                     "image": str, "image_id": str, "buildpack": str, "pushed_by": str,
                     "description": str, "config": str, "procfile": str, "port": int,
                     "created_at": float, "finished_at": float, "log": str, "app_json": str},
                    pk=("app", "version"))
                db["meta"].insert_all([
                    {"key": "schema", "value": str(SCHEMA_VERSION)},
                    {"key": "instance", "value": secrets.token_hex(4)},
                ])
            self._migrate_services(db)
            self._migrate_routes()
            if "components" not in self.db["releases"].columns_dict:
                self.db["releases"].add_column("components", str)
            self._migrate_nodes(db)
            self._migrate_webhooks(db)
            self._migrate_deployments(db)
            self._migrate_tokens(db)
            self._migrate_notify(db)
            self._migrate_previews(db)
            self._migrate_dashboard(db)
            self._migrate_token_names(db)
            self._migrate_cron(db)
            _record_schema(db)

    def _migrate_services(self, db) -> None:
        """Services, links and mounts (issue 12): added to an existing gitd.db too."""
        tables = db.table_names()
        if "services" not in tables:
            db["services"].create(
                {"name": str, "kind": str, "version": str, "image": str, "password": str, "volume": str,
                 "created_at": float, "exposed_port": int, "schedule": str, "keep": int,
                 "schedule_since": float,
                 "last_backup_at": float, "last_backup_ok": int, "last_backup_message": str},
                pk="name")
        if "service_links" not in tables:
            db["service_links"].create({"service": str, "app": str, "env_var": str},
                                       pk=("service", "app"))
        if "mounts" not in tables:
            db["mounts"].create({"app": str, "target": str, "source": str, "type": str},
                                pk=("app", "target"))
        if "mounts" not in db["releases"].columns_dict:
            db["releases"].add_column("mounts", str)

    def _migrate_nodes(self, db) -> None:
        """The swarm node a service or an app's volumes live on (issue #16)."""
        for table in ("services", "apps"):
            if "node" not in db[table].columns_dict:
                db[table].add_column("node", str)

    def _migrate_webhooks(self, db) -> None:
        """Forge webhooks (issue #23): each app's secret, and the deliveries
        already acted on (a forge redelivers)."""
        tables = db.table_names()
        if "webhooks" not in tables:
            db["webhooks"].create({"app": str, "secret": str, "created_at": float}, pk="app")
        if "webhook_deliveries" not in tables:
            db["webhook_deliveries"].create({"app": str, "delivery": str, "received_at": float},
                                            pk=("app", "delivery"))

    def _migrate_deployments(self, db) -> None:
        """Deployments (issue #23): every deploy, whatever started it."""
        if "deployments" not in db.table_names():
            db["deployments"].create(
                {"id": int, "app": str, "status": str, "trigger": str, "by": str, "ref": str,
                 "commit": str, "image": str, "release": int, "error": str, "log": str,
                 "log_bytes": int, "created_at": float, "started_at": float,
                 "finished_at": float}, pk="id")
            db["deployments"].create_index(["app", "id"])

    def _migrate_tokens(self, db) -> None:
        """API tokens (issue #23), each tied to the key whose powers it carries."""
        if "tokens" not in db.table_names():
            db["tokens"].create(
                {"id": str, "name": str, "key_name": str, "secret_hash": str,
                 "created_at": float, "last_used_at": float, "expires_at": float}, pk="id")
            db["tokens"].create_index(["name"], unique=True)
            db["tokens"].create_index(["key_name"])

    def _migrate_notify(self, db) -> None:
        """Notification subscriptions (issue #25; app NULL: every app) and
        their last delivery attempts."""
        tables = db.table_names()
        if "notify_subscriptions" not in tables:
            db["notify_subscriptions"].create(
                {"id": int, "app": str, "url": str, "events": str, "format": str, "secret": str,
                 "by": str, "internal_ok": int, "created_at": float}, pk="id")
            db["notify_subscriptions"].create_index(["app"])
        if "notify_deliveries" not in tables:
            db["notify_deliveries"].create(
                {"id": int, "subscription": int, "event": str, "delivery": str, "attempt": int,
                 "status": int, "error": str, "at": float}, pk="id")
            db["notify_deliveries"].create_index(["subscription", "id"])

    def _migrate_previews(self, db) -> None:
        """Preview apps (issue #25): which app is the preview of which
        (parent, branch), and when a push last updated it (its TTL runs from there)."""
        if "previews" not in db.table_names():
            db["previews"].create(
                {"name": str, "parent": str, "branch": str, "commit": str,
                 "created_at": float, "updated_at": float}, pk="name")
            db["previews"].create_index(["parent", "branch"], unique=True)

    def _migrate_dashboard(self, db) -> None:
        """Dashboard sessions (issue #24): the sha256 of each session id, the
        token it was opened with (revoking the token ends it) and its CSRF token."""
        if "dashboard_sessions" not in db.table_names():
            db["dashboard_sessions"].create(
                {"id_hash": str, "token_id": str, "csrf": str, "created_at": float,
                 "expires_at": float}, pk="id_hash")
            db["dashboard_sessions"].create_index(["token_id"])

    def _migrate_token_names(self, db) -> None:
        """A token's name is unique per key, not across keys (a name taken by
        another key was a 409 that told a deployer that key's token names)."""
        names = {tuple(i.columns): i for i in db["tokens"].indexes}
        if ("name",) in names and names[("name",)].unique:
            db.execute(f"DROP INDEX [{names[('name',)].name}]")
        if ("key_name", "name") not in names:
            db["tokens"].create_index(["key_name", "name"], unique=True)

    def _migrate_cron(self, db) -> None:
        """Cron jobs (issue #25): the moment each job's next run is counted
        from, and its runs (a bounded tail of their output)."""
        tables = db.table_names()
        if "cron_state" not in tables:
            db["cron_state"].create({"app": str, "job": str, "since": float}, pk=("app", "job"))
        if "cron_runs" not in tables:
            db["cron_runs"].create(
                {"id": int, "app": str, "job": str, "trigger": str, "status": str,
                 "exit_code": int, "release": int, "started_at": float, "finished_at": float,
                 "output": str}, pk="id")
            db["cron_runs"].create_index(["app", "job", "id"])

    def _migrate_routes(self) -> None:
        """Path routes (issue #13): `routes` replaces `domains`, a bare host
        of an existing gitd.db becoming the prefix "/"."""
        db = self.db
        if "routes" in db.table_names():
            return
        with self._tx():
            db["routes"].create({"host": str, "path": str, "app": str, "strip_prefix": int},
                                pk=("host", "path"))
            db["routes"].create_index(["app"])
            if "domains" in db.table_names():
                db["routes"].insert_all(
                    [{"host": r["host"], "path": "/", "app": r["app"], "strip_prefix": 0}
                     for r in db["domains"].rows], pk=("host", "path"))
                db["domains"].drop()

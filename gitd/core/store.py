"""The sqlite state, via sqlite-utils, behind small typed accessors.

One connection guarded by a lock: gitd's writes are few and small, and the
pipeline runs in worker threads.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from gitd.core.errors import Conflict, GitdError, NotFound

# The schema this gitd writes: bump it with each _migrate_* step that changes
# the schema, so that an older gitd refuses a data dir it would misread.
# 1: up to services; 2: routes, nodes, webhooks, deployments, tokens;
# 3: cron runs, notifications, previews, dashboard sessions, token names per key.
SCHEMA_VERSION = 3

ACTIVE_STATUSES = ("building", "deploying")
DEPLOYMENT_ENDS = ("succeeded", "failed", "cancelled")
JSON_FIELDS = ("config", "procfile", "mounts", "components")


def now() -> float:
    return time.time()


@dataclass
class Key:
    name: str
    fingerprint: str
    public_key: str
    is_admin: bool
    created_at: float


@dataclass
class App:
    name: str
    created_at: float
    current_release: int | None
    live_seq: int | None
    next_seq: int
    settings: dict = field(default_factory=dict)
    scale: dict = field(default_factory=dict)
    # on a swarm: the node holding the app's named volumes, its tasks' only place
    node: str | None = None


@dataclass
class Token:
    """An API token: `id` is its public half, `secret_hash` the sha256 of
    its secret half (the secret itself is never stored)."""
    id: str
    name: str
    key_name: str
    secret_hash: str
    created_at: float
    last_used_at: float | None
    expires_at: float | None


@dataclass(frozen=True, order=True)
class HostRoute:
    """Requests for `host` whose path is `path` or under it go to the app;
    with `strip_prefix` the app sees the path without that prefix."""
    host: str
    path: str = "/"
    strip_prefix: bool = False

    def __str__(self) -> str:
        return self.host if self.path == "/" else f"{self.host}{self.path}"


@dataclass
class Release:
    app: str
    version: int
    status: str
    kind: str
    commit: str | None
    image: str | None
    image_id: str | None
    buildpack: str | None
    pushed_by: str | None
    description: str
    config: dict
    procfile: dict
    port: int | None
    created_at: float
    finished_at: float | None
    log: str = ""
    app_json: str | None = None
    mounts: list = field(default_factory=list)  # [{"source", "target", "type"}]
    # app.json services (issue #13): name -> {image, image_id, tree, port, ...}
    components: dict = field(default_factory=dict)


@dataclass
class Preview:
    """A preview app (`name`, an app of its own) of a branch of `parent`."""
    name: str
    parent: str
    branch: str
    commit: str | None
    created_at: float
    updated_at: float


@dataclass
class Deployment:
    """One deploy, whatever started it (`trigger`): pending -> building ->
    deploying -> succeeded | failed | cancelled."""
    id: int
    app: str
    status: str
    trigger: str
    by: str | None
    ref: str | None
    commit: str | None
    image: str | None
    release: int | None
    error: str | None
    log: str
    log_bytes: int  # every byte ever written to the log; `log` keeps the tail
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass
class Service:
    name: str
    kind: str
    version: str
    image: str
    password: str
    volume: str
    created_at: float
    exposed_port: int | None = None
    schedule: str | None = None
    keep: int = 7
    schedule_since: float | None = None
    last_backup_at: float | None = None
    last_backup_ok: bool | None = None
    last_backup_message: str = ""
    node: str | None = None  # on a swarm: the node holding its volume (it runs only there)


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


class Store:
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

    # meta

    @property
    def instance(self) -> str:
        return self.db["meta"].get("instance")["value"]

    # keys

    def add_key(self, name: str, fingerprint: str, public_key: str, is_admin: bool) -> Key:
        with self._tx() as db:
            if db["keys"].count_where("name = ?", [name]):
                raise GitdError(f"a key named {name!r} already exists")
            if db["keys"].count_where("fingerprint = ?", [fingerprint]):
                raise GitdError("that public key is already registered")
            row = {"name": name, "fingerprint": fingerprint, "public_key": public_key,
                   "is_admin": int(is_admin), "created_at": now()}
            db["keys"].insert(row)
        return _key(row)

    def key_by_fingerprint(self, fingerprint: str) -> Key | None:
        with self._lock:
            rows = list(self.db["keys"].rows_where("fingerprint = ?", [fingerprint]))
        return _key(rows[0]) if rows else None

    def get_key(self, name: str) -> Key:
        with self._lock:
            rows = list(self.db["keys"].rows_where("name = ?", [name]))
        if not rows:
            raise NotFound(f"no key named {name!r}")
        return _key(rows[0])

    def list_keys(self) -> list[Key]:
        with self._lock:
            return [_key(r) for r in self.db["keys"].rows_where(order_by="name")]

    def remove_key(self, name: str, keep_an_admin: bool = False) -> None:
        """With `keep_an_admin`, refuse to remove the last admin key."""
        with self._tx() as db:
            rows = list(db["keys"].rows_where("name = ?", [name]))
            if not rows:
                raise NotFound(f"no key named {name!r}")
            if keep_an_admin and rows[0]["is_admin"] and db["keys"].count_where("is_admin = 1") == 1:
                raise GitdError(f"{name} is the last admin key: add another admin key first")
            db["grants"].delete_where("key_name = ?", [name])
            db["tokens"].delete_where("key_name = ?", [name])
            db["keys"].delete(name)

    def admin_count(self) -> int:
        with self._lock:
            return self.db["keys"].count_where("is_admin = 1")

    # API tokens

    def add_token(self, token_id: str, name: str, key_name: str, secret_hash: str,
                  expires_at: float | None) -> Token:
        row = {"id": token_id, "name": name, "key_name": key_name, "secret_hash": secret_hash,
               "created_at": now(), "last_used_at": None, "expires_at": expires_at}
        with self._tx() as db:
            if db["tokens"].count_where("key_name = ? and name = ?", [key_name, name]):
                raise Conflict(f"key {key_name} already has a token named {name!r}")
            if not db["keys"].count_where("name = ?", [key_name]):
                raise NotFound(f"no key named {key_name!r}")
            db["tokens"].insert(row)
        return Token(**row)

    def token_by_id(self, token_id: str) -> Token | None:
        with self._lock:
            rows = list(self.db["tokens"].rows_where("id = ?", [token_id]))
        return Token(**rows[0]) if rows else None

    def get_token(self, key_name: str, name: str) -> Token:
        with self._lock:
            rows = list(self.db["tokens"].rows_where("key_name = ? and name = ?",
                                                     [key_name, name]))
        if not rows:
            raise NotFound(f"key {key_name} has no token named {name!r}")
        return Token(**rows[0])

    def tokens_named(self, name: str) -> list[Token]:
        """The tokens of every key named `name`."""
        with self._lock:
            return [Token(**r) for r in self.db["tokens"].rows_where(
                "name = ?", [name], order_by="key_name")]

    def list_tokens(self, key_name: str | None = None) -> list[Token]:
        """Every token, or those of one key."""
        where, args = ("key_name = ?", [key_name]) if key_name is not None else (None, None)
        with self._lock:
            return [Token(**r) for r in self.db["tokens"].rows_where(where, args, order_by="name")]

    def delete_token(self, token_id: str) -> None:
        with self._tx() as db:
            db["tokens"].delete_where("id = ?", [token_id])

    def token_used(self, token_id: str, when: float) -> None:
        with self._tx() as db:
            db["tokens"].update(token_id, {"last_used_at": when})

    # dashboard sessions

    def add_dashboard_session(self, id_hash: str, token_id: str, csrf: str, expires_at: float,
                              keep: int) -> None:
        """A new session; the expired ones go, and the token's oldest past `keep`."""
        with self._tx() as db:
            table = db["dashboard_sessions"]
            table.delete_where("expires_at <= ?", [now()])
            table.insert({"id_hash": id_hash, "token_id": token_id, "csrf": csrf,
                          "created_at": now(), "expires_at": expires_at})
            extra = [r["id_hash"] for r in table.rows_where(
                "token_id = ?", [token_id], order_by="created_at desc, rowid desc")][keep:]
            for old in extra:
                table.delete(old)

    def dashboard_session(self, id_hash: str) -> dict | None:
        with self._lock:
            rows = list(self.db["dashboard_sessions"].rows_where("id_hash = ?", [id_hash]))
        return rows[0] if rows else None

    def delete_dashboard_session(self, id_hash: str) -> None:
        with self._tx() as db:
            db["dashboard_sessions"].delete_where("id_hash = ?", [id_hash])

    def overview(self) -> dict[str, dict]:
        """Every app with its current release's commit, its hosts, its last
        deployment and its linked services, in a few queries (the
        dashboard's apps page: a handful of queries per app took 3 ms each)."""
        with self._lock:
            query = self.db.query
            found = {row["name"]: {"app": _app(row), "commit": row["commit"], "hosts": [],
                                   "last_deployment": None, "services": {}}
                     for row in query("SELECT a.*, r.[commit] AS [commit] FROM apps a LEFT JOIN "
                                      "releases r ON r.app = a.name AND "
                                      "r.version = a.current_release ORDER BY a.name")}
            for row in query("SELECT DISTINCT app, host FROM routes ORDER BY host"):
                found.get(row["app"], {}).get("hosts", []).append(row["host"])
            for row in query("SELECT * FROM deployments WHERE id IN "
                             "(SELECT MAX(id) FROM deployments GROUP BY app)"):
                if row["app"] in found:
                    found[row["app"]]["last_deployment"] = _deployment(row)
            for row in query("SELECT l.app, l.env_var, s.* FROM service_links l "
                             "JOIN services s ON s.name = l.service ORDER BY l.service"):
                if row["app"] in found:
                    found[row["app"]]["services"][row["name"]] = (_service(row), row["env_var"])
        return found

    # apps

    def create_app(self, name: str) -> App:
        with self._tx() as db:
            if db["apps"].count_where("name = ?", [name]):
                raise Conflict(f"app {name!r} already exists")
            row = {"name": name, "created_at": now(), "current_release": None,
                   "live_seq": None, "next_seq": 1, "settings": "{}", "scale": "{}",
                   "node": None}
            db["apps"].insert(row)
        return _app(row)

    def get_app(self, name: str) -> App:
        with self._lock:
            rows = list(self.db["apps"].rows_where("name = ?", [name]))
        if not rows:
            raise NotFound(f"app {name!r} does not exist (create it with: apps:create {name})")
        return _app(rows[0])

    def app_exists(self, name: str) -> bool:
        with self._lock:
            return bool(self.db["apps"].count_where("name = ?", [name]))

    def list_apps(self) -> list[App]:
        with self._lock:
            return [_app(r) for r in self.db["apps"].rows_where(order_by="name")]

    def delete_app(self, name: str) -> None:
        with self._tx() as db:
            db["previews"].delete_where("name = ?", [name])
            for table in ("config", "routes", "grants", "releases", "mounts", "webhooks",
                          "webhook_deliveries", "deployments"):
                db[table].delete_where("app = ?", [name])
            db["apps"].delete_where("name = ?", [name])
            db["service_links"].delete_where("app = ?", [name])
            _delete_notify_subscriptions(db, "app = ?", [name])
            for table in ("cron_state", "cron_runs"):
                db[table].delete_where("app = ?", [name])

    def take_seq(self, app: str) -> int:
        """Reserve the next deploy number; never reused, even after a crash."""
        with self._tx() as db:
            seq = db["apps"].get(app)["next_seq"]
            db["apps"].update(app, {"next_seq": seq + 1})
        return seq

    def set_live(self, app: str, version: int, seq: int) -> None:
        with self._tx() as db:
            db["apps"].update(app, {"current_release": version, "live_seq": seq})

    def update_app_settings(self, app: str, **changes) -> dict:
        """Merge `changes` into the app's settings; a value of None removes the key."""
        with self._tx() as db:
            settings = json.loads(db["apps"].get(app)["settings"] or "{}")
            for key, value in changes.items():
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
            db["apps"].update(app, {"settings": json.dumps(settings, sort_keys=True)})
        return settings

    # forge webhooks

    def webhook_secret(self, app: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT secret FROM webhooks WHERE app = ?", [app]).fetchone()
        return row[0] if row else None

    def set_webhook_secret(self, app: str, secret: str) -> None:
        with self._tx() as db:
            db["webhooks"].upsert({"app": app, "secret": secret, "created_at": now()}, pk="app")

    DELIVERIES_KEPT = 500

    def first_delivery(self, app: str, delivery: str) -> bool:
        """Record a forge's delivery id; False when it was seen before. The
        newest DELIVERIES_KEPT of an app are remembered."""
        with self._tx() as db:
            if db["webhook_deliveries"].count_where("app = ? AND delivery = ?", [app, delivery]):
                return False
            db["webhook_deliveries"].insert({"app": app, "delivery": delivery,
                                             "received_at": now()})
            db.execute("DELETE FROM webhook_deliveries WHERE app = ? AND delivery NOT IN "
                       "(SELECT delivery FROM webhook_deliveries WHERE app = ? "
                       "ORDER BY received_at DESC LIMIT ?)", [app, app, self.DELIVERIES_KEPT])
        return True

    def set_app_node(self, app: str, node: str | None) -> None:
        with self._tx() as db:
            db["apps"].update(app, {"node": node})

    def app_node(self, app: str) -> str | None:
        """The node holding the app's named volumes (None: none recorded, or no such app)."""
        with self._lock:
            rows = list(self.db["apps"].rows_where("name = ?", [app], select="node"))
        return rows[0]["node"] if rows else None

    def set_scale(self, app: str, scale: dict) -> None:
        with self._tx() as db:
            db["apps"].update(app, {"scale": json.dumps(scale, sort_keys=True)})

    # config

    def get_config(self, app: str) -> dict[str, str]:
        with self._lock:
            return {r["key"]: r["value"] for r in
                    self.db["config"].rows_where("app = ?", [app], order_by="key")}

    def set_config(self, app: str, values: dict[str, str], unset: list[str] = ()) -> None:
        with self._tx() as db:
            for key in unset:
                db["config"].delete_where("app = ? AND key = ?", [app, key])
            if values:
                db["config"].upsert_all(
                    [{"app": app, "key": k, "value": v} for k, v in values.items()],
                    pk=("app", "key"))

    # routes (host, path prefix); "domains" are their distinct hosts

    def routes(self, app: str) -> list[HostRoute]:
        with self._lock:
            rows = self.db["routes"].rows_where("app = ?", [app], order_by="host, path")
            return [_route(r) for r in rows]

    def all_routes(self) -> dict[str, list[HostRoute]]:
        """{app: its routes} of every app with any, in one query (each push
        rewrites every app's 503 routes: a query per app grew with them)."""
        with self._lock:
            found: dict[str, list[HostRoute]] = {}
            for row in self.db["routes"].rows_where(order_by="app, host, path"):
                found.setdefault(row["app"], []).append(_route(row))
            return found

    def routes_of_host(self, host: str) -> dict[str, str]:
        """{path: app} of every route on `host`."""
        with self._lock:
            return {r["path"]: r["app"] for r in self.db["routes"].rows_where("host = ?", [host])}

    def domains(self, app: str) -> list[str]:
        return list(dict.fromkeys(r.host for r in self.routes(app)))

    def domain_owner(self, host: str, path: str = "/") -> str | None:
        return self.routes_of_host(host).get(path)

    def add_routes(self, app: str, routes: list[HostRoute]) -> None:
        """Add or update the app's routes; a (host, path) of another app is
        refused, and then nothing changes."""
        with self._tx() as db:
            for route in routes:
                owner = list(db["routes"].rows_where("host = ? AND path = ?", [route.host, route.path]))
                if owner and owner[0]["app"] != app:
                    raise Conflict(f"domain {route} is already used by app {owner[0]['app']!r}")
            db["routes"].upsert_all(
                [{"host": r.host, "path": r.path, "app": app, "strip_prefix": int(r.strip_prefix)}
                 for r in routes], pk=("host", "path"))

    def remove_routes(self, app: str, routes: list[HostRoute]) -> None:
        """Remove the app's routes at those (host, path); one not on the
        app is refused, and then nothing changes."""
        with self._tx() as db:
            for route in routes:
                if not db["routes"].count_where("host = ? AND path = ? AND app = ?",
                                                [route.host, route.path, app]):
                    raise NotFound(f"domain {route} is not set on {app}")
            for route in routes:
                db["routes"].delete_where("host = ? AND path = ? AND app = ?",
                                          [route.host, route.path, app])

    def add_domains(self, app: str, hosts: list[str]) -> None:
        self.add_routes(app, [HostRoute(h) for h in hosts])

    def remove_domains(self, app: str, hosts: list[str]) -> None:
        self.remove_routes(app, [HostRoute(h) for h in hosts])

    # grants

    def grant(self, app: str, key_name: str) -> None:
        with self._tx() as db:
            db["grants"].upsert({"app": app, "key_name": key_name}, pk=("app", "key_name"))

    def revoke(self, app: str, key_name: str) -> None:
        with self._tx() as db:
            if not db["grants"].count_where("app = ? AND key_name = ?", [app, key_name]):
                raise NotFound(f"key {key_name!r} has no grant on {app}")
            db["grants"].delete_where("app = ? AND key_name = ?", [app, key_name])

    def granted(self, app: str, key_name: str) -> bool:
        """A preview is granted to whoever its parent is."""
        with self._lock:
            return bool(self.db["grants"].count_where(
                "key_name = ? AND (app = ? OR app IN (SELECT parent FROM previews WHERE name = ?))",
                [key_name, app, app]))

    def grants_of_key(self, key_name: str) -> list[str]:
        with self._lock:
            return [r["app"] for r in self.db["grants"].rows_where("key_name = ?", [key_name], order_by="app")]

    def grants_of(self, app: str) -> list[str]:
        with self._lock:
            return [r["key_name"] for r in self.db["grants"].rows_where("app = ?", [app], order_by="key_name")]

    # preview apps

    def add_preview(self, name: str, parent: str, branch: str) -> Preview:
        """Recorded once the app `name` exists; refused when the branch of
        `parent` has a preview already."""
        row = {"name": name, "parent": parent, "branch": branch, "commit": None,
               "created_at": now(), "updated_at": now()}
        with self._tx() as db:
            if db["previews"].count_where("parent = ? AND branch = ?", [parent, branch]):
                raise Conflict(f"branch {branch[:80]!r} of {parent} has a preview already")
            db["previews"].insert(row)
        return Preview(**row)

    def preview(self, name: str) -> Preview | None:
        with self._lock:
            rows = list(self.db["previews"].rows_where("name = ?", [name]))
        return Preview(**rows[0]) if rows else None

    def preview_of_branch(self, parent: str, branch: str) -> Preview | None:
        with self._lock:
            rows = list(self.db["previews"].rows_where("parent = ? AND branch = ?",
                                                       [parent, branch]))
        return Preview(**rows[0]) if rows else None

    def previews(self, parent: str | None = None) -> list[Preview]:
        """Of `parent`, or every one."""
        where, args = ("parent = ?", [parent]) if parent else (None, None)
        with self._lock:
            return [Preview(**r) for r in self.db["previews"].rows_where(
                where, args, order_by="parent, name")]

    def preview_updated(self, name: str, commit: str) -> None:
        with self._tx() as db:
            db["previews"].update(name, {"commit": commit, "updated_at": now()})

    # releases

    def new_release(self, app: str, **fields) -> Release:
        with self._tx() as db:
            last = db.execute("SELECT MAX(version) FROM releases WHERE app = ?", [app]).fetchone()[0]
            row = {
                "app": app, "version": (last or 0) + 1, "status": "building", "kind": "push",
                "commit": None, "image": None, "image_id": None, "buildpack": None,
                "pushed_by": None, "description": "", "config": "{}", "procfile": "{}",
                "port": None, "created_at": now(), "finished_at": None, "log": "",
                "app_json": None, "mounts": "[]", "components": "{}",
            }
            for key, value in fields.items():
                row[key] = json.dumps(value, sort_keys=True) if key in JSON_FIELDS else value
            db["releases"].insert(row)
        return _release(row)

    def update_release(self, app: str, version: int, **fields) -> None:
        for key in JSON_FIELDS:
            if key in fields:
                fields[key] = json.dumps(fields[key], sort_keys=True)
        if fields.get("status") in ("succeeded", "failed"):
            fields.setdefault("finished_at", now())
        with self._tx() as db:
            db["releases"].update((app, version), fields)

    def get_release(self, app: str, version: int) -> Release:
        with self._lock:
            rows = list(self.db["releases"].rows_where("app = ? AND version = ?", [app, version]))
        if not rows:
            raise NotFound(f"{app} has no release v{version}")
        return _release(rows[0])

    def releases(self, app: str) -> list[Release]:
        with self._lock:
            return [_release(r) for r in
                    self.db["releases"].rows_where("app = ?", [app], order_by="version desc")]

    def current_release(self, app: str) -> Release | None:
        current = self.get_app(app).current_release
        return self.get_release(app, current) if current else None

    def require_current_release(self, app: str) -> Release:
        release = self.current_release(app)
        if release is None:
            raise NotFound(f"{app} has no release yet: push to deploy it first")
        return release

    def apps_of_image(self, image_id: str) -> set[str]:
        """The apps with a release made from this image id."""
        with self._lock:
            # a service's image (app.json services) is the app's too
            rows = self.db.execute(
                "SELECT DISTINCT app FROM releases WHERE image_id = ? OR instr(components, ?) > 0",
                [image_id, json.dumps(image_id)]).fetchall()
        return {row[0] for row in rows}

    def trim_releases(self, app: str, keep: set[int], newest: int, log_tail: int) -> int:
        """Delete the app's release rows but those in `keep`, the `newest`
        ones and any still building or deploying; cut the logs of the rows
        left that are not in `keep` to their last `log_tail` characters.
        Returns how many rows went."""
        with self._tx() as db:
            rows = list(db.execute(
                "SELECT version, status, length(log) FROM releases WHERE app = ? "
                "ORDER BY version DESC", [app]).fetchall())
            gone = [v for i, (v, status, _) in enumerate(rows)
                    if i >= newest and v not in keep and status not in ACTIVE_STATUSES]
            for version in gone:
                db["releases"].delete((app, version))
            for i, (version, _, length) in enumerate(rows):
                if version not in keep and version not in gone and (length or 0) > log_tail:
                    db.execute("UPDATE releases SET log = '(log trimmed)\n' || substr(log, -?) "
                               "WHERE app = ? AND version = ?", [log_tail, app, version])
        return len(gone)

    # services (issue 12)

    def create_service(self, **fields) -> Service:
        row = {"created_at": now(), "exposed_port": None, "schedule": None, "keep": 7,
               "schedule_since": None, "node": None,
               "last_backup_at": None, "last_backup_ok": None, "last_backup_message": "",
               **fields}
        with self._tx() as db:
            if db["services"].count_where("name = ?", [row["name"]]):
                raise GitdError(f"a service named {row['name']!r} already exists")
            db["services"].insert(row)
        return _service(row)

    def get_service(self, name: str) -> Service:
        with self._lock:
            rows = list(self.db["services"].rows_where("name = ?", [name]))
        if not rows:
            raise NotFound(f"no service named {name!r} (services:list shows them)")
        return _service(rows[0])

    def service_exists(self, name: str) -> bool:
        with self._lock:
            return bool(self.db["services"].count_where("name = ?", [name]))

    def list_services(self) -> list[Service]:
        with self._lock:
            return [_service(r) for r in self.db["services"].rows_where(order_by="name")]

    def update_service(self, name: str, **fields) -> None:
        if "last_backup_ok" in fields and fields["last_backup_ok"] is not None:
            fields["last_backup_ok"] = int(fields["last_backup_ok"])
        with self._tx() as db:
            db["services"].update(name, fields)

    def delete_service(self, name: str) -> None:
        with self._tx() as db:
            db["service_links"].delete_where("service = ?", [name])
            db["services"].delete_where("name = ?", [name])

    def links_of_service(self, service: str) -> dict[str, str]:
        """app -> the config var it gets."""
        with self._lock:
            return {r["app"]: r["env_var"] for r in self.db["service_links"].rows_where(
                "service = ?", [service], order_by="app")}

    def links_of_app(self, app: str) -> dict[str, str]:
        """service -> the config var the app gets from it."""
        with self._lock:
            return {r["service"]: r["env_var"] for r in self.db["service_links"].rows_where(
                "app = ?", [app], order_by="service")}

    def add_link(self, service: str, app: str, env_var: str) -> None:
        with self._tx() as db:
            db["service_links"].insert({"service": service, "app": app, "env_var": env_var})

    def remove_link(self, service: str, app: str) -> None:
        with self._tx() as db:
            db["service_links"].delete_where("service = ? AND app = ?", [service, app])

    # mounts (issue 12): what the next release of an app mounts

    def get_mounts(self, app: str) -> list[dict]:
        with self._lock:
            return [{"source": r["source"], "target": r["target"], "type": r["type"]}
                    for r in self.db["mounts"].rows_where("app = ?", [app], order_by="target")]

    def set_mounts(self, app: str, mounts: list[dict]) -> None:
        with self._tx() as db:
            db["mounts"].delete_where("app = ?", [app])
            if mounts:
                db["mounts"].insert_all([{"app": app, **m} for m in mounts])

    # deployments (issue #23)

    def new_deployment(self, app: str, trigger: str, **fields) -> Deployment:
        row = {"app": app, "status": "pending", "trigger": trigger, "by": None, "ref": None,
               "commit": None, "image": None, "release": None, "error": None, "log": "",
               "log_bytes": 0, "created_at": now(), "started_at": None, "finished_at": None,
               **fields}
        with self._tx() as db:
            row["id"] = db["deployments"].insert(row).last_pk
        return _deployment(row)

    def update_deployment(self, deployment_id: int, **fields) -> None:
        if fields.get("status") in DEPLOYMENT_ENDS:
            fields.setdefault("finished_at", now())
        if fields.get("status") in ACTIVE_STATUSES:
            fields.setdefault("started_at", now())
        with self._tx() as db:
            if fields.get("started_at") and db["deployments"].get(deployment_id)["started_at"]:
                del fields["started_at"]  # the first move out of pending is the start
            db["deployments"].update(deployment_id, fields)

    def get_deployment(self, deployment_id: int) -> Deployment:
        if not 0 < deployment_id < 2**63:  # sqlite's integers; beyond, none is there
            raise NotFound(f"no deployment {deployment_id}")
        with self._lock:
            rows = list(self.db["deployments"].rows_where("id = ?", [deployment_id]))
        if not rows:
            raise NotFound(f"no deployment {deployment_id}")
        return _deployment(rows[0])

    def deployments(self, app: str, limit: int = 100) -> list[Deployment]:
        """The app's deployments, newest first."""
        with self._lock:
            return [_deployment(r) for r in self.db["deployments"].rows_where(
                "app = ?", [app], order_by="id desc", limit=limit)]

    def trim_deployments(self, app: str, newest: int, log_tail: int) -> None:
        """Keep the app's `newest` deployment rows (and any not ended); cut
        the logs of all but the newest tenth to their last `log_tail` characters."""
        with self._tx() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM deployments WHERE app = ? ORDER BY id DESC", [app]).fetchall()]
            if len(ids) > newest:
                db.execute("DELETE FROM deployments WHERE app = ? AND id <= ? AND status IN (?, ?, ?)",
                           [app, ids[newest], *DEPLOYMENT_ENDS])
            short = ids[max(1, newest // 10):newest]
            if short:
                db.execute("UPDATE deployments SET log = '(log trimmed)\n' || substr(log, -?) "
                           "WHERE app = ? AND id <= ? AND length(log) > ?",
                           [log_tail, app, short[0], log_tail])

    # notifications (issue #25)

    def add_notify_subscription(self, app: str | None, url: str, events: list[str], fmt: str,
                                secret: str, by: str, internal_ok: bool) -> dict:
        row = {"app": app, "url": url, "events": json.dumps(events), "format": fmt,
               "secret": secret, "by": by, "internal_ok": int(internal_ok), "created_at": now()}
        with self._tx() as db:
            row["id"] = db["notify_subscriptions"].insert(row).last_pk
        return _subscription(row)

    def notify_subscriptions(self, app: str | None) -> list[dict]:
        """The app's subscriptions (None: the global ones), oldest first."""
        where = "app IS NULL" if app is None else "app = ?"
        with self._lock:
            return [_subscription(r) for r in self.db["notify_subscriptions"].rows_where(
                where, [] if app is None else [app], order_by="id")]

    def notify_subscription(self, subscription_id: int) -> dict | None:
        if not 0 < subscription_id < 2**63:
            return None
        with self._lock:
            rows = list(self.db["notify_subscriptions"].rows_where("id = ?", [subscription_id]))
        return _subscription(rows[0]) if rows else None

    def notify_subscriptions_for(self, apps: list[str], event: str) -> list[dict]:
        """Who hears of `event` of `apps`: their subscriptions and the global ones."""
        marks = ", ".join("?" for _ in apps)
        with self._lock:
            rows = self.db["notify_subscriptions"].rows_where(
                f"app IS NULL OR app IN ({marks})" if apps else "app IS NULL", list(apps),
                order_by="id")
            return [s for s in map(_subscription, rows) if event in s["events"]]

    def remove_notify_subscription(self, subscription_id: int) -> None:
        with self._tx() as db:
            _delete_notify_subscriptions(db, "id = ?", [subscription_id])

    def record_notify_delivery(self, subscription: int, keep: int = 10, **fields) -> None:
        """One attempt's result; the subscription's last `keep` are kept."""
        with self._tx() as db:
            if not db["notify_subscriptions"].count_where("id = ?", [subscription]):
                return
            db["notify_deliveries"].insert({"subscription": subscription, **fields})
            db.execute("DELETE FROM notify_deliveries WHERE subscription = ? AND id NOT IN "
                       "(SELECT id FROM notify_deliveries WHERE subscription = ? "
                       "ORDER BY id DESC LIMIT ?)", [subscription, subscription, keep])

    def notify_deliveries(self, subscription: int, limit: int = 10) -> list[dict]:
        """The subscription's last delivery attempts, newest first."""
        with self._lock:
            return list(self.db["notify_deliveries"].rows_where(
                "subscription = ?", [subscription], order_by="id desc", limit=limit,
                select="event, delivery, attempt, status, error, at"))

    def end_unfinished_deployments(self, note: str, finished: set = frozenset()) -> list[Deployment]:
        """At start: a deployment still pending never began (cancelled); one
        building or deploying was cut short by gitd's stop (failed), unless
        gitd finished its (app, release) at start (succeeded)."""
        with self._tx() as db:
            rows = [_deployment(r) for r in db["deployments"].rows_where(
                "status IN (?, ?, ?)", ["pending", *ACTIVE_STATUSES])]
            for row in rows:
                if (row.app, row.release) in finished:
                    change = {"status": "succeeded",
                              "log": row.log + "-----> finished by gitd after a restart\n"}
                else:
                    change = {"status": "cancelled" if row.status == "pending" else "failed",
                              "error": note, "log": row.log + f" !     {note}\n"}
                db["deployments"].update(row.id, {**change, "finished_at": now()})
        return rows

    def interrupted_releases(self) -> list[Release]:
        with self._lock:
            return [_release(r) for r in self.db["releases"].rows_where(
                "status IN (?, ?)", list(ACTIVE_STATUSES))]

    # cron (issue #25)

    def cron_since(self, app: str, job: str) -> float | None:
        with self._lock:
            rows = list(self.db["cron_state"].rows_where("app = ? AND job = ?", [app, job]))
        return rows[0]["since"] if rows else None

    def set_cron_since(self, app: str, job: str, since: float) -> None:
        with self._tx() as db:
            db["cron_state"].upsert({"app": app, "job": job, "since": since}, pk=("app", "job"))

    def start_cron_run(self, app: str, job: str, trigger: str, release: int | None) -> CronRun:
        """A run of the job, `running`; or, while another run of it is still
        running, a `skipped` one (a scheduled run) or Conflict (asked for)."""
        row = {"app": app, "job": job, "trigger": trigger, "status": "running", "exit_code": None,
               "release": release, "started_at": now(), "finished_at": None, "output": ""}
        with self._tx() as db:
            running = list(db["cron_runs"].rows_where(
                "app = ? AND job = ? AND status = 'running'", [app, job], limit=1))
            if running and trigger == "manual":
                raise Conflict(f"cron job {job} of {app} is running (since "
                               f"{time.strftime('%H:%M:%S', time.gmtime(running[0]['started_at']))}"
                               " UTC): wait for it to end")
            if running:
                row.update(status="skipped", finished_at=row["started_at"],
                           output=f"skipped: run {running[0]['id']} was still running\n")
            row["id"] = db["cron_runs"].insert(row).last_pk
            _trim_cron_runs(db, app, job)
        return _cron_run(row)

    def finish_cron_run(self, run_id: int, status: str, exit_code: int | None,
                        output: str) -> CronRun | None:
        """The run, ended; None when it is gone (its app was destroyed meanwhile)."""
        with self._tx() as db:
            rows = list(db["cron_runs"].rows_where("id = ?", [run_id]))
            if not rows:
                return None
            row = {**rows[0], "status": status, "exit_code": exit_code, "output": output,
                   "finished_at": now()}
            db["cron_runs"].update(run_id, row)
            _trim_cron_runs(db, row["app"], row["job"])
        return _cron_run(row)

    def live_app_jsons(self) -> list[tuple[str, int, str | None]]:
        """(app, live release version, its app.json) of every app with one:
        what the cron runner looks at each tick, without the releases' logs."""
        with self._lock:
            return [tuple(row) for row in self.db.execute(
                "SELECT a.name, r.version, r.app_json FROM apps a JOIN releases r "
                "ON r.app = a.name AND r.version = a.current_release ORDER BY a.name")]

    def forget_cron_jobs(self, app: str, keep: list[str]) -> None:
        """Jobs the live release no longer has lose their schedule's state: one
        that comes back (a rollback) counts from then, as a new one."""
        with self._lock:
            known = {r["job"] for r in self.db["cron_state"].rows_where("app = ?", [app])}
        for job in known - set(keep):  # rarely any: no write on most looks
            with self._tx() as db:
                db["cron_state"].delete_where("app = ? AND job = ?", [app, job])

    def cron_runs(self, app: str, job: str | None = None, limit: int = 20) -> list[CronRun]:
        """The app's (or one job's) runs, newest first."""
        where, args = ("app = ? AND job = ?", [app, job]) if job else ("app = ?", [app])
        with self._lock:
            return [_cron_run(r) for r in self.db["cron_runs"].rows_where(
                where, args, order_by="id desc", limit=limit)]

    def last_cron_runs(self, app: str) -> dict[str, CronRun]:
        """Each job's newest run that ran (not a skipped one)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT * FROM cron_runs WHERE id IN (SELECT max(id) FROM cron_runs "
                "WHERE app = ? AND status != 'skipped' GROUP BY job)", [app])
            columns = [c[0] for c in rows.description]
            return {r["job"]: _cron_run(r) for r in (dict(zip(columns, v)) for v in rows)}

    def end_unfinished_cron_runs(self, note: str) -> int:
        """At start: runs still `running` were cut short by gitd's stop."""
        with self._tx() as db:
            cursor = db.execute("UPDATE cron_runs SET status = 'failed', finished_at = ?, "
                                "output = output || ? WHERE status = 'running'", [now(), note])
            return cursor.rowcount


def _key(row) -> Key:
    return Key(name=row["name"], fingerprint=row["fingerprint"], public_key=row["public_key"],
               is_admin=bool(row["is_admin"]), created_at=row["created_at"])


def _app(row) -> App:
    return App(name=row["name"], created_at=row["created_at"],
               current_release=row["current_release"], live_seq=row["live_seq"],
               next_seq=row["next_seq"], settings=json.loads(row["settings"] or "{}"),
               scale=json.loads(row["scale"] or "{}"), node=row.get("node"))


def _route(row) -> HostRoute:
    return HostRoute(row["host"], row["path"], bool(row["strip_prefix"]))


def _release(row) -> Release:
    return Release(
        app=row["app"], version=row["version"], status=row["status"], kind=row["kind"],
        commit=row["commit"], image=row["image"], image_id=row["image_id"],
        buildpack=row["buildpack"], pushed_by=row["pushed_by"],
        description=row["description"] or "", config=json.loads(row["config"] or "{}"),
        procfile=json.loads(row["procfile"] or "{}"), port=row["port"],
        created_at=row["created_at"], finished_at=row["finished_at"], log=row["log"] or "",
        app_json=row["app_json"], mounts=json.loads(row.get("mounts") or "[]"),
        components=json.loads(row.get("components") or "{}"))


def _subscription(row) -> dict:
    return {**row, "events": json.loads(row["events"]), "internal_ok": bool(row["internal_ok"])}


def _delete_notify_subscriptions(db, where: str, args: list) -> None:
    db.execute(f"DELETE FROM notify_deliveries WHERE subscription IN "
               f"(SELECT id FROM notify_subscriptions WHERE {where})", args)
    db["notify_subscriptions"].delete_where(where, args)


def _deployment(row) -> Deployment:
    return Deployment(**{name: row[name] for name in Deployment.__dataclass_fields__})


def _service(row) -> Service:
    ok = row["last_backup_ok"]
    return Service(
        name=row["name"], kind=row["kind"], version=row["version"], image=row["image"],
        password=row["password"], volume=row["volume"], created_at=row["created_at"],
        exposed_port=row["exposed_port"], schedule=row["schedule"], keep=row["keep"] or 7,
        schedule_since=row["schedule_since"],
        last_backup_at=row["last_backup_at"], last_backup_ok=None if ok is None else bool(ok),
        last_backup_message=row["last_backup_message"] or "", node=row.get("node"))


CRON_RUNS_KEPT = 20  # per job


@dataclass
class CronRun:
    id: int
    app: str
    job: str
    trigger: str  # schedule | catch-up | manual
    status: str  # running | succeeded | failed | timed out | skipped
    exit_code: int | None
    release: int | None
    started_at: float
    finished_at: float | None
    output: str  # the last lines (gitd.cronrunner.OUTPUT_TAIL)


def _trim_cron_runs(db, app: str, job: str) -> None:
    """The job's newest CRON_RUNS_KEPT runs are kept (and any still running)."""
    db.execute("DELETE FROM cron_runs WHERE app = ? AND job = ? AND status != 'running' AND id NOT IN "
               "(SELECT id FROM cron_runs WHERE app = ? AND job = ? ORDER BY id DESC LIMIT ?)",
               [app, job, app, job, CRON_RUNS_KEPT])


def _cron_run(row) -> CronRun:
    return CronRun(**{name: row[name] for name in CronRun.__dataclass_fields__})

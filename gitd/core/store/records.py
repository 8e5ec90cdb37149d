"""The store's records: what its accessors take and give, and how a row becomes one."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

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


def _cron_run(row) -> CronRun:
    return CronRun(**{name: row[name] for name in CronRun.__dataclass_fields__})

"""Releases and deployments."""

from __future__ import annotations

import json

from gitd.core.errors import NotFound
from gitd.core.store.records import (ACTIVE_STATUSES, DEPLOYMENT_ENDS, JSON_FIELDS, Deployment,
                                     Release, _deployment, _release, now)


class ReleaseRecords:
    """Part of Store."""

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

"""Apps, their settings, webhooks, config, routes and previews."""

from __future__ import annotations

import json

from gitd.core.errors import Conflict, NotFound
from gitd.core.store.notify import _delete_notify_subscriptions
from gitd.core.store.records import (App, HostRoute, Preview, _app, _deployment, _route, _service,
                                     now)


class AppRecords:
    """Part of Store."""

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

"""Services, their links to apps, and app mounts."""

from __future__ import annotations

from gitd.core.errors import GitdError, NotFound
from gitd.core.store.records import Service, _service, now


class ServiceRecords:
    """Part of Store."""

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

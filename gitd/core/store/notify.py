"""Notification subscriptions and their deliveries."""

from __future__ import annotations

import json

from gitd.core.store.records import _subscription, now


class NotifyRecords:
    """Part of Store."""

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


def _delete_notify_subscriptions(db, where: str, args: list) -> None:
    db.execute(f"DELETE FROM notify_deliveries WHERE subscription IN "
               f"(SELECT id FROM notify_subscriptions WHERE {where})", args)
    db["notify_subscriptions"].delete_where(where, args)

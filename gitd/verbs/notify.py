"""Notifications (issue #25): an app's (or, for admins, every app's)
subscriptions of URLs to its events, and their last delivery results.

The deliveries themselves are gitd.core.notify's. The secret that signs a
subscription's deliveries is returned once, by `add`.
"""

from __future__ import annotations

import secrets

from gitd.core import notify, validate
from gitd.core.errors import Conflict, NotFound
from gitd.verbs import Session, iso_time

MAX_SUBSCRIPTIONS = 20  # per app, and global ones
MAX_ID = 10**12 - 1  # as validate.whole_number reads digits


def add(s: Session, app: str | None, url: str, events: str | list[str] | None = None,
        fmt: str | None = None) -> dict:
    """Subscribe `url` to the app's events (app None: every app's, admins
    only). A target inside (loopback, private...) is for admins only."""
    _scope(s, app)
    chosen = notify.events(",".join(events) if isinstance(events, list) else events)
    fmt = notify.format_(fmt)
    target = notify.parse_url(url)
    notify.check_target(target, internal_ok=s.key.is_admin)
    if len(s.store.notify_subscriptions(app)) >= MAX_SUBSCRIPTIONS:
        raise Conflict(f"{scope_name(app)} already has {MAX_SUBSCRIPTIONS} notification URLs: "
                       "notify:remove one first")
    secret = secrets.token_hex(32)
    sub = s.store.add_notify_subscription(app, url, chosen, fmt, secret, s.key.name,
                                          internal_ok=s.key.is_admin)
    return {**_public(sub), "secret": secret, "signature_header": notify.SIGNATURE_HEADER}


def list_(s: Session, app: str | None) -> dict:
    """The subscriptions, each with its last delivery attempts (newest first)."""
    _scope(s, app)
    return {"app": app, "events": list(notify.EVENTS),
            "subscriptions": [{**_public(sub), "deliveries": deliveries(s.store, sub["id"])}
                              for sub in s.store.notify_subscriptions(app)]}


def remove(s: Session, app: str | None, subscription: int | str) -> dict:
    _scope(s, app)
    number = validate.whole_number(subscription, "ID", 1, MAX_ID)
    sub = s.store.notify_subscription(number)
    if sub is None or sub["app"] != app:
        raise NotFound(f"no notification {number} for {scope_name(app)}")
    s.store.remove_notify_subscription(number)
    return {"app": app, "removed": number}


def last_results(store, app: str) -> list[dict]:
    """Each of the app's subscriptions with its last delivery (apps:info)."""
    results = []
    for sub in store.notify_subscriptions(app):
        last = deliveries(store, sub["id"], limit=1)
        results.append({"id": sub["id"], "url": sub["url"], "last": last[0] if last else None})
    return results


def deliveries(store, subscription: int, limit: int = 10) -> list[dict]:
    return [{**row, "at": iso_time(row["at"])}
            for row in store.notify_deliveries(subscription, limit)]


def _scope(s: Session, app: str | None) -> None:
    if app is None:
        s.require_admin()
    else:
        s.app(app)


def scope_name(app: str | None) -> str:
    return app if app is not None else "--global"


def _public(sub: dict) -> dict:
    return {"id": sub["id"], "app": sub["app"], "url": sub["url"], "events": sub["events"],
            "format": sub["format"], "by": sub["by"], "created_at": iso_time(sub["created_at"])}

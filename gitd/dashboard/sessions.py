"""Dashboard sessions: a token presented once at login opens a session kept
on the server; the browser holds only a random session id in a cookie.

The store keeps the sha256 of the id (a copy of the database opens no
session), the id of the token it was opened with and the session's CSRF
token. Each request asks again whether that token still stands (not
revoked, not expired, its key still there): revoking the token ends its
sessions at once, and the session acts with the key's powers as they are now.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from gitd.core.errors import NotFound
from gitd.verbs import tokens

LIFETIME = 8 * 3600.0  # seconds a session lasts, however busy
PER_TOKEN = 20  # sessions one token may hold open; the oldest goes first
ID_SHAPE_MAX = 100  # a longer cookie is no session of ours


@dataclass(frozen=True)
class Opened:
    session_id: str  # for the cookie only: never stored, never logged
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class Current:
    key: object  # store.Key
    csrf: str
    id_hash: str


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


def open_session(store, presented: str) -> Opened | None:
    """A new session for a valid token; None for anything else."""
    if tokens.authenticate(store, presented) is None:
        return None
    token = store.token_by_id(presented.split("_", 2)[1])
    expires_at = time.time() + LIFETIME
    if token.expires_at is not None:
        expires_at = min(expires_at, token.expires_at)
    opened = Opened(secrets.token_urlsafe(32), secrets.token_urlsafe(32), expires_at)
    store.add_dashboard_session(_hash(opened.session_id), token.id, opened.csrf, expires_at,
                                keep=PER_TOKEN)
    return opened


def current(store, session_id: str | None) -> Current | None:
    """The session behind a cookie, if it and its token still stand."""
    if not session_id or len(session_id) > ID_SHAPE_MAX:
        return None
    id_hash = _hash(session_id)
    row = store.dashboard_session(id_hash)
    now = time.time()
    if row is None or row["expires_at"] <= now:
        return None
    token = store.token_by_id(row["token_id"])
    if token is None or (token.expires_at is not None and token.expires_at <= now):
        return None
    try:
        key = store.get_key(token.key_name)
    except NotFound:  # the key was removed (its tokens went with it)
        return None
    return Current(key, row["csrf"], id_hash)


def close(store, session_id: str | None) -> None:
    if session_id and len(session_id) <= ID_SHAPE_MAX:
        store.delete_dashboard_session(_hash(session_id))


def csrf_matches(expected: str, given: str | None) -> bool:
    """Constant time, whatever was sent."""
    return bool(expected) and hmac.compare_digest(expected.encode(),
                                                  (given or "").encode("utf-8", "replace"))

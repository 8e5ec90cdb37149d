"""API tokens: made, listed and revoked over SSH; presented over HTTP.

A token is `gitd_<id>_<secret>`: the id (public) finds its row, the secret
(32 random bytes) is checked against the sha256 stored there, in constant
time. A fast hash is enough: a 256-bit random secret cannot be guessed, so
a slow password hash (bcrypt, argon2) would only cost CPU on every request
and hand a flood of bad tokens a cheap way to burn it.

A token carries the powers of the key that made it, as they are at each
request: the key's grants decide, and a removed key's tokens go with it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from gitd.core import validate
from gitd.core.errors import Conflict, NotFound, UsageError
from gitd.verbs import Session, iso_time

PREFIX = "gitd_"
ID_CHARS = 12
# last_used_at is written at most this often per token: not a write per request
USED_RESOLUTION = 60.0
# a key's tokens (each holds at most dashboard.sessions.PER_TOKEN sessions)
MAX_PER_KEY = 100


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# what secrets.token_hex and token_urlsafe make: anything else (a header's
# undecodable bytes too) is no token of ours
SHAPE = re.compile(rf"{PREFIX}([0-9a-f]{{{ID_CHARS}}})_([A-Za-z0-9_-]{{1,100}})")


def _split(token: str) -> tuple[str, str] | None:
    """`gitd_<id>_<secret>` -> (id, secret); None when it is not that shape."""
    match = SHAPE.fullmatch(token)
    return (match[1], match[2]) if match else None


def create(s: Session, name: str | None = None, expires: str | None = None) -> dict:
    """A new token for the calling key; the only time its secret is shown."""
    name = validate.token_name(name) if name is not None else _default_name(s.key.name)
    lifetime = validate.expiry(expires) if expires is not None else None
    expires_at = time.time() + lifetime if lifetime else None
    if len(s.store.list_tokens(s.key.name)) >= MAX_PER_KEY:
        raise Conflict(f"key {s.key.name} already has {MAX_PER_KEY} tokens: "
                       "tokens:revoke one first")
    token_id, secret = secrets.token_hex(ID_CHARS // 2), secrets.token_urlsafe(32)
    row = s.store.add_token(token_id, name, s.key.name, _hash(secret), expires_at)
    return {**_shown(row), "token": f"{PREFIX}{token_id}_{secret}"}


def _default_name(key_name: str) -> str:
    return f"{key_name[:50]}-{secrets.token_hex(3)}"


def list_tokens(s: Session) -> list[dict]:
    """Every token for an admin; a deployer's own key's tokens otherwise."""
    rows = s.store.list_tokens(None if s.key.is_admin else s.key.name)
    return [_shown(row) for row in rows]


def revoke(s: Session, name: str, key: str | None = None) -> dict:
    """Revoke a token by its name, which is unique per key: the caller's own
    key's, or `key`'s. An admin may revoke any key's; without `key`, its own
    token of that name, else the one token of any key with it (several:
    name the key)."""
    validate.token_name(name)
    if key is not None:
        validate.key_name(key)
    # another key's token is "not found" to a deployer: names are not probed
    not_found = NotFound(f"no token named {name!r}" + (f" of key {key}" if key else "")
                         + " (`tokens` lists yours)")
    if not s.key.is_admin and key not in (None, s.key.name):
        raise not_found
    named = [t for t in s.store.tokens_named(name) if t.key_name == (key or s.key.name)]
    if not named and key is None and s.key.is_admin:
        named = s.store.tokens_named(name)
        if len(named) > 1:
            raise UsageError(f"keys {', '.join(t.key_name for t in named)} each have a token "
                             f"named {name!r}: name one with --key KEY")
    if not named:
        raise not_found
    s.store.delete_token(named[0].id)
    return {"name": name, "key": named[0].key_name}


def _shown(token) -> dict:
    return {"name": token.name, "key": token.key_name,
            "created_at": iso_time(token.created_at),
            "last_used_at": iso_time(token.last_used_at),
            "expires_at": iso_time(token.expires_at),
            "expired": bool(token.expires_at and token.expires_at <= time.time())}


def authenticate(store, presented: str):
    """The key a presented token acts as, or None: unknown shape, unknown
    id, wrong secret, expired, or its key removed."""
    parts = _split(presented)
    if parts is None:
        return None
    token_id, secret = parts
    token = store.token_by_id(token_id)
    if token is None or not hmac.compare_digest(_hash(secret), token.secret_hash):
        return None
    now = time.time()
    if token.expires_at is not None and token.expires_at <= now:
        return None
    try:
        key = store.get_key(token.key_name)
    except NotFound:
        return None
    if token.last_used_at is None or now - token.last_used_at >= USED_RESOLUTION:
        store.token_used(token.id, now)
    return key

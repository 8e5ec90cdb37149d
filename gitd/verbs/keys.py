"""Keys: who may connect.

An admin key may do everything. Any other key (a deployer) may push to, and
read (apps:info, releases, ps, logs, domains), only the apps it was granted
with apps:grant; not their config, not `run`.
"""

from __future__ import annotations

from gitd.core.errors import UsageError
from gitd.keys import register
from gitd.verbs import Session, iso_time

MAX_PUBLIC_KEY = 64 * 1024


def key_info(store, key) -> dict:
    return {
        "name": key.name,
        "role": "admin" if key.is_admin else "deployer",
        "fingerprint": key.fingerprint,
        "apps": "all" if key.is_admin else store.grants_of_key(key.name),
        "created_at": iso_time(key.created_at),
    }


def list_keys(s: Session) -> list[dict]:
    s.require_admin()
    return [key_info(s.store, k) for k in s.store.list_keys()]


def add(s: Session, name: str, public_key: str, *, admin: bool = False) -> dict:
    """Register `public_key` (one OpenSSH public key line) as `name`."""
    s.require_admin()
    if not isinstance(public_key, str) or len(public_key) > MAX_PUBLIC_KEY:
        raise UsageError(f"the public key must be text of at most {MAX_PUBLIC_KEY} bytes")
    return key_info(s.store, register(s.store, name, public_key, bool(admin)))


def remove(s: Session, name: str) -> dict:
    """The last admin key cannot be removed."""
    s.require_admin()
    s.store.remove_key(name, keep_an_admin=True)
    return {"name": name}

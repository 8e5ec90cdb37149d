"""Public keys: parse, fingerprint, register."""

from __future__ import annotations

import asyncssh

from gitd import validate
from gitd.errors import UsageError
from gitd.store import Key, Store


def parse_public_key(text: str) -> tuple[str, str]:
    """One OpenSSH public key line -> (canonical text, sha256 fingerprint)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise UsageError("expected exactly one public key (the contents of id_*.pub)")
    try:
        key = asyncssh.import_public_key(lines[0])
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise UsageError(f"not an SSH public key: {exc}")
    canonical = key.export_public_key("openssh").decode().strip()
    return canonical, key.get_fingerprint("sha256")


def register(store: Store, name: str, text: str, is_admin: bool) -> Key:
    validate.key_name(name)
    canonical, fingerprint = parse_public_key(text)
    return store.add_key(name, fingerprint, canonical, is_admin)

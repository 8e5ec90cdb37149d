"""Public keys: parse, fingerprint, register."""

from __future__ import annotations

import asyncssh

from gitd.core import validate
from gitd.core.errors import UsageError
from gitd.core.store import Key, Store

MAX_KEY_LINE = 16 * 1024  # an RSA 16384-bit key is about 2,800 characters


def parse_public_key(text: str) -> tuple[str, str]:
    """One OpenSSH public key line -> (canonical text, sha256 fingerprint)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise UsageError("expected exactly one public key (the contents of id_*.pub)")
    if len(lines[0]) > MAX_KEY_LINE:
        raise UsageError(f"not an SSH public key: longer than {MAX_KEY_LINE} characters")
    try:
        key = asyncssh.import_public_key(lines[0])
        canonical = key.export_public_key("openssh").decode().strip()
        return canonical, key.get_fingerprint("sha256")
    except Exception as exc:  # noqa: BLE001 - the parser raises more than KeyImportError
        # (an RSA key with a negative exponent: OverflowError)
        raise UsageError(f"not an SSH public key: {str(exc)[:100] or type(exc).__name__}")


def register(store: Store, name: str, text: str, is_admin: bool) -> Key:
    validate.key_name(name)
    canonical, fingerprint = parse_public_key(text)
    return store.add_key(name, fingerprint, canonical, is_admin)

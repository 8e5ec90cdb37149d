"""Validation of everything a user can type: the only way into paths and labels."""

from __future__ import annotations

import re

from gitd.errors import UsageError

APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PROCESS_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,29}$")
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def app_name(name: str) -> str:
    if not APP_NAME.fullmatch(name or "") or name.endswith("-") or "--" in name:
        raise UsageError(
            f"invalid app name {name!r}: use a lowercase letter first, then lowercase "
            "letters, digits and single dashes, at most 30 characters"
        )
    return name


def repo_path_to_app(path: str) -> str:
    """`hello`, `hello.git`, `/hello`, `/hello.git` -> `hello` (validated)."""
    name = path[1:] if path.startswith("/") else path
    if name.endswith(".git"):
        name = name[: -len(".git")]
    return app_name(name)


def key_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name or ""):
        raise UsageError(f"invalid key name {name!r}: letters, digits, '.', '_', '@', '-'")
    return name


def config_key(key: str) -> str:
    if not CONFIG_KEY.fullmatch(key or ""):
        raise UsageError(
            f"invalid config key {key!r}: a letter or '_' first, then letters, digits, '_'"
        )
    return key


def config_pair(pair: str) -> tuple[str, str]:
    """`KEY=VALUE` -> (KEY, VALUE); the value may hold anything, '=' included."""
    key, sep, value = pair.partition("=")
    if not sep:
        raise UsageError(f"expected KEY=VALUE, got {pair!r}")
    return config_key(key), value


def process_type(name: str) -> str:
    if not PROCESS_TYPE.fullmatch(name or ""):
        raise UsageError(f"invalid process type {name!r}")
    return name


def hostname(host: str) -> str:
    """A DNS name to route: lowercase letters, digits and dashes in dotted
    labels, nothing else. It goes into a Traefik rule, so no backtick,
    wildcard, space or bracket may pass; an IP literal is not a host to
    claim (its last label would be all digits, which no top-level domain is)."""
    host = (host or "").strip().lower().rstrip(".")
    labels = host.split(".")
    if (len(host) > 253 or len(labels) < 2 or not host.isascii()
            or not all(HOST_LABEL.fullmatch(lb) for lb in labels)):
        raise UsageError(f"invalid domain {host!r}")
    if labels[-1].isdigit():
        raise UsageError(f"invalid domain {host!r}: an IP address is not a domain")
    return host


def own_host(host: str, app: str, domain: str) -> str:
    """`<name>.<gitd domain>` is the default host of the app `name`, existing
    or future: no other app may take it."""
    suffix = "." + domain.lower().rstrip(".")
    if host.endswith(suffix):
        name = host[: -len(suffix)]
        if "." not in name and name != app:
            raise UsageError(f"{host} is reserved for the app {name!r} (every app gets "
                             f"<app>{suffix}); use another host")
    return host


def release_version(text: str) -> int:
    """`v3` or `3` -> 3."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise UsageError(f"invalid release {text!r}: expected v1, v2, ...")
    return int(digits)

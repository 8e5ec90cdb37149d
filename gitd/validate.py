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
    host = (host or "").strip().lower().rstrip(".")
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 2 or not all(HOST_LABEL.fullmatch(lb) for lb in labels):
        raise UsageError(f"invalid domain {host!r}")
    return host


def release_version(text: str) -> int:
    """`v3` or `3` -> 3."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise UsageError(f"invalid release {text!r}: expected v1, v2, ...")
    return int(digits)


# services and storage (issue 12)

SERVICE_VERSION = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){0,2}$")
VOLUME_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# never mounted into an app: the kernel's views, devices, Docker's state and socket
FORBIDDEN_HOST_PATHS = ("/proc", "/sys", "/dev", "/run", "/var/run", "/var/lib/docker",
                        "/boot", "/etc")
FORBIDDEN_TARGETS = ("/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/usr",
                     "/.gitd")


def service_name(name: str) -> str:
    """Same rule as app names: it becomes a host name, a network and a volume."""
    if not APP_NAME.fullmatch(name or "") or name.endswith("-") or "--" in name:
        raise UsageError(
            f"invalid service name {name!r}: use a lowercase letter first, then lowercase "
            "letters, digits and single dashes, at most 30 characters")
    return name


def service_version(version: str) -> str:
    if not SERVICE_VERSION.fullmatch(version or ""):
        raise UsageError(f"invalid version {version!r}: digits and dots, like 16 or 15.4")
    return version


def port(text: str, what: str = "port") -> int:
    if not (text or "").isdigit() or not 1024 <= int(text) <= 65535:
        raise UsageError(f"invalid {what} {text!r}: a number from 1024 to 65535")
    return int(text)


def volume_name(name: str) -> str:
    if not VOLUME_NAME.fullmatch(name or ""):
        raise UsageError(f"invalid volume name {name!r}: lowercase letters, digits, '_' "
                         "and '-', at most 40 characters")
    return name


def _clean_absolute(path: str, what: str) -> str:
    if not path.startswith("/") or "\0" in path or len(path) > 255:
        raise UsageError(f"{what} {path!r} must be an absolute path")
    parts = path.split("/")
    if any(p in (".", "..") for p in parts) or "//" in path:
        raise UsageError(f"{what} {path!r} may not hold '.', '..' or '//'")
    if not all(re.fullmatch(r"[A-Za-z0-9._@+-]*", p) for p in parts):
        raise UsageError(f"{what} {path!r}: letters, digits and . _ @ + - only")
    return path.rstrip("/") or "/"


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def mount_target(path: str) -> str:
    path = _clean_absolute(path, "mount path")
    if path == "/" or _under(path, FORBIDDEN_TARGETS):
        raise UsageError(f"cannot mount over {path}")
    return path


def host_path(path: str, data_dir) -> str:
    """An admin's bind mount source: absolute, existing, resolved through
    symlinks, and neither Docker's socket, the kernel's views nor gitd's data
    (nor a directory holding them)."""
    import os

    path = _clean_absolute(path, "host path")
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise UsageError(f"host path {path} is not a directory")
    guarded = list(FORBIDDEN_HOST_PATHS) + [os.path.realpath(str(data_dir))]
    for sock in ("/var/run/docker.sock", "/run/docker.sock"):
        guarded.append(os.path.realpath(sock))
    for root in guarded:
        if _under(real, [root]) or _under(root, [real]):
            raise UsageError(f"cannot mount {path}: it is or holds {root}")
    return real


def mount_spec(text: str) -> tuple[str, str]:
    """`NAME:/path` or `/host/path:/path` -> (source, target)."""
    source, sep, target = (text or "").partition(":")
    if not sep or not source or not target:
        raise UsageError(f"expected NAME:/path or /host/path:/path, got {text!r}")
    return source, mount_target(target)

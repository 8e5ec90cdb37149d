"""Validation of everything a user can type: the only way into paths and labels."""

from __future__ import annotations

import re

from gitd.core.errors import Taken, UsageError

APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PROCESS_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,29}$")
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
PREVIEW_LABEL = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def plain_app_name(name: str) -> str:
    """The name of an app made by apps:create (never holds `--`)."""
    if not APP_NAME.fullmatch(name or "") or name.endswith("-") or "--" in name:
        raise UsageError(
            f"invalid app name {name!r}: use a lowercase letter first, then lowercase "
            "letters, digits and single dashes, at most 30 characters"
        )
    return name


def app_name(name: str) -> str:
    """An app's name: a plain one, or a preview's `APP--label` (gitd.core.previews)."""
    parent, sep, label = (name or "").partition("--")
    if sep and len(name) <= 63 and PREVIEW_LABEL.fullmatch(label):
        plain_app_name(parent)
        return name
    return plain_app_name(name)


def repo_path_to_app(path: str) -> str:
    """`hello`, `hello.git`, `/hello`, `/hello.git` -> `hello` (validated).
    A preview has no repository of its own: its parent's branch is pushed."""
    name = path[1:] if path.startswith("/") else path
    if name.endswith(".git"):
        name = name[: -len(".git")]
    if "--" in name and app_name(name):
        raise UsageError(f"{name} is a preview app: push its branch to {name.split('--')[0]}")
    return plain_app_name(name)


def key_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name or ""):
        raise UsageError(f"invalid key name {name!r}: letters, digits, '.', '_', '@', '-'")
    return name


def token_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name or ""):
        raise UsageError(f"invalid token name {_show(name)}: letters, digits, '.', '_', '@', "
                         "'-', at most 64 characters, a letter or digit first")
    return name


EXPIRY = re.compile(r"([0-9]{1,5})([hd])")
EXPIRY_UNITS = {"h": 3600, "d": 86400}
MAX_EXPIRY_DAYS = 3650


def expiry(text: str) -> int:
    """`12h`, `30d` -> seconds; at least 1 hour, at most MAX_EXPIRY_DAYS days."""
    match = EXPIRY.fullmatch(text or "")
    seconds_ = int(match[1]) * EXPIRY_UNITS[match[2]] if match else 0
    if not 3600 <= seconds_ <= MAX_EXPIRY_DAYS * 86400:
        raise UsageError(f"invalid expiry {_show(text)}: a number of hours or days, like 12h "
                         f"or 30d, from 1h to {MAX_EXPIRY_DAYS}d")
    return seconds_


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


# A route's path prefix: RFC 3986 unreserved characters and '/', starting
# with '/', no empty, '.' or '..' segment, bounded so that route priorities
# (hooks/router.py) stay below the HTTPS redirect's.
PATH_PREFIX = re.compile(r"/[A-Za-z0-9._~/-]{0,99}")
MAX_PATH_PREFIX = 100


def path_prefix(path: str) -> str:
    """`/api`, `/api/` -> `/api`; `/` stays `/`. It goes into a Traefik rule
    and a strip-prefix middleware, so nothing but URL path characters pass."""
    raw = path
    if not isinstance(path, str):
        path = ""
    if path != "/" and path.endswith("/"):
        path = path[:-1]
    segments = path.split("/")[1:]
    if (not PATH_PREFIX.fullmatch(path)
            or (path != "/" and any(seg in ("", ".", "..") for seg in segments))):
        raise UsageError(
            f"invalid path prefix {_show(raw)}: '/' then letters, digits, '-', '.', '_', '~' "
            f"and '/' (no empty, '.' or '..' segment), at most {MAX_PATH_PREFIX} characters")
    return path


def host_and_path(text: str) -> tuple[str, str]:
    """`example.com/api` -> ("example.com", "/api"); a bare host -> (host, "/")."""
    text = (text or "").strip()
    host, slash, path = text.partition("/")
    host = hostname(host)
    try:
        return host, path_prefix("/" + path) if slash else "/"
    except UsageError as exc:
        raise UsageError(f"invalid domain {_show(text)}: {exc}") from None


def own_host(host: str, app: str, domain: str, api_host: str = "") -> str:
    """`<name>.<gitd domain>` is the default host of the app `name`, existing
    or future: no other app may take it; `api_host` (gitd's own API) no app
    at all."""
    if api_host and host == api_host:
        raise Taken(f"{host} is gitd's own (its HTTP API, setting api_host); "
                         "use another host")
    suffix = "." + domain.lower().rstrip(".")
    if host.endswith(suffix):
        name = host[: -len(suffix)]
        if "." not in name and name != app:
            raise Taken(f"{host} is reserved for the app {name!r} (every app gets "
                             f"<app>{suffix}); use another host")
    return host


# Numbers are ASCII digits only: str.isdigit() and int() also take '²' or
# '٣', and float() takes 'inf', 'nan' and '1e999'.
WHOLE = re.compile(r"[0-9]{1,12}")
DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
MAX_RELEASE = 10**9
PORT_RANGE = (1, 65535)


def whole_number(raw, what: str, low: int, high: int) -> int:
    """An int from `low` to `high`, given as ASCII digits (or a JSON whole
    number). Anything else is a UsageError naming `what` and the range."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str) and WHOLE.fullmatch(raw):
        value = int(raw)
    else:
        value = None
    if value is None or not low <= value <= high:
        raise UsageError(f"{what} must be a whole number from {low} to {high}, got {_show(raw)}")
    return value


def seconds(raw, what: str, low: float, high: float, above_low: bool = False) -> float:
    """A finite number of seconds in [low, high] (or (low, high] with
    `above_low`), as ASCII digits with an optional fraction, or a JSON number."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str) and DECIMAL.fullmatch(raw):
        value = float(raw)
    else:
        value = None
    in_range = value is not None and value == value and low <= value <= high
    if not in_range or (above_low and value == low):
        bound = f"above {low:g}" if above_low else f"from {low:g}"
        raise UsageError(f"{what} must be a number of seconds {bound} to {high:g}, got {_show(raw)}")
    return value


def port(raw, what: str = "PORT") -> int:
    return whole_number(raw, what, *PORT_RANGE)


def _show(raw) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def release_version(text: str) -> int:
    """`v3` or `3` -> 3."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not WHOLE.fullmatch(digits) or not 1 <= int(digits) <= MAX_RELEASE:
        raise UsageError(f"invalid release {_show(text)}: expected v1, v2, ...")
    return int(digits)


# services and storage (issue 12)

SERVICE_VERSION = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){0,2}$")
VOLUME_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# never mounted into an app: the kernel's views, devices, the engines' state
# (Docker's, Podman's, root's rootless Podman's) and sockets
FORBIDDEN_HOST_PATHS = ("/proc", "/sys", "/dev", "/run", "/var/run", "/var/lib/docker",
                        "/var/lib/containers", "/root/.local/share/containers", "/boot", "/etc")
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


def host_port(text: str, what: str = "port") -> int:
    """A port to publish on the host: not a privileged one."""
    return whole_number(text, what, 1024, 65535)


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


def host_path(path: str, data_dir, engine_url: str = "") -> str:
    """An admin's bind mount source: absolute, existing, resolved through
    symlinks, and neither the engine's socket (Docker's, or engine_url's),
    the kernel's views nor gitd's data (nor a directory holding them)."""
    import os

    path = _clean_absolute(path, "host path")
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise UsageError(f"host path {path} is not a directory")
    guarded = list(FORBIDDEN_HOST_PATHS) + [os.path.realpath(str(data_dir))]
    sockets = ["/var/run/docker.sock", "/run/docker.sock"]
    if engine_url.startswith("unix://"):
        sockets.append(engine_url.removeprefix("unix://"))
    for sock in sockets:
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


# swarm nodes (issue 16)

# a node's hostname (Linux allows 64 characters) or its 25-character swarm id
NODE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")


def node_name(name: str) -> str:
    if not NODE_NAME.fullmatch(name or ""):
        raise UsageError(f"invalid node name {_show(name)}: a node's hostname or id (letters, "
                         "digits, '.', '_', '-'; at most 64 characters)")
    return name


# where in a repository a build runs, and which flake attribute it builds

# a flake attribute name (`packages.<system>.<NAME>`): no dots, no quoting
ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]{0,99}$")
ROOT_WORDS = ("", ".", "/")


def build_dir(value: str) -> str:
    """`backend`, `/backend/`, `./services/api` -> a clean relative path; `.` or `/` -> ""."""
    if value.strip() in ROOT_WORDS:
        return ""
    parts = [p for p in value.strip().strip("/").split("/") if p not in ("", ".")]
    for part in parts:
        if part in ("..", ".git") or "\0" in part or "\\" in part:
            raise UsageError(f"invalid build directory {value!r}: use a path inside the "
                             "repository, such as backend or services/api")
    path = "/".join(parts)
    if len(path) > 255:
        raise UsageError("the build directory path is longer than 255 characters")
    return path


def attr_name(value: str, flag: str) -> str:
    if not ATTR_NAME.fullmatch(value or ""):
        raise UsageError(f"invalid {flag} {value!r}: a flake attribute name under "
                         "packages.<system> (letters, digits, _, ' and -)")
    return value


TRAEFIK_PREFIX = "traefik."


def routing_labels(labels: dict[str, str] | None) -> list[str]:
    """The labels among `labels` that Traefik would read."""
    return sorted(k for k in (labels or {}) if k.strip().lower().startswith(TRAEFIK_PREFIX))


# Docker's reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest];
# a first component is a registry host only with a dot, a port or as localhost
# (so `Upper/x` is an invalid path, not a host), and `sha256:...` is an image id
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PORT = r"(?::[0-9]{1,5})"
_IMAGE_HOST = rf"(?:(?:localhost{_PORT}?|{_LABEL}(?:\.{_LABEL})+{_PORT}?|{_LABEL}{_PORT})/)"
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
# also the API's schema pattern: (?!.*\n) since `$` matches before a final newline
IMAGE_PATTERN = (rf"^(?!.*\n)(?!sha256(?:[:@]|$))(?:{_IMAGE_HOST}?{_IMAGE_PATH})"
                 r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")
IMAGE_REFERENCE = re.compile(IMAGE_PATTERN)
IMAGE_MAX = 255


def image_reference(ref: str) -> str:
    """An image to pull, as `docker pull` takes it (no option, no space, no
    image id): `registry:5000/team/app:1.2` or `...@sha256:<64 hex>`; a
    reference without tag or digest means `:latest`."""
    if not isinstance(ref, str) or len(ref) > IMAGE_MAX or not IMAGE_REFERENCE.fullmatch(ref):
        raise UsageError(f"invalid image reference {str(ref)[:80]!r}: "
                         "use [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST]")
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        ref += ":latest"
    return ref

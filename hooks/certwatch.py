"""Certificates that expire soon and ACME errors, told to the apps'
notification subscribers (issue #25: certificate.expiring, acme.error).

One thread looks every `every` seconds at what apps:info and certs show
(gitd.core.certs.domain_status) and emits each condition once: a
certificate's expiry date, an ACME error's time. What a gitd told before a
restart it tells once more after it.
"""

from __future__ import annotations

import threading

import structlog

from gitd.core import certs, notify

log = structlog.get_logger("gitd.certwatch")

EVERY = 3600.0  # seconds between looks; certificates expire in days
FIRST_LOOK = 60.0  # after start: Traefik has read acme.json by then


class CertWatch:
    def __init__(self, settings, store, every: float = EVERY, first: float = FIRST_LOOK):
        self.settings = settings
        self.store = store
        self.every = every
        self.first = first
        self._told: set[tuple] = set()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, daemon=True, name="certwatch").start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        wait = self.first
        while not self._stop.wait(wait):
            wait = self.every
            try:
                self.look()
            except Exception:  # noqa: BLE001 - the watch must outlive one bad look
                log.exception("certificate watch")

    def look(self) -> list[tuple]:
        """Emit the conditions not told yet; the ones found this time."""
        if not self.settings.https:
            return []
        found = {}
        for app in self.store.list_apps():
            for row in certs.domain_status(self.settings, app.name, self.store.domains(app.name)):
                for event, which, data in conditions(row):
                    found[(app.name, event, row["domain"], which)] = data
        for (app, event, domain, _), data in found.items():
            if (app, event, domain, _) not in self._told:
                notify.emit(app, event, domain=domain, **data)
        self._told = set(found)  # a condition gone and back is told again
        return sorted(found)


def conditions(row: dict) -> list[tuple[str, str, dict]]:
    """(event, which occurrence, data) of one domain's status row: an
    expiry is the same while its date is, an ACME error while its time is."""
    out = []
    soon = row["days_left"] is not None and row["days_left"] < certs.EXPIRY_WARNING_DAYS
    if row["expired"] or soon:
        out.append(("certificate.expiring", row["expires"], {
            "days_left": row["days_left"], "expired": row["expired"],
            "expires": row["expires"], "source": row["source"]}))
    if row["acme_error"]:
        error = notify.clip(row["acme_error"], 500)
        out.append(("acme.error", row["acme_error_at"] or error,
                    {"at": row["acme_error_at"], "error": error}))
    return out

"""Services gitd runs beside apps (Postgres, Redis): one small module a kind."""

from __future__ import annotations

from gitd.core.errors import UsageError
from gitd.services.base import Kind
from gitd.services.postgres import Postgres
from gitd.services.redis import Redis

KINDS: dict[str, Kind] = {k.name: k for k in (Postgres(), Redis())}


def kind(name: str) -> Kind:
    if name not in KINDS:
        raise UsageError(f"unknown service kind {name!r}: one of {', '.join(KINDS)}")
    return KINDS[name]

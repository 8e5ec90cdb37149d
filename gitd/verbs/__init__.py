"""Verbs: each thing gitd does, implemented once, for every front-end.

A verb is a function `verb(session, typed arguments...)`: it checks the
caller's access (the same rules whoever calls), validates its input, takes
the app's lock when it changes a deploy, does the work, reports progress as
lines through `session.progress` (what `git push` shows) and returns data,
the JSON a front-end prints (SSH's `--json`) or answers (the HTTP API).
Verbs never parse argv, print or know the front-end that called them.
Front-ends (gitd/commands for SSH, the HTTP API) parse, call and present.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from gitd.core import validate
from gitd.core.errors import PermissionDenied


@dataclass
class Session:
    """Who calls (`key`: a store.Key; an API token carries its key's powers)
    and the daemon's services (`gitd`: gitd.service.Gitd)."""
    gitd: object
    key: object
    sink: Callable[[str], None] | None = field(default=None, kw_only=True)

    @property
    def store(self):
        return self.gitd.store

    @property
    def settings(self):
        return self.gitd.settings

    def progress(self, line: str) -> None:
        """One line of a verb's progress (a deploy's log)."""
        if self.sink is not None:
            self.sink(line)

    def require_admin(self) -> None:
        if not self.key.is_admin:
            raise PermissionDenied()

    def may_touch(self, app: str) -> bool:
        return self.key.is_admin or self.store.granted(app, self.key.name)

    def app(self, name: str):
        """Validate an app's name, check the caller may touch it, load it."""
        validate.app_name(name)
        if not self.may_touch(name):
            raise PermissionDenied()
        return self.store.get_app(name)

    def lock(self, app: str):
        """The app's deploy lock; says so (as progress) when it has to wait."""
        return self.gitd.app_lock(app, notify=self.progress)


def iso_time(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None

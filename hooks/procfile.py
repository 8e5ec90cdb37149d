"""Procfile: `type: command` lines."""

from __future__ import annotations

import re

from gitd.core.errors import BuildError

LINE = re.compile(r"^([A-Za-z0-9_-]+)\s*:\s*(.+)$")


def parse(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    processes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if not match:
            raise BuildError(f"Procfile line {number} is not `type: command`: {raw!r}")
        name = match.group(1).lower()
        if name in processes:
            raise BuildError(f"Procfile defines {name!r} twice")
        processes[name] = match.group(2).strip()
    return processes

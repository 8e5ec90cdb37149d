"""Per-app container limits (memory, cpus, pids): parsing and the docker
arguments they become, like Dokku's resource:limit.

Values are stored as normalised text (`512m`, `1.5`, `512`) in the app's
settings under "resources"; unset keys fall back to the instance defaults
(Settings.default_memory, default_cpus, default_pids), where "" or "0" means
no limit.
"""

from __future__ import annotations

import os
import re

from gitd.core.errors import UsageError

KEYS = ("memory", "cpus", "pids")
UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MEMORY = re.compile(r"^([0-9]{1,7})([bkmg]?)$")
CPUS = re.compile(r"^([0-9]{1,3})(?:\.([0-9]{1,2}))?$")
PIDS = re.compile(r"^[0-9]{1,7}$")
MIN_MEMORY = 6 * 1024**2  # docker refuses less
MAX_MEMORY = 1024**4
MIN_PIDS, MAX_PIDS = 16, 4_194_304


def memory_bytes(text: str) -> int:
    match = MEMORY.fullmatch(text.strip().lower())
    if not match:
        raise UsageError(f"memory={text!r}: expected a whole number with an optional unit "
                         "b, k, m or g (512m, 2g)")
    value = int(match.group(1)) * UNITS[match.group(2)]
    if not MIN_MEMORY <= value <= MAX_MEMORY:
        raise UsageError(f"memory={text!r}: must be between 6m and 1024g")
    return value


def cpus_value(text: str, available: int | None = None) -> float:
    available = available or os.cpu_count() or 1
    match = CPUS.fullmatch(text.strip())
    if not match:
        raise UsageError(f"cpus={text!r}: expected a number of CPUs like 1, 0.5 or 1.25")
    value = float(text)
    if not 0.01 <= value <= available:
        raise UsageError(f"cpus={text!r}: must be between 0.01 and {available} (this host's CPUs)")
    return value


def pids_value(text: str) -> int:
    if not PIDS.fullmatch(text.strip()):
        raise UsageError(f"pids={text!r}: expected a whole number of processes")
    value = int(text)
    if not MIN_PIDS <= value <= MAX_PIDS:
        raise UsageError(f"pids={text!r}: must be between {MIN_PIDS} and {MAX_PIDS}")
    return value


PARSERS = {"memory": memory_bytes, "cpus": cpus_value, "pids": pids_value}


def normalise(key: str, text: str) -> str:
    """Validate one value; returns the text to store."""
    if key not in PARSERS:
        raise UsageError(f"unknown resource {key!r} (known: {', '.join(KEYS)})")
    PARSERS[key](text)
    return text.strip().lower()


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"expected KEY=VALUE (memory=512m cpus=1 pids=512), got {pair!r}")
        values[key] = normalise(key, value)
    if not values:
        raise UsageError("name at least one of memory=, cpus=, pids=")
    return values


def defaults(settings) -> dict[str, str]:
    raw = {"memory": settings.default_memory, "cpus": settings.default_cpus,
           "pids": settings.default_pids}
    return {k: str(v) for k, v in raw.items() if str(v) not in ("", "0")}


def effective(settings, app_settings: dict) -> dict[str, str]:
    """What applies to an app: its own values over the instance defaults."""
    return {**defaults(settings), **(app_settings.get("resources") or {})}


def container_args(values: dict[str, str]) -> dict:
    """docker create() arguments. Memory without swap: the limit is the limit."""
    args: dict = {}
    if "memory" in values:
        memory = memory_bytes(values["memory"])
        args["mem_limit"] = memory
        args["memswap_limit"] = memory
    if "cpus" in values:
        args["nano_cpus"] = int(round(cpus_value(values["cpus"]) * 1e9))
    if "pids" in values:
        args["pids_limit"] = pids_value(values["pids"])
    return args


def build_limits(values: dict[str, str]) -> dict:
    """The classic builder's `container_limits` (what docker-py passes on):
    memory only, without swap. It has no pids limit and only relative CPU
    shares, so cpus and pids do not apply to RUN steps of a build."""
    if "memory" not in values:
        return {}
    memory = memory_bytes(values["memory"])
    return {"memory": memory, "memswap": memory}

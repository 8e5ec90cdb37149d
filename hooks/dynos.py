"""What `ps` and `logs` show of an app's running units, as plain data, the
same for both schedulers: a *dyno* is one process of the app (`web.1`,
`worker.2`, `backend.web.1` for an app.json service, `run.<id>` for a
one-off), whether it is a container (hooks.scheduler) or a swarm task
(hooks.swarm).

Rows (`ps --json` "containers"):

    name type service role release seq state health started_at uptime container
    restarts exit_code (Docker's restarts of the container, and the exit
    status of its last run that ended: None when unknown, as on the swarm)
    [node: the swarm node running the task]
    phase (added by `ps`: live, retiring or deploying, for the app's processes)
"""

from __future__ import annotations

import time
from datetime import datetime

from hooks.engine import LABEL_COMPONENT, LABEL_PROCESS, LABEL_RELEASE, LABEL_ROLE, LABEL_SEQ


def dyno(container) -> str:
    """`web.1` from `gitd-<instance>.<app>.web.1.s<seq>` (`run.<id>` for one-offs);
    `backend.web.1` for an app.json service's container (`backend_web` in its name)."""
    name = ".".join(container.name.split(".")[2:4])
    if (getattr(container, "labels", None) or {}).get(LABEL_COMPONENT):
        return name.replace("_", ".", 1)
    return name


def dyno_type(labels: dict) -> str:
    """`web`, or `backend.web` for an app.json service's process."""
    process = labels.get(LABEL_PROCESS) or "?"
    component = labels.get(LABEL_COMPONENT)
    return f"{component}.{process}" if component else process


def iso_time(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def parse_time(text: str | None) -> float | None:
    """Docker's RFC 3339 time (to the second); None for its zero time."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(text[:19] + "+00:00").timestamp()
    except ValueError:
        return None


def row(labels: dict, name: str, state: str, started: float | None, running: bool,
        container: str, health: str | None = None, now: float | None = None,
        restarts: int | None = None, exit_code: int | None = None) -> dict:
    now = time.time() if now is None else now
    return {
        "name": name,
        "type": labels.get(LABEL_PROCESS),
        "service": labels.get(LABEL_COMPONENT),
        "role": labels.get(LABEL_ROLE),
        "release": number(labels.get(LABEL_RELEASE)),
        "seq": number(labels.get(LABEL_SEQ)),
        "state": state,
        "health": health,
        "started_at": iso_time(started),
        "uptime": round(now - started) if running and started else None,
        "container": container,
        "restarts": restarts,
        "exit_code": exit_code,
    }


def number(value) -> int:
    return int(value) if str(value or "").isdigit() else 0


def container_row(container, last_exit: int | None = None) -> dict:
    """The row of a container (the docker scheduler's unit). `last_exit`:
    the status of its last run that ended, for one running again (Docker's
    state holds the status of a stopped one only)."""
    state = container.attrs.get("State") or {}
    ended = parse_time(state.get("FinishedAt")) is not None
    exit_code = state.get("ExitCode") if container.status != "running" and ended else last_exit
    return row(container.labels, dyno(container), container.status, parse_time(state.get("StartedAt")),
               container.status == "running", container.name,
               health=(state.get("Health") or {}).get("Status"),
               restarts=container.attrs.get("RestartCount") or 0, exit_code=exit_code)


def phase(row: dict, live_seq: int | None) -> str | None:
    """Where a process of the app stands in its deploys: `live`, `retiring`
    (an older deploy's, draining) or `deploying` (a newer one's, not live
    yet); None for one-offs."""
    if row["role"] != "service":
        return None
    if live_seq is None or row["seq"] > live_seq:
        return "deploying"
    return "live" if row["seq"] == live_seq else "retiring"


# log lines

def sortable(stamp: str) -> str:
    """Docker's RFC 3339 stamps drop trailing zeros: pad the fraction."""
    head, dot, frac = stamp.rstrip("Z").partition(".")
    return f"{head}.{frac.ljust(9, '0')}" if dot else f"{head}.000000000"


def merge(lines: list[tuple[str, str]], tail: int) -> list[str]:
    """(sortable stamp, prefixed text) pairs of several dynos -> the last
    `tail` texts, in time order."""
    if not tail:
        return []
    ordered = sorted(lines, key=lambda item: item[0])
    return [text for _, text in ordered[-tail:]]


class LineSplitter:
    """Bytes as they come -> whole lines (text, without the newline or a
    pty's carriage return); `rest()` is what is left at the end."""

    def __init__(self):
        self.pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    def rest(self) -> list[str]:
        rest, self.pending = self.pending, b""
        return [rest.decode("utf-8", "replace")] if rest else []


def stamp_seconds(stamp: str) -> float | None:
    """Docker's RFC 3339 log stamp (to the nanosecond) -> seconds since the epoch."""
    whole = parse_time(stamp)
    if whole is None:
        return None
    _, dot, frac = stamp.rstrip("Z").partition(".")
    digits = "".join(c for c in frac if c.isdigit())[:9] if dot else ""
    return whole + (int(digits.ljust(9, "0")) / 1e9 if digits else 0.0)


# what `logs -f` says of a process between its lines: `-----> DYNO (vN) EVENT`

def started_line(name: str, release: int, restarts: int = 0) -> str:
    again = f" (restart {restarts})" if restarts else ""
    return f"-----> {name} (v{release}) started{again}"


def exited_line(name: str, release: int, status: int | None,
                replaced_by: int | None = None) -> str:
    how = f"exited with status {status}" if status is not None else "exited"
    instead = f" (replaced by v{replaced_by})" if replaced_by is not None else ""
    return f"-----> {name} (v{release}) {how}{instead}"

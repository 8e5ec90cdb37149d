"""What a running `gitd serve` serves on, recorded in its data dir, so that
`gitd doctor` checks the ports gitd really uses: a systemd unit's flags
(`--traefik external`) and environment are not the doctor's."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gitd.core.config import Settings, replace

FILE = "serving.json"
RECORDED = ("ssh_host", "ssh_port", "http_host", "http_port", "https_port", "traefik",
            "traefik_api_port", "traefik_api_url", "scheduler", "registry", "registry_port")


def record(settings: Settings, ssh_port: int) -> Path:
    """Written once gitd listens (the SSH port as bound: port 0 picks one)."""
    data = {key: getattr(settings, key) for key in RECORDED}
    data.update(pid=os.getpid(), ssh_port=ssh_port)
    path = settings.data_dir / FILE
    partial = path.with_name(FILE + ".partial")
    partial.write_text(json.dumps(data))
    partial.replace(path)
    return path


def forget(settings: Settings) -> None:
    path = settings.data_dir / FILE
    if _read(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def running(settings: Settings) -> tuple[int, Settings] | None:
    """(pid, the settings it serves with) of the gitd serving this data dir;
    None when none runs (a record a killed gitd left is ignored)."""
    data = _read(settings.data_dir / FILE)
    pid = data.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not _alive(pid):
        return None
    values = {k: data[k] for k in RECORDED if k in data
              and isinstance(data[k], type(getattr(settings, k)))}
    return pid, replace(settings, **values)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    """A live process that is a gitd (not another one that got the pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"gitd" in cmdline and b"serve" in cmdline

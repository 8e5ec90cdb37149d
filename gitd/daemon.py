"""`gitd serve`: reconcile, start Traefik (managed), serve SSH, stop gracefully."""

from __future__ import annotations

import asyncio
import os
import signal

import structlog

from gitd.config import Settings
from gitd.server import SSHService
from gitd.service import Gitd

log = structlog.get_logger("gitd")


def _notify(state: str) -> None:
    try:
        from gitd.units import notify
    except ImportError:
        return
    notify(state)


async def serve(settings: Settings) -> int:
    gitd = Gitd(settings)
    settings = gitd.settings
    notes = await asyncio.to_thread(gitd.reconcile)
    from gitd.services.schedule import BackupScheduler

    backups = BackupScheduler(gitd)
    backups.start()
    traefik = None
    if settings.traefik == "managed":
        from gitd.traefik import ManagedTraefik

        traefik = ManagedTraefik(settings)
        await asyncio.to_thread(traefik.start)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ssh = SSHService(gitd)
    try:
        port = await ssh.start(settings.ssh_host, settings.ssh_port, settings.host_key_path)
    except OSError:
        if traefik:
            traefik.stop()
        raise
    log.info("listening", ssh_port=port, http_port=settings.http_port, domain=settings.domain,
             traefik=settings.traefik, instance=settings.instance, reconciled=len(notes))
    _notify("READY=1")
    await stop.wait()
    _notify("STOPPING=1")
    log.info("stopping: no new connections; letting work in flight finish",
             active=len(ssh.active), deploying=sorted(gitd.locks.busy()))
    ssh.stop_accepting()
    backups.stop()
    pending = set()
    if ssh.active:
        _, pending = await asyncio.wait(set(ssh.active), timeout=settings.shutdown_grace)
    if traefik:
        await asyncio.to_thread(traefik.stop)
    if pending:
        # worker threads cannot be cancelled; the next start reconciles
        log.warning("shutdown grace expired; abandoning work in flight", abandoned=len(pending))
        os._exit(1)
    log.info("stopped")
    return 0

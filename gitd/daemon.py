"""`gitd serve`: reconcile, start Traefik (managed) and the registry (swarm),
serve SSH, stop gracefully."""

from __future__ import annotations

import asyncio
import os
import signal

import structlog

from gitd import backup, serving
from gitd.core import notify
from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.scheduling import scheduler_class
from gitd.server import SSHService
from gitd.service import Gitd

log = structlog.get_logger("gitd")


def _notify(state: str) -> None:
    try:
        from gitd.units import notify
    except ImportError:
        return
    notify(state)


CERT_SYNC_INTERVAL = 2.0
API_BIND = "127.0.0.1"  # the API is reached from elsewhere through Traefik only


async def _sync_certs(gitd: Gitd) -> None:
    """Keep the file provider's config (custom certificates, redirects of
    hosts that have a certificate) in step with the store and acme.json."""
    from hooks.tls import sync_dynamic

    while True:
        try:
            if await asyncio.to_thread(sync_dynamic, gitd.settings, gitd.store):
                log.info("https config updated")
        except Exception:  # noqa: BLE001 - keep watching; the next round retries
            log.exception("https config update failed")
        await asyncio.sleep(CERT_SYNC_INTERVAL)


def _start_children(settings: Settings, store=None) -> list:
    """The programs gitd runs beside itself: Traefik (managed mode) and,
    on the swarm scheduler without a registry of the user's, the registry."""
    children = []
    if settings.traefik == "managed":
        from hooks.tls import custom_hosts_by_app
        from gitd.traefik import ManagedTraefik

        children.append(ManagedTraefik(
            settings, lambda: custom_hosts_by_app(settings, store) if store else {}))
    if scheduler_class(settings).needs_registry and not settings.registry:
        from gitd.registry import ManagedRegistry

        children.append(ManagedRegistry(settings))
    started = []
    try:
        for child in children:
            child.start()
            started.append(child)
    except BaseException:
        _stop_children(started)
        raise
    return started


async def _start_pages(gitd: Gitd):
    """The maintenance page server, beside a managed Traefik only (aiohttp
    is loaded only when something serves HTTP)."""
    if gitd.settings.traefik != "managed":
        return None
    from gitd.pages import start

    return await start(gitd)


def _stop_children(children: list) -> None:
    for child in reversed(children):
        child.stop()


def _check_network_pool(gitd: Gitd) -> None:
    """A network_pool over the engine's own bridge is refused at start (an
    unreachable engine is reported by the reconcile that follows)."""
    try:
        engine = gitd.engine
    except GitdError:
        return
    engine.check_network_pool()


async def serve(settings: Settings) -> int:
    gitd = Gitd(settings)
    settings = gitd.settings
    await asyncio.to_thread(_check_network_pool, gitd)
    from hooks.router import sweep_staged

    if swept := sweep_staged(settings.dynamic_dir):
        log.info("removed route files a stopped gitd left half-written", count=swept)
    notes = await asyncio.to_thread(gitd.reconcile)
    if settings.https:
        from hooks.tls import sync_dynamic
        from gitd.traefik import prepare_tls_dirs

        prepare_tls_dirs(settings)
        sync_dynamic(settings, gitd.store)
        asyncio.get_running_loop().create_task(_sync_certs(gitd))
    from gitd.services.schedule import BackupScheduler

    notify.install(gitd.notifier)
    gitd.notifier.start()
    from hooks.certwatch import CertWatch

    cert_watch = CertWatch(settings, gitd.store)
    cert_watch.start()
    backups = BackupScheduler(gitd)
    backups.start()
    from gitd.previews import Reaper

    reaper = Reaper(gitd.previews, settings.preview_reap_interval)
    reaper.start()
    from gitd.cronrunner import CronRunner

    crons = CronRunner(gitd)
    crons.start()
    # Traefik's servers follow what the scheduler runs (containers that die
    # or come back, tasks moved or replaced)
    gitd.scheduler.follow_tasks()
    health = gitd.watch_health()
    health_checks = gitd.run_health_checks()
    children = await asyncio.to_thread(_start_children, settings, gitd.store)
    gitd.traefik_child = next((c for c in children if c.name == "traefik"), None)
    gitd.watch_restarts()  # it confirms its routes in the managed Traefik's API
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ssh = SSHService(gitd)
    api = None
    if settings.api_port:
        from gitd.api import ApiServer  # aiohttp is loaded only when the API is on
        from gitd.dashboard import mount as mount_dashboard

        api = ApiServer(gitd)
        mount_dashboard(api.app)
    try:
        port = await ssh.start(settings.ssh_host, settings.ssh_port, settings.host_key_path)
        api_port = await api.start(API_BIND, settings.api_port) if api else 0
    except (OSError, GitdError):
        ssh.stop_accepting()
        _stop_children(children)
        raise
    # last of the listeners, on an ephemeral port: started before them, it
    # could take a port Traefik, the SSH server or the API was given (Traefik
    # then exited at start; seen in CI). Traefik reads its route when it comes.
    pages = await _start_pages(gitd)
    serving.record(settings, port)
    log.info("listening", ssh_port=port, http_port=settings.http_port, domain=settings.domain,
             api_port=api_port, traefik=settings.traefik, instance=settings.instance,
             reconciled=len(notes))
    _notify("READY=1")
    # after READY: pushes and commands are served meanwhile
    loop.run_in_executor(None, gitd.refresh_routes)
    if backup.pending(settings) is not None:  # a restored data dir: bring its apps back
        loop.run_in_executor(None, backup.finish, gitd)
    await stop.wait()
    _notify("STOPPING=1")
    log.info("stopping: no new connections; letting work in flight finish",
             active=len(ssh.active), deploying=sorted(gitd.locks.busy()))
    ssh.stop_accepting()
    api_stopped = loop.create_task(api.stop()) if api else None
    deadline = loop.time() + settings.shutdown_grace
    backups.stop()
    gitd.notifier.stop()
    cert_watch.stop()
    reaper.stop()
    crons.stop()
    if health:
        health.stop()
    if health_checks:
        health_checks.stop()
    pending = set()
    if ssh.active:
        _, pending = await asyncio.wait(set(ssh.active), timeout=settings.shutdown_grace)
    retiring = gitd.retirements.pending()
    if retiring:
        log.info("finishing retirements of old containers", apps=sorted(retiring))
        finished = await asyncio.to_thread(gitd.retirements.wait, max(0.0, deadline - loop.time()))
        if not finished:
            # their containers are found by label and retired at the next start
            log.warning("shutdown grace expired; handing retirements over to the next start",
                        apps=sorted(gitd.retirements.pending()))
    if api_stopped:
        await api_stopped
    await asyncio.to_thread(_stop_children, children)
    if pages:
        await pages.stop()
    serving.forget(settings)
    if pending:
        # worker threads cannot be cancelled; the next start reconciles
        log.warning("shutdown grace expired; abandoning work in flight", abandoned=len(pending))
        os._exit(1)
    log.info("stopped")
    return 0

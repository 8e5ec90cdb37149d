"""The maintenance page server (issue #25): on 127.0.0.1, for the managed
Traefik only. Traefik's errors middleware asks it for `/<app>` when an
app's maintenance router answers 503 (hooks.maintenance); it answers the
app's page, and the address it listens on goes into the page service's
route file, rewritten at each start."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from gitd.core import validate
from gitd.core.errors import GitdError
from hooks import maintenance, router

log = structlog.get_logger("gitd.pages")

BIND = "127.0.0.1"


def _message(store, app: str) -> str:
    """The app's message; the default one for anything else asking."""
    try:
        validate.app_name(app)
        found = store.get_app(app)
    except GitdError:
        return maintenance.DEFAULT_MESSAGE
    return ((found.settings or {}).get("maintenance") or {}).get("message") \
        or maintenance.DEFAULT_MESSAGE


class PageServer:
    def __init__(self, gitd):
        self.gitd = gitd
        self.runner: web.AppRunner | None = None

    async def page(self, request: web.Request) -> web.Response:
        app = request.match_info["app"]
        message = await asyncio.to_thread(_message, self.gitd.store, app)
        return web.Response(status=503, text=maintenance.page_html(app, message),
                            content_type="text/html", charset="utf-8",
                            headers={"Retry-After": str(maintenance.RETRY_AFTER_SECONDS),
                                     "Cache-Control": "no-store"})

    async def start(self) -> int:
        """Listen on an ephemeral port of loopback; publish it to Traefik."""
        app = web.Application()
        app.router.add_get("/{app}", self.page)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, BIND, 0).start()
        port = self.runner.addresses[0][1]
        await asyncio.to_thread(self._publish, f"http://{BIND}:{port}")
        return port

    def _publish(self, url: str) -> None:
        settings = self.gitd.settings
        path = settings.dynamic_dir / maintenance.PAGE_FILE
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        router.write_route_file(path, router.route_file_text(maintenance.page_service_config(url)))

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def start(gitd) -> PageServer | None:
    """The page server (None when it cannot listen)."""
    server = PageServer(gitd)
    try:
        port = await server.start()
    except OSError as exc:  # maintenance pages go bare (503 still); gitd serves on
        log.warning("cannot serve maintenance pages", error=str(exc))
        await server.stop()
        return None
    log.info("maintenance pages", port=port)
    return server

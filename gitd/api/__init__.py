"""The HTTP API: the second front-end over gitd.verbs, beside SSH's commands.

It runs in the daemon's event loop (aiohttp) on 127.0.0.1:`api_port`.

Conventions for a route module (gitd/api/apps.py is the example):

- A module has `routes = Routes()` and is named once in ROUTE_MODULES below.
- Each handler is declared with its OpenAPI operation next to it:
  `@routes.get(path, summary=..., parameters=[...], responses={200: schema})`
  (`body=schema` for a JSON request body). The document at
  `GET /api/v1/openapi.json` is assembled from these declarations, and the
  error answers (400, 401, 403, 404, 409, 429; 413 and 415 with a body) are
  added to every operation behind a token.
- Every route needs `Authorization: Bearer <token>` unless declared with
  `auth=False`. The auth middleware sets `request["session"]`: a
  gitd.verbs.Session for the token's key, so a verb sees the same caller
  and applies the same access rules as over SSH.
- A handler parses (path parameters, `await json_body(request, schema)`),
  then calls ONE verb through `call(request, verb, *args)`, which runs it on
  the verb thread pool (verbs block: docker, sqlite) and answers its data as
  JSON. No logic in handlers: what is not a verb yet becomes one.
- Errors are raised, never answered by hand: a GitdError becomes
  `{"error": message}` with the status of its class (UsageError 400,
  Unauthorized 401, PermissionDenied 403, NotFound 404, Conflict 409 (a
  name taken, the app's deploy lock busy), TooLarge 413, UnsupportedMedia
  415, RateLimited 429, any other GitdError 400). Anything else is a bug:
  logged with its traceback, answered 500 with a generic message.
- Bodies are JSON objects of at most MAX_BODY bytes. Tokens are never
  logged and never put in a URL.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import secrets
import time

import structlog
from aiohttp import web

from gitd.api import auth, exposure, openapi, routing
from gitd.api.routing import Route, UnsupportedMedia, json_response
from gitd.core.errors import (Conflict, DiskFull, GitdError, NotFound, PermissionDenied,
                              RateLimited, TooLarge, UsageError, is_disk_full)

log = structlog.get_logger("gitd.api")

# one line per module of routes
ROUTE_MODULES = (
    "gitd.api.meta",
    "gitd.api.apps",
    "gitd.api.deployments",
    "gitd.api.config",
    "gitd.api.domains",
    "gitd.api.ps",
    "gitd.api.releases",
    "gitd.api.logs",
    "gitd.api.services",
    "gitd.api.certs",
    "gitd.api.resources",
    "gitd.api.checks",
    "gitd.api.cron",
    "gitd.api.storage",
    "gitd.api.webhooks",
    "gitd.api.notify",
    "gitd.api.maintenance",
    "gitd.api.previews",
)

MAX_BODY = 1024 * 1024
SHUTDOWN_TIMEOUT = 10.0

# the most specific class first
STATUSES = (
    (auth.Unauthorized, 401),
    (RateLimited, 429),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (UnsupportedMedia, 415),
    (UsageError, 400),
    (GitdError, 400),
)


def status_of(exc: GitdError) -> int:
    return next(status for cls, status in STATUSES if isinstance(exc, cls))


def error_response(exc: GitdError) -> web.Response:
    headers = {}
    if isinstance(exc, auth.Unauthorized):
        headers["WWW-Authenticate"] = exc.challenge
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    return json_response({"error": exc.message}, status=status_of(exc), headers=headers)


def _http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own answers (no such route, method not allowed) as JSON."""
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return json_response({"error": exc.reason.lower()}, status=exc.status, headers=headers)


@web.middleware
async def errors(request: web.Request, handler):
    started = time.monotonic()
    try:
        response = await handler(request)
    except GitdError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _http_error(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one boundary: a bug, logged, never shown
        if is_disk_full(exc):  # not a bug: said, as 507 Insufficient Storage
            log.warning("disk full", method=request.method, path=request.path, error=str(exc))
            response = json_response({"error": DiskFull.at(
                request.app["gitd"].settings.data_dir, "the request could not finish").message},
                status=507)
        else:
            log.exception("api request failed", method=request.method, path=request.path)
            response = json_response({"error": "internal error (the server's log says more)"},
                                     status=500)
    log.info("api request", method=request.method, path=request.path, status=response.status,
             key=request.get("key_name"), ms=round((time.monotonic() - started) * 1000, 1))
    return response


def all_routes() -> list[Route]:
    routes: list[Route] = []
    for name in ROUTE_MODULES:
        routes.extend(importlib.import_module(name).routes.routes)
    return routes


def build_app(gitd) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors, auth.authenticate])
    app["gitd"] = gitd
    app["max_body"] = MAX_BODY
    app["failed_attempts"] = auth.FailedAttempts(gitd.settings.api_auth_failures)
    app["live_streams"] = routing.LiveStreams()
    app["public"] = set()
    app["proxy_secret"] = None  # set when gitd's Traefik routes api_host here
    routes = all_routes()
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
        if not route.auth:
            app["public"].add(route.handler)
    app["openapi"] = openapi.document(routes)
    return app


class Refused(asyncio.Protocol):
    """A connection past the limit: told so, and closed."""

    ANSWER = json.dumps({"error": "too many connections to the API; try again shortly"}).encode()

    def connection_made(self, transport) -> None:
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Retry-After: 1\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(self.ANSWER), self.ANSWER))
        transport.close()


class CappedServer:
    """aiohttp's protocol factory, refusing a connection while `limit` are
    open (a slow client holds one until api_header_timeout at most)."""

    def __init__(self, server: web.Server, limit: int):
        self.server, self.limit = server, limit

    def __call__(self):
        if len(self.server.connections) >= self.limit:
            return Refused()
        return self.server()

    def __getattr__(self, name):
        return getattr(self.server, name)


class CappedRunner(web.AppRunner):
    def __init__(self, app: web.Application, limit: int, **kwargs):
        super().__init__(app, **kwargs)
        self.limit = limit

    @property
    def server(self):
        inner = super().server
        return None if inner is None else CappedServer(inner, self.limit)


class ApiServer:
    """The API's listener, started and stopped by the daemon."""

    def __init__(self, gitd):
        self.app = build_app(gitd)
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; with a managed Traefik, also at api_host."""
        settings = self.app["gitd"].settings
        # a connection that has not sent a whole request's headers this long
        # after it opened (or after its last answer) is closed: aiohttp's
        # keep-alive timer closes one whose next request has not arrived yet
        self.runner = CappedRunner(self.app, settings.api_max_connections, access_log=None,
                                   handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT,
                                   keepalive_timeout=settings.api_header_timeout)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise GitdError(f"cannot serve the HTTP API on {host}:{port} (setting api_port; "
                            f"0 turns the API off): {exc.strerror or exc}") from None
        port = self.runner.addresses[0][1]
        # behind Traefik every client is 127.0.0.1: the brake then counts
        # the address Traefik saw (the last of X-Forwarded-For), on requests
        # that carry the secret only Traefik was told
        secret = secrets.token_hex(16)
        if await asyncio.to_thread(exposure.publish, settings, port, secret):
            self.app["proxy_secret"] = secret
        return port

    async def stop(self) -> None:
        """No new requests; those in flight get SHUTDOWN_TIMEOUT to finish."""
        if self.runner is not None:
            await asyncio.to_thread(exposure.withdraw, self.app["gitd"].settings)
            await self.runner.cleanup()

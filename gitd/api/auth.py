"""Bearer tokens on every route that is not public, and the brake on
guessing them: too many failed attempts from one client address answer 429
for a while (per address, in memory; SSH has its own limits, untouched)."""

from __future__ import annotations

import hmac
import time
from collections import deque

from aiohttp import web

from gitd.core.errors import GitdError, RateLimited
from gitd.api import exposure
from gitd.api.routing import run_blocking
from gitd.verbs import Session, tokens

FAILURES_ALLOWED = 10  # failed attempts per address within WINDOW
WINDOW = 60.0
MAX_TRACKED = 10_000  # addresses remembered at once (a spray cannot grow this forever)
CHALLENGE = 'Bearer realm="gitd"'


class Unauthorized(GitdError):
    """No token, or one that is unknown, revoked, expired or of a removed key."""

    def __init__(self, message: str, invalid: bool):
        super().__init__(message)
        self.challenge = CHALLENGE + (', error="invalid_token"' if invalid else "")


class FailedAttempts:
    def __init__(self, allowed: int = FAILURES_ALLOWED, window: float = WINDOW):
        self.allowed, self.window = allowed, window
        self.by_client: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self.by_client.get(client, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, client: str) -> int:
        """Seconds until `client` is heard again; 0 when it is now."""
        now = time.monotonic()
        times = self._recent(client, now)
        if len(times) < self.allowed:
            return 0
        return max(1, int(times[0] + self.window - now + 1))

    def failed(self, client: str) -> None:
        now = time.monotonic()
        if client not in self.by_client and len(self.by_client) >= MAX_TRACKED:
            self._forget_quiet(now)
        times = self._recent(client, now)
        times.append(now)
        while len(times) > self.allowed:
            times.popleft()
        self.by_client[client] = times

    def _forget_quiet(self, now: float) -> None:
        for client in [c for c, t in self.by_client.items() if not t or t[-1] <= now - self.window]:
            del self.by_client[client]
        while len(self.by_client) >= MAX_TRACKED:  # all busy: the oldest entry goes
            del self.by_client[next(iter(self.by_client))]


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


LOOPBACK = ("127.0.0.1", "::1")


def client_address(request: web.Request) -> str:
    """Who asks: the peer, or for a request gitd's Traefik passed on (a
    loopback peer with Traefik's secret header) the address Traefik appended
    to X-Forwarded-For."""
    peer = request.remote or "unknown"
    forwarded = request.headers.get("X-Forwarded-For", "")
    if peer in LOOPBACK and forwarded and from_traefik(request):
        return forwarded.rsplit(",", 1)[-1].strip()[:64] or peer
    return peer


def from_traefik(request: web.Request) -> bool:
    secret = request.app["proxy_secret"]
    given = request.headers.get(exposure.PROXY_HEADER, "")
    return bool(secret) and hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode())


@web.middleware
async def authenticate(request: web.Request, handler):
    """Sets request["session"]: a Session for the token's key."""
    match = request.match_info
    if match.http_exception is not None or match.handler in request.app["public"]:
        return await handler(request)  # no such route (404, 405), or a public one
    client = client_address(request)
    attempts: FailedAttempts = request.app["failed_attempts"]
    wait = attempts.retry_after(client)
    if wait:
        raise RateLimited("too many failed attempts to authenticate; try again later", wait)
    presented = bearer(request)
    if presented is None:
        raise Unauthorized("send a token: Authorization: Bearer <token> "
                           "(make one with `ssh paas tokens:create`)", invalid=False)
    gitd = request.app["gitd"]
    key = await run_blocking(tokens.authenticate, gitd.store, presented)
    if key is None:
        attempts.failed(client)
        raise Unauthorized("the token is unknown, revoked or expired", invalid=True)
    request["session"] = Session(gitd, key)
    request["key_name"] = key.name
    return await handler(request)


async def still_authenticated(request: web.Request) -> bool:
    """Whether the request's token still stands: a long request (a live log)
    asks again, so a revoked or expired token ends it."""
    key = await run_blocking(tokens.authenticate, request.app["gitd"].store,
                             bearer(request) or "")
    return key is not None and key.name == request["key_name"]

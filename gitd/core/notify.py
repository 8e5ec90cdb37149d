"""Notifications (issue #25): events POSTed to the URLs apps subscribe.

Anything in gitd tells of an event with `emit(app, event, **data)`; it
never blocks and never raises. The daemon installs a `Notifier` at start
(`install`); until then, and in tests that install none, `emit` does
nothing. The notifier queues one delivery per matching subscription (the
queue is bounded) and one background thread POSTs them: a JSON body signed
with HMAC-SHA256 under the subscription's secret, retried with backoff for
a bounded time, no redirects followed. Each attempt's result is recorded
on the subscription (`Store.notify_deliveries`).

SSRF: a URL whose host is, or resolves to, a loopback, private,
link-local, unique-local, unspecified, multicast or reserved address, or
an address of this host, is for admins only. A deployer's subscription is
checked again at each delivery, and the connection goes to the very
address checked (a name that resolves elsewhere the second time cannot
slip past).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import http.client
import ipaddress
import itertools
import json
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

import structlog

from gitd.core.errors import PermissionDenied, UsageError

log = structlog.get_logger("gitd.notify")

EVENTS = ("deploy.started", "deploy.succeeded", "deploy.failed", "rollback", "backup.failed",
          "certificate.expiring", "acme.error", "cron.failed", "preview.created",
          "preview.removed")
FORMATS = ("json", "slack")
MAX_URL = 2048
TIMEOUT = 5.0  # seconds for each of connect and response
DEADLINE = 10.0  # seconds for a whole attempt: a target answering a byte at a time is cut off
RETRY_FOR = 900.0  # a delivery is given up this long after its event
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 120.0
MAX_QUEUE = 1000  # deliveries waiting; past that, new ones are dropped (and recorded so)
MAX_WAITING_PER_URL = 100  # so that one failing URL cannot fill the queue for the others
# so that one app's events (its own URLs, or the global ones) cannot fill it
# for the other apps: an app has at most 20 URLs, 20 * 100 is past MAX_QUEUE
MAX_WAITING_PER_APP = 200
SIGNATURE_HEADER = "X-Gitd-Signature"
USER_AGENT = "gitd-notify/1"
MAX_TEXT = 2000  # the log tail and reasons carried in an event


# --- the seam: what the rest of gitd calls

_installed: "Notifier | None" = None


def emit(app: str | list[str] | None, event: str, **data) -> None:
    """Tell the subscribers of `app` (or of each of a list of apps, once
    each) and the global ones of `event`. Never blocks on the network and
    never raises."""
    notifier = _installed
    if notifier is None:
        return
    try:
        notifier.emit(app, event, data)
    except Exception:  # noqa: BLE001 - telling of an event must not break what happened
        log.exception("cannot queue a notification", app=app, notify_event=event)


def install(notifier: "Notifier | None") -> None:
    global _installed
    _installed = notifier


@contextlib.contextmanager
def installed(notifier):
    """For tests: `notifier` (anything with emit(app, event, data)) for the block."""
    before = _installed
    install(notifier)
    try:
        yield notifier
    finally:
        install(before)


# --- checks of what a subscriber gives

def events(text: str | None) -> list[str]:
    """`e1,e2` checked against EVENTS; none named means all."""
    named = [e.strip() for e in (text or "").split(",") if e.strip()]
    if not named:
        return list(EVENTS)
    unknown = [e for e in named if e not in EVENTS]
    if unknown:
        raise UsageError(f"unknown event {unknown[0][:60]!r}; events: {', '.join(EVENTS)}")
    return sorted(set(named), key=EVENTS.index)


def format_(text: str | None) -> str:
    text = text or "json"
    if text not in FORMATS:
        raise UsageError(f"unknown format {text[:30]!r}; formats: {', '.join(FORMATS)}")
    return text


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query


def parse_url(url: str) -> Target:
    """An http(s) URL of bounded length with a host and no credentials."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise UsageError(f"the URL must be at most {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise UsageError("the URL must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError("the URL must start with http:// or https://")
    if not parts.hostname:
        raise UsageError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UsageError("the URL must not carry credentials (user:password@)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname.lower().rstrip("."),
                  port or (443 if parts.scheme == "https" else 80), path)


def internal_address(address: str) -> bool:
    """Loopback, private, link-local, unique-local, site-local, unspecified,
    multicast, reserved, or an IPv6 form of one (IPv4-mapped, NAT64)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if ip in ipaddress.ip_network("64:ff9b::/96") else None)
        if embedded is not None and internal_address(str(embedded)):
            return True
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local  # "global" to Python
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified
            or ip.is_multicast or ip.is_reserved or site_local or not ip.is_global)


def this_host(address: str) -> bool:
    """An address of this machine (it can be bound here): its public one
    looks global, yet gitd's own ports and what a firewall keeps from the
    outside answer there."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
        return True
    except OSError:
        return False


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"cannot resolve {host[:253]}: {exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_target(target: Target, internal_ok: bool, resolver: Resolver | None = None) -> str:
    """The address to connect to: the first of the host's; refused (in
    words) when any is internal and the caller may not reach those."""
    addresses = (resolver or resolve)(target.host, target.port)
    if not addresses:
        raise UsageError(f"cannot resolve {target.host}")
    inside = [a for a in addresses if internal_address(a) or this_host(a)]
    if inside and not internal_ok:
        where = f"resolves to {inside[0]}" if inside[0] != target.host.strip("[]") else "is"
        raise PermissionDenied(
            f"{target.host} {where}, a loopback, private or other internal address: only an "
            "admin may send notifications there")
    return addresses[0]


# --- what is sent

def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


def clip(text, limit: int = MAX_TEXT) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[-limit:]


def body(event: str, app: str | None, data: dict, fmt: str, delivery: str, when: float) -> bytes:
    if fmt == "slack":
        return json.dumps({"text": slack_escaped(summary(event, app, data))}).encode()
    return json.dumps({"event": event, "app": app, "delivery": delivery,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
                       "data": data}, default=str).encode()


def slack_escaped(text: str) -> str:
    """Slack reads <!channel>, <@user> and <url|label> in a message's text;
    escaped, they show as written (errors and logs hold a deployer's words)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary(event: str, app: str | None, data: dict) -> str:
    """One message in words (Slack's format)."""
    who = f"{app}" if app else "gitd"
    release = f" v{data['release']}" if data.get("release") else ""
    words = {
        "deploy.started": f"Deploy of {who} started ({data.get('trigger', 'deploy')})",
        "deploy.succeeded": f"Deploy of {who}{release} succeeded",
        "deploy.failed": f"Deploy of {who} failed: {data.get('error') or 'see its log'}",
        "rollback": f"{who} rolled back to{release or ' an earlier release'}",
        "backup.failed": f"Backup of {data.get('service', 'a service')} failed: "
                         f"{data.get('error', '')}",
        "certificate.expiring": f"Certificate of {data.get('domain', who)} expires "
                                f"{data.get('expires', 'soon')}",
        "acme.error": f"ACME error for {data.get('domain', who)}: {data.get('error', '')}",
        "cron.failed": f"Cron job {data.get('job', '')} of {who} failed",
        "preview.created": f"Preview {data.get('preview', '')} of {who} created",
        "preview.removed": f"Preview {data.get('preview', '')} of {who} removed",
    }.get(event, f"{event} ({who})")
    if event == "deploy.failed" and data.get("log_tail"):
        words += "\n```\n" + clip(data["log_tail"], 1500) + "\n```"
    return words


# --- sending

class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address checked, whatever the name resolves to now."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host, port, address, timeout, context):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self):
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def post(target: Target, address: str, payload: bytes, headers: dict,
         timeout: float = TIMEOUT, deadline: float = DEADLINE) -> int:
    """POST once; the status (a redirect is a status, not followed). The
    body of the answer is not read."""
    if target.scheme == "https":
        conn = _PinnedHTTPS(target.host, target.port, address, timeout, ssl.create_default_context())
    else:
        conn = _PinnedHTTP(target.host, target.port, address, timeout)
    cut = threading.Timer(deadline, _cut_off, [conn])
    cut.start()
    try:
        conn.request("POST", target.path, body=payload, headers=headers)
        return conn.getresponse().status
    finally:
        cut.cancel()
        conn.close()


def _cut_off(conn) -> None:
    """Wakes a read blocked on the connection (close alone would not)."""
    with contextlib.suppress(OSError, AttributeError):
        conn.sock.shutdown(socket.SHUT_RDWR)


# --- the queue and its worker

@dataclass(order=True)
class Delivery:
    due: float
    seq: int
    subscription: int = field(compare=False)
    event: str = field(compare=False)
    body: bytes = field(compare=False)
    delivery: str = field(compare=False)
    first_at: float = field(compare=False)
    attempt: int = field(default=0, compare=False)
    app: str | None = field(default=None, compare=False)  # whose event


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (1, 2, 4 ... at most MAX_BACKOFF)."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, attempt - 1))


class Notifier:
    """Deliveries of the events to the subscriptions in `store`. `clock`,
    `resolver` and `send` are seams for tests; `run_due(now)` is one turn
    of the worker's loop."""

    def __init__(self, store, clock: Callable[[], float] = time.time,
                 resolver: Resolver | None = None, send=post, max_queue: int = MAX_QUEUE,
                 retry_for: float = RETRY_FOR):
        self.store = store
        self.clock = clock
        self.resolver = resolver
        self.send = send
        self.max_queue = max_queue
        self.retry_for = retry_for
        self._queue: list[Delivery] = []
        self._seq = itertools.count(1)
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    # the producer side

    def emit(self, app: str | list[str] | None, event: str, data: dict) -> int:
        """Queue a delivery per matching subscription; how many were queued."""
        if event not in EVENTS:
            raise ValueError(event)
        apps = [app] if isinstance(app, str) else list(app or [])
        if not isinstance(app, str):
            app = None  # an event of several apps (a service's) names them in its data
        now = self.clock()
        queued = 0
        for sub in self.store.notify_subscriptions_for(apps, event):
            delivery = f"{int(now * 1000):x}-{next(self._seq)}"
            item = Delivery(now, next(self._seq), sub["id"], event,
                            body(event, app, data, sub["format"], delivery, now), delivery, now,
                            app=app)
            with self._wake:
                full = (len(self._queue) >= self.max_queue
                        or sum(1 for d in self._queue if d.subscription == sub["id"])
                        >= MAX_WAITING_PER_URL
                        or (app is not None and sum(1 for d in self._queue if d.app == app)
                            >= MAX_WAITING_PER_APP))
                if not full:
                    heapq.heappush(self._queue, item)
                    queued += 1
                    self._wake.notify()
            if full:
                self._record(item, None, "dropped: too many deliveries waiting "
                                         f"(at most {MAX_WAITING_PER_URL} a URL, "
                                         f"{MAX_WAITING_PER_APP} an app, {self.max_queue} in all)")
        return queued

    def waiting(self) -> int:
        with self._wake:
            return len(self._queue)

    # the worker side

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="notify")
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                if self._stopped:
                    return
                wait = self._queue[0].due - self.clock() if self._queue else None
                if wait is None or wait > 0:
                    self._wake.wait(timeout=None if wait is None else min(wait, 60.0))
                    continue
            try:
                self.run_due(self.clock())
            except Exception:  # noqa: BLE001 - the worker must outlive one bad delivery
                log.exception("notification worker")

    def run_due(self, now: float) -> int:
        """Attempt every delivery due by `now`; how many were attempted.
        An app at a time (each app's in order): one app's many deliveries
        to targets that never answer hold the others back by one attempt."""
        attempted = 0
        served: set[str | None] = set()  # the apps served this round
        while True:
            now = max(now, self.clock())  # what came due while the last attempt ran gets its turn
            with self._wake:
                if self._stopped or not self._queue or self._queue[0].due > now:
                    return attempted
                due = [d for d in self._queue if d.due <= now]
                item = min((d for d in due if d.app not in served), default=None)
                if item is None:  # every app with one due had its turn: a new round
                    served.clear()
                    item = min(due)
                self._queue.remove(item)
                heapq.heapify(self._queue)
            served.add(item.app)
            attempted += 1
            self._attempt(item)

    def _attempt(self, item: Delivery) -> None:
        sub = self.store.notify_subscription(item.subscription)
        if sub is None:
            return  # removed meanwhile
        item.attempt += 1
        status, error = None, None
        try:
            target = parse_url(sub["url"])
            address = check_target(target, bool(sub["internal_ok"]), self.resolver)
            status = self.send(target, address, item.body, {
                "Content-Type": "application/json", "User-Agent": USER_AGENT,
                "X-Gitd-Event": item.event, "X-Gitd-Delivery": item.delivery,
                SIGNATURE_HEADER: sign(sub["secret"], item.body)})
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - any failure is the delivery's, in words
            error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        retry_at = self.clock() + backoff(item.attempt)
        will_retry = error is not None and retry_at - item.first_at <= self.retry_for
        self._record(item, status, error and (error + (" (will retry)" if will_retry
                                                       else " (gave up)")))
        if will_retry:
            item.due, item.seq = retry_at, next(self._seq)
            with self._wake:
                heapq.heappush(self._queue, item)
                self._wake.notify()

    def _record(self, item: Delivery, status: int | None, error: str | None) -> None:
        try:
            self.store.record_notify_delivery(item.subscription, event=item.event,
                                              delivery=item.delivery, attempt=item.attempt,
                                              status=status, error=clip(error, 500) or None,
                                              at=self.clock())
        except Exception:  # noqa: BLE001 - a subscription removed meanwhile, a busy store
            log.warning("cannot record a notification delivery", subscription=item.subscription)
        log.info("notification", subscription=item.subscription, notify_event=item.event,
                 attempt=item.attempt, status=status, error=error)

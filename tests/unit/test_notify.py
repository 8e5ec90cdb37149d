"""Notifications (issue #25): URL and SSRF checks, signatures, the queue
with its retries and backoff on an injected clock, the verbs and commands,
and the events the deployments recorder and the backup scheduler emit."""

import hashlib
import hmac
import json

import pytest

from gitd.core import notify
from gitd.core.errors import Conflict, NotFound, PermissionDenied, UsageError
from gitd.services.schedule import BackupScheduler
from gitd.verbs import Session
from gitd.verbs import notify as verbs
from hooks.deployments import Deployments
from tests.fakes import NotifyRecorder, call

PUBLIC = "203.0.113.9"  # TEST-NET-3 is not global: the resolver fakes below answer 93.184.216.34
GLOBAL = "93.184.216.34"


def resolver_to(*addresses):
    return lambda host, port: list(addresses)


@pytest.fixture
def public_dns(monkeypatch):
    """Every name resolves to a public address (no DNS in unit tests)."""
    monkeypatch.setattr(notify, "resolve", resolver_to(GLOBAL))


# --- URLs and addresses

@pytest.mark.parametrize("url", [
    "ftp://example.com/", "file:///etc/passwd", "gopher://x/", "example.com/hook", "http:///x",
    "http://user:pw@example.com/", "http://example.com:99999/", "http://exa mple.com/",
    "http://example.com/\n", "https://" + "a" * 3000 + ".com/", "",
])
def test_hostile_urls_are_refused_in_words(url):
    with pytest.raises(UsageError):
        notify.parse_url(url)


def test_a_url_keeps_its_path_and_query_and_default_port():
    assert notify.parse_url("https://Hooks.Example.com/a/b?x=1") == \
        notify.Target("https", "hooks.example.com", 443, "/a/b?x=1")
    assert notify.parse_url("http://example.com").port == 80


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "0.0.0.0", "224.0.0.1", "100.64.0.1", "::1", "::", "fe80::1", "fd00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
    "fe80::1%eth0", "255.255.255.255",
    # site-local fec0::/10 (deprecated, still routed on some internal
    # networks): Python's ipaddress calls it global
    "fec0::1", "feff::1", "fec0::a9fe:a9fe",
])
def test_internal_addresses_are_recognised(address):
    assert notify.internal_address(address)


@pytest.mark.parametrize("address", [GLOBAL, "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_are_not_internal(address):
    assert not notify.internal_address(address)


def test_a_deployer_may_not_aim_at_an_internal_address_nor_a_name_resolving_to_one():
    target = notify.parse_url("http://hooks.example.com/x")
    with pytest.raises(PermissionDenied, match="only an admin"):
        notify.check_target(target, False, resolver_to(GLOBAL, "10.0.0.5"))
    assert notify.check_target(target, True, resolver_to("10.0.0.5")) == "10.0.0.5"
    assert notify.check_target(target, False, resolver_to(GLOBAL)) == GLOBAL
    with pytest.raises(UsageError, match="cannot resolve"):
        notify.check_target(target, True, resolver_to())


def test_a_deployer_may_not_aim_at_an_address_of_this_host(monkeypatch):
    """This host's public address passes as global, yet there gitd's own
    ports and what a firewall keeps from the outside answer (and the
    status each gives is shown to the deployer)."""
    monkeypatch.setattr(notify, "this_host", lambda address: address == GLOBAL)
    target = notify.parse_url("http://my-vps.example.com:8080/x")
    with pytest.raises(PermissionDenied, match="only an admin"):
        notify.check_target(target, False, resolver_to(GLOBAL))
    assert notify.check_target(target, True, resolver_to(GLOBAL)) == GLOBAL


def test_this_host_is_told_by_binding_its_address():
    assert notify.this_host("127.0.0.1") and notify.this_host("::1")
    assert not notify.this_host("198.51.100.7") and not notify.this_host(GLOBAL)


def test_events_and_formats_are_checked():
    assert notify.events(None) == notify.events(" , ,") == list(notify.EVENTS)
    assert notify.events("deploy.failed, deploy.started,deploy.failed") == \
        ["deploy.started", "deploy.failed"]
    with pytest.raises(UsageError, match="unknown event"):
        notify.events("deploy.failed,rm -rf")
    assert notify.format_(None) == "json"
    with pytest.raises(UsageError):
        notify.format_("xml")


# --- bodies and signatures

def test_the_signature_is_hmac_sha256_of_the_body_and_verifies_in_constant_time():
    body = b'{"event": "deploy.started"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert notify.sign("s3cret", body) == f"sha256={expected}"
    assert notify.verify("s3cret", body, f"sha256={expected}")
    assert not notify.verify("other", body, f"sha256={expected}")
    assert not notify.verify("s3cret", body + b" ", f"sha256={expected}")


def test_json_and_slack_bodies():
    data = {"error": "build failed", "log_tail": "step 3\nboom", "trigger": "push"}
    sent = json.loads(notify.body("deploy.failed", "hello", data, "json", "d1", 0))
    assert sent == {"event": "deploy.failed", "app": "hello", "delivery": "d1",
                    "time": "1970-01-01T00:00:00Z", "data": data}
    slack = json.loads(notify.body("deploy.failed", "hello", data, "slack", "d1", 0))
    assert list(slack) == ["text"]
    assert "hello failed: build failed" in slack["text"] and "boom" in slack["text"]


def test_a_slack_message_escapes_what_a_deployer_wrote():
    """Slack reads <!channel>, <@U1> and <URL|label> in a message's text: a
    deploy's error or log (the deployer's words) must show them as typed,
    not notify the whole channel or show a link under other words."""
    data = {"error": "<!channel> approve at <https://evil.example/|gitd.example.com> & co",
            "log_tail": "<@U123> <!here>"}
    text = json.loads(notify.body("deploy.failed", "hello", data, "slack", "d1", 0))["text"]
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; approve at &lt;https://evil.example/|gitd.example.com&gt; &amp; co" \
        in text and "&lt;@U123&gt; &lt;!here&gt;" in text


# --- the queue and the worker

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Receiver:
    """Answers the statuses given, in turn; records what it was sent."""

    def __init__(self, *statuses):
        self.statuses = list(statuses)
        self.sent = []

    def __call__(self, target, address, body, headers):
        self.sent.append((target, address, body, headers))
        status = self.statuses.pop(0) if self.statuses else 200
        if isinstance(status, Exception):
            raise status
        return status


def subscribe(store, app="hello", url="http://hooks.example.com/in", events=None,
              internal_ok=False, fmt="json"):
    return store.add_notify_subscription(app, url, events or list(notify.EVENTS), fmt,
                                         "s3cret", "admin", internal_ok)


def notifier(store, receiver, clock, resolver=resolver_to(GLOBAL), **kw):
    return notify.Notifier(store, clock=clock, resolver=resolver, send=receiver, **kw)


def test_a_delivery_is_signed_and_recorded(store):
    sub = subscribe(store)
    clock, receiver = Clock(), Receiver(204)
    n = notifier(store, receiver, clock)
    assert n.emit("hello", "deploy.started", {"trigger": "push"}) == 1
    assert n.run_due(clock.now) == 1
    (target, address, body, headers), = receiver.sent
    assert (target.host, address) == ("hooks.example.com", GLOBAL)
    assert headers["X-Gitd-Signature"] == notify.sign("s3cret", body)
    assert headers["X-Gitd-Event"] == "deploy.started"
    assert json.loads(body)["data"] == {"trigger": "push"}
    (last,) = store.notify_deliveries(sub["id"])
    assert (last["status"], last["error"], last["attempt"]) == (204, None, 1)


def test_failures_are_retried_with_backoff_until_one_succeeds(store):
    sub = subscribe(store)
    clock, receiver = Clock(), Receiver(500, OSError("connection refused"), 200)
    n = notifier(store, receiver, clock)
    n.emit("hello", "deploy.failed", {"error": "x"})
    assert n.run_due(clock.now) == 1
    assert n.run_due(clock.now + 0.9) == 0  # the first retry waits FIRST_BACKOFF
    clock.now += 1
    assert n.run_due(clock.now) == 1
    clock.now += 1.9
    assert n.run_due(clock.now) == 0  # then twice as long
    clock.now += 0.1
    assert n.run_due(clock.now) == 1
    assert n.waiting() == 0
    bodies = {body for _, _, body, _ in receiver.sent}
    assert len(receiver.sent) == 3 and len(bodies) == 1  # the same delivery each time
    results = [(d["attempt"], d["status"], d["error"]) for d in store.notify_deliveries(sub["id"])]
    assert results == [(3, 200, None), (2, None, "OSError: connection refused (will retry)"),
                       (1, 500, "HTTP 500 (will retry)")]


def test_retries_stop_after_the_bounded_time(store):
    sub = subscribe(store)
    clock, receiver = Clock(), Receiver(*[503] * 100)
    n = notifier(store, receiver, clock, retry_for=60)
    n.emit("hello", "deploy.succeeded", {})
    for _ in range(100):
        n.run_due(clock.now)
        clock.now += 1
    assert n.waiting() == 0
    assert len(receiver.sent) == 6  # at 0, 1, 3, 7, 15, 31 s; the next (63 s) is past 60
    assert store.notify_deliveries(sub["id"])[0]["error"] == "HTTP 503 (gave up)"
    assert [notify.backoff(a) for a in (1, 2, 3, 30)] == [1, 2, 4, notify.MAX_BACKOFF]


def test_the_queue_is_bounded_and_a_dropped_delivery_is_recorded(store):
    sub = subscribe(store)
    clock, receiver = Clock(), Receiver()
    n = notifier(store, receiver, clock, max_queue=3)
    queued = [n.emit("hello", "deploy.started", {}) for _ in range(5)]
    assert queued == [1, 1, 1, 0, 0] and n.waiting() == 3
    assert "dropped" in store.notify_deliveries(sub["id"])[0]["error"]


def test_only_matching_events_and_apps_are_delivered_and_global_ones_hear_every_app(store):
    store.create_app("other")
    only_failed = subscribe(store, events=["deploy.failed"])
    everything = subscribe(store, app=None)
    clock, receiver = Clock(), Receiver()
    n = notifier(store, receiver, clock)
    assert n.emit("hello", "deploy.started", {}) == 1
    assert n.emit("other", "deploy.failed", {}) == 1
    assert n.emit("hello", "deploy.failed", {}) == 2
    assert n.emit(["hello", "other"], "backup.failed", {"service": "db"}) == 1
    n.run_due(clock.now)
    assert len(store.notify_deliveries(everything["id"])) == 4
    assert len(store.notify_deliveries(only_failed["id"])) == 1


def test_a_deployer_subscription_is_checked_again_at_delivery_time(store):
    """DNS rebinding: the name resolved to a public address when it was
    added; now it resolves to loopback and nothing is sent."""
    sub = subscribe(store, internal_ok=False)
    clock, receiver = Clock(), Receiver()
    n = notifier(store, receiver, clock, resolver=resolver_to("127.0.0.1"))
    n.emit("hello", "deploy.started", {})
    n.run_due(clock.now)
    assert receiver.sent == []
    assert "only an admin" in store.notify_deliveries(sub["id"])[0]["error"]


def test_a_removed_subscription_gets_nothing_more(store):
    sub = subscribe(store)
    clock, receiver = Clock(), Receiver(500)
    n = notifier(store, receiver, clock)
    n.emit("hello", "deploy.started", {})
    n.run_due(clock.now)
    store.remove_notify_subscription(sub["id"])
    clock.now += 10
    n.run_due(clock.now)
    assert len(receiver.sent) == 1 and store.notify_deliveries(sub["id"]) == []


def test_emit_without_a_notifier_does_nothing_and_never_raises(store):
    notify.emit("hello", "deploy.started", x=1)

    class Broken:
        def emit(self, app, event, data):
            raise RuntimeError("store gone")

    with notify.installed(Broken()):
        notify.emit("hello", "deploy.started")


def test_the_worker_thread_delivers_and_stops(store):
    subscribe(store)
    receiver = Receiver()
    n = notify.Notifier(store, resolver=resolver_to(GLOBAL), send=receiver)
    n.start()
    try:
        n.emit("hello", "deploy.started", {})
        for _ in range(100):
            if receiver.sent:
                break
            import time
            time.sleep(0.05)
    finally:
        n.stop()
    assert len(receiver.sent) == 1


def test_a_real_post_follows_no_redirect_and_goes_to_the_pinned_address():
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.headers["Host"], self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        target = notify.parse_url(f"http://hooks.invalid:{port}/in")
        status = notify.post(target, "127.0.0.1", b"{}", {"Content-Type": "application/json"})
    finally:
        server.shutdown()
    assert status == 302
    assert seen == [(f"hooks.invalid:{port}", b"{}")]


# --- the verbs and the commands

def session(fake, key="admin"):
    return Session(fake, fake.store.get_key(key))


def test_add_shows_the_secret_once_and_list_shows_results_without_it(fake, public_dns):
    made = verbs.add(session(fake), "hello", "https://hooks.example.com/x", "deploy.failed", "slack")
    assert len(made["secret"]) == 64 and made["events"] == ["deploy.failed"]
    fake.store.record_notify_delivery(made["id"], event="deploy.failed", delivery="d", attempt=1,
                                      status=200, error=None, at=0)
    listed = verbs.list_(session(fake), "hello")
    (sub,) = listed["subscriptions"]
    assert made["secret"] not in json.dumps(listed)
    assert sub["deliveries"][0]["status"] == 200 and sub["format"] == "slack"
    assert verbs.last_results(fake.store, "hello")[0]["last"]["status"] == 200


def test_a_deployer_is_refused_an_internal_url_in_words_and_nothing_is_stored(fake):
    fake.store.grant("hello", "dev")
    for url in ("http://127.0.0.1:8080/", "http://10.0.0.1/", "http://[::1]/",
                "http://169.254.169.254/latest/meta-data", "http://localhost/"):
        with pytest.raises(PermissionDenied, match="internal address: only an admin"):
            call(fake, "notify:add", "hello", url, key="dev")
    assert fake.store.notify_subscriptions("hello") == []
    with pytest.raises(PermissionDenied, match="only an admin may send notifications there"):
        verbs.add(session(fake, "dev"), "hello", "http://127.0.0.1/", None, None)
    assert verbs.add(session(fake), "hello", "http://127.0.0.1:9/", None, None)["id"]


def test_a_deployer_may_not_touch_other_apps_nor_global_ones(fake, public_dns):
    dev = session(fake, "dev")
    with pytest.raises(PermissionDenied):
        verbs.add(dev, "hello", "https://hooks.example.com/", None, None)
    with pytest.raises(PermissionDenied):
        verbs.add(dev, None, "https://hooks.example.com/", None, None)
    fake.store.grant("hello", "dev")
    global_one = verbs.add(session(fake), None, "https://hooks.example.com/", None, None)
    with pytest.raises(NotFound):
        verbs.remove(dev, "hello", global_one["id"])
    with pytest.raises(PermissionDenied):
        verbs.list_(dev, None)
    assert fake.store.notify_subscription(global_one["id"]) is not None


def test_subscriptions_are_bounded_per_app(fake, public_dns):
    for _ in range(verbs.MAX_SUBSCRIPTIONS):
        verbs.add(session(fake), "hello", "https://hooks.example.com/", None, None)
    with pytest.raises(Conflict):
        verbs.add(session(fake), "hello", "https://hooks.example.com/", None, None)


@pytest.mark.parametrize("bad", ["0", "-1", "x", "99999999999999999999999", "1e3"])
def test_remove_refuses_odd_ids(fake, bad):
    subscribe(fake.store)
    with pytest.raises(UsageError):
        call(fake, "notify:remove", "hello", bad)
    assert len(fake.store.notify_subscriptions("hello")) == 1


def test_the_commands_end_to_end_over_the_store(fake, public_dns):
    status, out, _ = call(fake, "notify:add", "hello", "https://hooks.example.com/x",
                          "--events", "deploy.started,deploy.failed")
    assert status == 0 and "Secret (shown only now)" in out
    status, out, _ = call(fake, "notify", "hello")
    assert "hooks.example.com/x" in out and "deploy.started,deploy.failed" in out
    assert "none yet" in out
    status, out, _ = call(fake, "notify", "hello", "--json")
    (sub,) = json.loads(out)["subscriptions"]
    with pytest.raises(UsageError, match="name an APP or --global"):
        call(fake, "notify", "hello", "--global")
    assert call(fake, "notify:add", "--global", "https://hooks.example.com/g")[0] == 0
    assert "hooks.example.com/g" in call(fake, "notify", "--global")[1]
    assert call(fake, "notify:remove", "hello", str(sub["id"]))[0] == 0
    assert fake.store.notify_subscriptions("hello") == []


def test_destroying_the_app_takes_its_subscriptions(store):
    sub = subscribe(store)
    store.record_notify_delivery(sub["id"], event="x", delivery="d", attempt=1, status=200,
                                 error=None, at=0)
    store.delete_app("hello")
    assert store.notify_subscription(sub["id"]) is None and store.notify_deliveries(sub["id"]) == []


# --- what emits events

def test_a_deploy_emits_started_then_succeeded_and_a_rollback_says_so(store):
    deployments = Deployments(store, 10000)
    with notify.installed(NotifyRecorder()) as heard:
        with deployments.record("hello", "push", None, "building", by="admin", commit="abc"):
            pass
        with deployments.record("hello", "rollback", None, "deploying") as run:
            run.set(release=1)
    assert [(a, e) for a, e, _ in heard.events] == [
        ("hello", "deploy.started"), ("hello", "deploy.succeeded"),
        ("hello", "deploy.started"), ("hello", "deploy.succeeded"), ("hello", "rollback")]
    assert heard.events[1][2]["commit"] == "abc" and heard.events[1][2]["trigger"] == "push"
    assert heard.events[4][2]["release"] == 1


def test_a_failed_deploy_emits_its_reason_and_log_tail(store):
    from gitd.core.errors import DeployError

    deployments = Deployments(store, 10000)
    with notify.installed(NotifyRecorder()) as heard:
        with pytest.raises(DeployError):
            with deployments.record("hello", "push", None, "building") as run:
                for i in range(50):
                    run(f"line {i}")
                raise DeployError("the health check failed")
    app, event, data = heard.events[-1]
    assert event == "deploy.failed" and data["error"] == "the health check failed"
    assert "line 49" in data["log_tail"] and "line 10" not in data["log_tail"]


def test_a_failed_scheduled_backup_emits_backup_failed_to_its_linked_apps(fake):
    fake.store.create_service(name="db", kind="postgres", version="15", image="x",
                              password="p", volume="v", schedule="@daily")
    fake.store.add_link("db", "hello", "DATABASE_URL")

    class Services:
        def backup_to_file(self, svc):
            raise OSError("disk full")

    fake.services = Services()
    with notify.installed(NotifyRecorder()) as heard:
        BackupScheduler(fake).backup(fake.store.get_service("db"))
    ((apps, event, data),) = heard.events
    assert (apps, event, data["service"], data["error"]) == (["hello"], "backup.failed", "db",
                                                             "disk full")


def test_expiring_certificates_and_acme_errors_are_told_once_each(store, monkeypatch):
    from gitd.core import certs
    from gitd.core.config import Settings
    from hooks.certwatch import CertWatch

    def row(domain, days_left, acme_error=None, at=None):
        return {"domain": domain, "source": "acme", "days_left": days_left,
                "expires": "2027-01-01T00:00:00Z", "expired": days_left is not None and days_left <= 0,
                "acme_error": acme_error, "acme_error_at": at}

    status = {"hello.example.com": row("hello.example.com", 5.0),
              "ok.example.com": row("ok.example.com", 60.0),
              "new.example.com": row("new.example.com", None, "rate limited", "2026-12-06T10:00:00Z")}
    store.add_domains("hello", ["ok.example.com", "new.example.com"])
    monkeypatch.setattr(certs, "domain_status",
                        lambda settings, app, hosts: [status[h] for h in hosts])
    watch = CertWatch(Settings(https_port=8443), store)
    with notify.installed(NotifyRecorder()) as heard:
        watch.look()
        status["hello.example.com"]["days_left"] = 4.9  # the same expiry, a look later
        watch.look()
    assert sorted((e, d["domain"]) for _, e, d in heard.events) == [
        ("acme.error", "new.example.com"), ("certificate.expiring", "hello.example.com")]
    assert all(app == "hello" for app, _, _ in heard.events)
    with notify.installed(NotifyRecorder()) as heard:
        status["new.example.com"]["acme_error_at"] = "2026-12-06T11:00:00Z"  # failed again
        watch.look()
    assert [(e, d["error"]) for _, e, d in heard.events] == [("acme.error", "rate limited")]
    assert CertWatch(Settings(), store).look() == []


def test_one_failing_url_cannot_fill_the_queue_for_the_others(store, monkeypatch):
    monkeypatch.setattr(notify, "MAX_WAITING_PER_URL", 3)
    noisy = subscribe(store, events=["deploy.started"])
    quiet = subscribe(store, events=["deploy.failed"])
    n = notifier(store, Receiver(), Clock(), max_queue=10)
    assert [n.emit("hello", "deploy.started", {}) for _ in range(5)] == [1, 1, 1, 0, 0]
    assert n.emit("hello", "deploy.failed", {}) == 1
    assert "at most 3 a URL" in store.notify_deliveries(noisy["id"])[0]["error"]
    assert store.notify_deliveries(quiet["id"]) == []


def test_a_target_answering_a_byte_at_a_time_is_cut_off_at_the_deadline():
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip():
        conn, _ = listener.accept()
        conn.recv(65536)
        while not stop.is_set():
            try:
                conn.sendall(b"H")
            except OSError:
                return
            time.sleep(0.2)
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    target = notify.parse_url(f"http://hooks.invalid:{listener.getsockname()[1]}/")
    started = time.monotonic()
    try:
        with pytest.raises(Exception):
            notify.post(target, "127.0.0.1", b"{}", {}, timeout=1.0, deadline=1.5)
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 5


def test_every_id_the_api_document_allows_is_read_as_a_number(fake):
    from gitd.api.notify import ID_PARAM

    highest = ID_PARAM["schema"]["maximum"]
    with pytest.raises(NotFound):  # not a 400: schemathesis sends the document's maximum
        verbs.remove(session(fake), "hello", str(highest))


def test_one_apps_subscriptions_cannot_fill_the_queue_for_the_other_apps(store):
    """A deployer's app with its most subscriptions, all to targets that
    never answer, and events enough: the other apps' deliveries still queue."""
    from gitd.verbs.notify import MAX_SUBSCRIPTIONS

    store.create_app("hog")
    for n in range(MAX_SUBSCRIPTIONS):
        subscribe(store, app="hog", url=f"http://slow.example.com/{n}")
    quiet = subscribe(store, app="hello")
    n = notifier(store, Receiver(), Clock())
    for _ in range(notify.MAX_QUEUE):
        if n.emit("hog", "deploy.started", {}) == 0:
            break
    assert n.waiting() < notify.MAX_QUEUE
    assert n.emit("hello", "deploy.started", {}) == 1
    assert store.notify_deliveries(quiet["id"]) == []  # nothing dropped


def test_one_apps_slow_deliveries_do_not_hold_back_the_other_apps(store):
    """One worker sends every delivery, each attempt up to DEADLINE: those
    due are taken an app at a time, so another app's delivery waits for one
    attempt of a noisy app's, not for all of them."""
    store.create_app("hog")
    hogs = [subscribe(store, app="hog", url=f"http://slow.example.com/{n}") for n in range(3)]
    subscribe(store, app="hello", url="http://hello.example.com/in")
    clock, receiver = Clock(), Receiver()
    n = notifier(store, receiver, clock)
    assert n.emit("hog", "deploy.started", {}) == len(hogs)
    assert n.emit("hog", "deploy.succeeded", {}) == len(hogs)
    assert n.emit("hello", "deploy.started", {}) == 1
    assert n.run_due(clock.now) == 2 * len(hogs) + 1
    hosts = [target.host for target, *_ in receiver.sent]
    assert hosts.index("hello.example.com") == 1
    sent_to_hog = [json.loads(body)["event"] for target, _, body, _ in receiver.sent
                   if target.host == "slow.example.com"]
    assert sent_to_hog == ["deploy.started"] * 3 + ["deploy.succeeded"] * 3  # in order


def test_a_delivery_due_while_the_worker_sends_others_gets_its_turn_too(store):
    store.create_app("hog")
    for n in range(3):
        subscribe(store, app="hog", url=f"http://slow.example.com/{n}")
    subscribe(store, app="hello", url="http://hello.example.com/in")
    clock, receiver = Clock(), Receiver()

    def slow_send(target, address, body, headers):
        clock.now += notify.DEADLINE  # a target that never answers
        if len(receiver.sent) == 0:
            n.emit("hello", "deploy.started", {})  # comes meanwhile
        return receiver(target, address, body, headers)

    n = notify.Notifier(store, clock=clock, resolver=resolver_to(GLOBAL), send=slow_send)
    n.emit("hog", "deploy.started", {})
    n.emit("hog", "deploy.succeeded", {})
    n.run_due(clock.now)
    hosts = [target.host for target, *_ in receiver.sent]
    assert len(hosts) == 7 and hosts.index("hello.example.com") == 1

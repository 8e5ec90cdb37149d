"""A custom certificate wins only once Traefik's ACME certificates for its
hosts leave acme.json (issue #20 item 4): they are set aside while Traefik
is stopped and put back by certs:remove. And the managed child restarts
with a step in between, its watcher not starting a second one."""

import json
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

from cryptography import x509

from gitd.child import ManagedChild
from gitd.core import certs
from gitd.core.config import Settings
from tests.fakes import FakeGitd, call, entry, leaf, settings_with


def held(settings) -> list[str]:
    data = json.loads(settings.acme_storage.read_text())
    return [e["domain"]["main"] for e in data["gitd"]["Certificates"]]


def test_set_aside_moves_only_the_certificates_of_those_hosts(tmp_path):
    shared = entry("both.x.test", sans=["else.y.test"])  # names a host the custom one lacks
    settings = settings_with(tmp_path, [entry("shop.x.test"), entry("www.x.test"), shared,
                                        entry("*.x.test"), entry("other.x.test")])
    hosts = {"shop.x.test", "www.x.test", "both.x.test"}
    assert certs.set_aside_acme(settings, "shop", hosts) == 2
    assert held(settings) == ["both.x.test", "*.x.test", "other.x.test"]
    assert settings.acme_storage.stat().st_mode & 0o777 == 0o600
    assert json.loads(settings.acme_storage.read_text())["gitd"]["Account"] == {"Email": "ops@x.test"}
    assert certs.set_aside_acme(settings, "shop", hosts) == 0  # nothing left to move
    assert certs.acme_entries_for(settings, hosts) == {}

    kept = certs.read_set_aside(settings, "shop")
    assert [e["domain"]["main"] for e in kept["gitd"]] == ["shop.x.test", "www.x.test"]
    assert certs.put_back_acme(settings, kept) == 2
    assert held(settings) == ["both.x.test", "*.x.test", "other.x.test", "shop.x.test", "www.x.test"]
    assert certs.put_back_acme(settings, kept) == 0  # not twice


def test_expired_or_newer_certificates_are_not_put_back(tmp_path):
    settings = settings_with(tmp_path, [entry("old.x.test", days=-1), entry("new.x.test")])
    assert certs.set_aside_acme(settings, "app", {"old.x.test", "new.x.test"}) == 2
    # meanwhile Traefik ordered a new one for new.x.test
    data = json.loads(settings.acme_storage.read_text())
    data["gitd"]["Certificates"].append(entry("new.x.test"))
    settings.acme_storage.write_text(json.dumps(data))
    kept = certs.read_set_aside(settings, "app")
    assert [e["domain"]["main"] for e in kept["gitd"]] == ["new.x.test"]
    assert certs.put_back_acme(settings, kept) == 0
    assert held(settings) == ["new.x.test"]


def test_remove_custom_forgets_what_was_set_aside(tmp_path):
    settings = settings_with(tmp_path, [entry("a.x.test")])
    settings.custom_certs_dir.mkdir(parents=True)
    certs.set_aside_acme(settings, "app", {"a.x.test"})
    assert certs.set_aside_path(settings, "app").exists()
    certs.remove_custom(settings, "app")
    assert not certs.set_aside_path(settings, "app").exists()


def test_a_hostile_or_missing_acme_json_changes_nothing(tmp_path):
    settings = Settings(data_dir=tmp_path, https_port=8443)
    assert certs.set_aside_acme(settings, "app", {"a.x.test"}) == 0
    settings.tls_dir.mkdir(parents=True)
    for text in ("", "[]", "not json", '{"gitd": null}', '{"gitd": {"Certificates": "x"}}',
                 '{"gitd": {"Certificates": [1, {"domain": 5}, {"domain": {"main": null}}]}}'):
        settings.acme_storage.write_text(text)
        assert certs.set_aside_acme(settings, "app", {"a.x.test"}) == 0
        assert settings.acme_storage.read_text() == text
    assert certs.put_back_acme(settings, {"elsewhere": [entry("a.x.test")]}) == 0


class Sleeper(ManagedChild):
    name = "sleeper"

    def find_binary(self):
        return sys.executable

    def prepare(self):
        return False

    def argv(self, binary):
        return [binary, "-c", "import time; time.sleep(60)", str(self.config_path)]

    def ready(self, timeout):
        return True


def test_restart_runs_the_step_while_stopped_and_watches_the_new_child(tmp_path):
    child = Sleeper(tmp_path / "conf", tmp_path / "log", tmp_path / "pid")
    child.start()
    try:
        first = child._proc
        seen = []
        child.restart(lambda: seen.append(first.poll()))
        assert seen and seen[0] is not None  # the old one had ended
        second = child._proc
        assert second is not first and second.poll() is None
        time.sleep(1.5)  # the watcher saw the old one end: it starts no other
        assert child._proc is second
        second.kill()  # a real death is still restarted
        deadline = time.monotonic() + 10
        while child._proc is second and time.monotonic() < deadline:
            time.sleep(0.1)
        assert child._proc is not second and child._proc.poll() is None
    finally:
        child.stop()
    assert child._proc.poll() is not None


# `certs` says whether a handshake gets the certificate it names

class TLSServer:
    """Serves one certificate on 127.0.0.1 to every handshake."""

    def __init__(self, tmp_path, cert_pem: bytes, key_pem: bytes):
        (tmp_path / "s.crt").write_bytes(cert_pem)
        (tmp_path / "s.key").write_bytes(key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def stop(self):
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.sock.close()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass


def certs_rows(store, settings) -> dict:
    _, out, _ = call(FakeGitd(store, settings), "certs", "hello", "--json")
    return {row["domain"]: row for row in json.loads(out)}


def test_certs_says_whether_traefik_serves_the_certificate(store, tmp_path):
    custom, custom_key = leaf(["hello.example.com"])
    other, other_key = leaf(["hello.example.com"])
    (tmp_path / "a").mkdir()
    wrong = TLSServer(tmp_path / "a", other, other_key)
    settings = Settings(data_dir=tmp_path, https_port=wrong.port, http_host="127.0.0.1")
    store.add_domains("hello", ["new.example.com"])  # no certificate: nothing to compare
    certs.install_custom(settings, "hello", certs.Bundle(custom, custom_key, certs.cert_info(
        x509.load_pem_x509_certificate(custom))))

    rows = certs_rows(store, settings)
    assert (rows["hello.example.com"]["source"], rows["hello.example.com"]["served"]) == ("custom", False)
    assert rows["new.example.com"]["served"] is None
    _, out, _ = call(FakeGitd(store, settings), "certs", "hello")
    assert "hello.example.com: Traefik serves another certificate (issuer hello.example.com" in out

    (tmp_path / "b").mkdir()
    right = TLSServer(tmp_path / "b", custom, custom_key)
    settings = Settings(data_dir=tmp_path, https_port=right.port, http_host="127.0.0.1")
    assert certs_rows(store, settings)["hello.example.com"]["served"] is True

    right.stop()
    assert certs_rows(store, settings)["hello.example.com"]["served"] is None
    _, out, _ = call(FakeGitd(store, settings), "certs", "hello")
    assert f"Traefik's HTTPS port ({right.port}) did not answer" in out


class RecordingChild:
    """A managed Traefik that only records its restarts."""

    def __init__(self, settings):
        self.settings, self.restarts = settings, []

    def restart(self, while_stopped):
        while_stopped()
        self.restarts.append(held(self.settings))


def test_certs_add_and_remove_set_aside_and_put_back_through_a_restart(store, tmp_path, monkeypatch):
    monkeypatch.setattr("hooks.tls.wait_served", lambda settings, host, chain: True)
    store.add_domains("hello", ["www.example.com"])
    settings = settings_with(tmp_path, [entry("hello.example.com"), entry("www.example.com")])
    gitd = FakeGitd(store, settings)
    gitd.traefik_child = RecordingChild(settings)
    custom, key = leaf(["hello.example.com"])
    _, out, _ = call(gitd, "certs:add", "hello", stdin=custom + key)
    assert "lets go of its ACME certificate for hello.example.com" in out
    assert "Traefik serves it for hello.example.com" in out
    assert gitd.traefik_child.restarts == [["www.example.com"]]  # the other host keeps its own

    custom2, key2 = leaf(["hello.example.com"])  # a renewal: nothing left to set aside
    call(gitd, "certs:add", "hello", stdin=custom2 + key2)
    assert len(gitd.traefik_child.restarts) == 1

    _, out, _ = call(gitd, "certs:remove", "hello")
    assert "serve its ACME certificate again" in out
    assert gitd.traefik_child.restarts[-1] == ["www.example.com", "hello.example.com"]
    assert not certs.set_aside_path(settings, "hello").exists()


def test_with_an_external_traefik_certs_add_says_what_to_do(store, tmp_path, monkeypatch):
    monkeypatch.setattr("hooks.tls.wait_served", lambda settings, host, chain: True)
    settings = settings_with(tmp_path, [entry("hello.example.com")])
    before = settings.acme_storage.read_text()
    gitd = FakeGitd(store, settings)
    gitd.traefik_child = None
    custom, key = leaf(["hello.example.com"])
    _, out, _ = call(gitd, "certs:add", "hello", stdin=custom + key)
    assert "Traefik also holds an ACME certificate for hello.example.com and may serve it" in out
    assert settings.acme_storage.read_text() == before


def test_a_custom_certificate_covering_fewer_hosts_gives_their_acme_ones_back(store, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr("hooks.tls.wait_served", lambda settings, host, chain: True)
    store.add_domains("hello", ["www.example.com"])
    settings = settings_with(tmp_path, [entry("hello.example.com"), entry("www.example.com")])
    gitd = FakeGitd(store, settings)
    gitd.traefik_child = RecordingChild(settings)
    both, key = leaf(["hello.example.com", "www.example.com"])
    call(gitd, "certs:add", "hello", stdin=both + key)
    assert gitd.traefik_child.restarts == [[]]
    one, key = leaf(["www.example.com"])
    _, out, _ = call(gitd, "certs:add", "hello", stdin=one + key)
    assert gitd.traefik_child.restarts[-1] == ["hello.example.com"]
    assert [e["domain"]["main"] for e in certs.read_set_aside(settings, "hello")["gitd"]] == \
        ["www.example.com"]


def test_a_new_managed_traefik_starts_without_acme_certificates_custom_ones_replace(tmp_path):
    """Also those certs:add left with an external Traefik, or made before this fix."""
    from gitd.traefik import ManagedTraefik

    settings = settings_with(tmp_path, [entry("a.x.test"), entry("b.x.test")])
    traefik = ManagedTraefik(settings, lambda: {"app": frozenset({"a.x.test"})})
    traefik.before_spawn()
    assert held(settings) == ["b.x.test"]
    assert [e["domain"]["main"] for e in certs.read_set_aside(settings, "app")["gitd"]] == ["a.x.test"]
    ManagedTraefik(settings).before_spawn()  # nothing to ask: nothing changes
    assert held(settings) == ["b.x.test"]


def test_before_spawn_runs_for_a_new_child_not_for_an_adopted_one(tmp_path):
    class Counting(Sleeper):
        spawned_after = []

        def before_spawn(self):
            self.spawned_after.append(self._proc)

    child = Counting(tmp_path / "conf", tmp_path / "log", tmp_path / "pid")
    child.start()
    try:
        assert child.spawned_after == [None]
        # a loaded machine may not have exec'd the child yet: until then its
        # command line is not the child's, and nothing would be adopted
        cmdline = Path(f"/proc/{child._proc.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"conf" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        adopting = Counting(tmp_path / "conf", tmp_path / "log", tmp_path / "pid")
        adopting.prepare = lambda: True  # same config: the running one is kept
        adopting.start()
        assert child.spawned_after == [None] and adopting._proc.pid == child._proc.pid
        adopting._stopping.set()  # leave the child to its owner
    finally:
        child.stop()

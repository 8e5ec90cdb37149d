"""gitd.verbs.certs called directly: the data returned, access, and bad
bundles refused with nothing changed."""

import pytest

from gitd.core import certs as certificates
from gitd.core.config import Settings
from gitd.core.errors import GitdError, PermissionDenied
from gitd.verbs import Session, certs
from tests.fakes import entry, leaf, settings_with
from tests.fakes import FakeGitd


@pytest.fixture
def daemon(store, tmp_path, monkeypatch):
    monkeypatch.setattr("hooks.tls.wait_served", lambda settings, host, chain: host == "hello.example.com")
    monkeypatch.setattr("hooks.tls.served_certificate", lambda settings, host: None)
    gitd = FakeGitd(store, settings_with(tmp_path, [entry("other.example.com")]))
    gitd.traefik_child = None
    return gitd


def session(daemon, key="admin", lines=None):
    return Session(daemon, daemon.store.get_key(key), sink=None if lines is None else lines.append)


def test_add_show_remove_return_data(daemon):
    daemon.store.add_domains("hello", ["www.example.com"])
    pem, key = leaf(["hello.example.com", "www.example.com"])
    lines = []
    added = certs.add(session(daemon, lines=lines), "hello", (pem + key).decode())
    assert added["hosts"] == ["hello.example.com", "www.example.com"]
    assert added["served"] == {"hello.example.com": True, "www.example.com": False}
    assert added["issuer"] == "hello.example.com" and len(added["expires"]) == 10
    assert lines[0].startswith("-----> Installed a certificate for hello.example.com")
    rows = {r["domain"]: r for r in certs.show(session(daemon), "hello")}
    assert rows["hello.example.com"]["source"] == "custom" and rows["hello.example.com"]["served"] is None
    assert certs.remove(session(daemon), "hello") == {"app": "hello", "removed": True}
    assert certificates.read_custom(daemon.settings, "hello") is None
    with pytest.raises(GitdError, match="has no custom certificate"):
        certs.remove(session(daemon), "hello")


def test_a_deployer_sees_granted_apps_only_and_changes_no_certificate(daemon):
    pem, key = leaf(["hello.example.com"])
    dev = session(daemon, "dev")
    with pytest.raises(PermissionDenied):
        certs.show(dev, "hello")
    daemon.store.grant("hello", "dev")
    assert [r["domain"] for r in certs.show(dev, "hello")] == ["hello.example.com"]
    with pytest.raises(PermissionDenied):
        certs.add(dev, "hello", (pem + key).decode())
    with pytest.raises(PermissionDenied):
        certs.remove(dev, "hello")
    assert certificates.read_custom(daemon.settings, "hello") is None


def test_bad_bundles_change_nothing(daemon, tmp_path):
    pem, key = leaf(["hello.example.com"])
    certs.add(session(daemon), "hello", (pem + key).decode())
    saved = certificates.read_custom(daemon.settings, "hello")
    foreign, foreign_key = leaf(["elsewhere.example.com"])
    _, other_key = leaf(["hello.example.com"])
    for bad in ("", "not a pem", (foreign + foreign_key).decode(), (pem + other_key).decode(),
                pem.decode(), "-----BEGIN CERTIFICATE-----\n" + "A" * 5000):
        with pytest.raises(GitdError):
            certs.add(session(daemon), "hello", bad)
        assert certificates.read_custom(daemon.settings, "hello") == saved
    off = FakeGitd(daemon.store, Settings(data_dir=tmp_path / "off"))
    off.traefik_child = None
    with pytest.raises(GitdError, match="HTTPS is off"):
        certs.add(session(off), "hello", (pem + key).decode())


def test_https_redirect_reads_sets_and_refuses_odd_states(daemon, tmp_path):
    from gitd.verbs import https
    s = session(daemon)
    assert https.redirect(s, "hello") == {"app": "hello", "redirect": "on"}
    assert https.redirect(s, "hello", "off") == {"app": "hello", "redirect": "off"}
    for bad in ("On", "yes", "", "off\n"):
        with pytest.raises(GitdError, match="must be one of on, off"):
            https.redirect(s, "hello", bad)
    daemon.store.grant("hello", "dev")
    for state in (None, "on"):
        with pytest.raises(PermissionDenied):
            https.redirect(session(daemon, "dev"), "hello", state)
    off = FakeGitd(daemon.store, Settings(data_dir=tmp_path / "off"))
    with pytest.raises(GitdError, match="HTTPS is off"):
        https.redirect(session(off), "hello", "on")
    assert https.redirect(s, "hello")["redirect"] == "off"

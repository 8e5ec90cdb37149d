"""HTTPS as data: certificate checks, routes and labels, the file provider's
config, Traefik's static config, acme.json and Traefik's log read back."""

import base64
import json

import pytest

from hooks import tls

from gitd.core import certs
from gitd.core.config import Settings, load_settings
from gitd.core.errors import GitdError, UsageError
from gitd.core.store import Store
from gitd.traefik import render_static_config, traefik_environment
from hooks import router
from tests.e2e.tls_helpers import MiniCA, other_key_pem


@pytest.fixture(scope="module")
def ca():
    return MiniCA()


def test_names_cover_hosts_like_browsers():
    assert certs.name_covers("a.example.com", "A.example.com")
    assert certs.name_covers("*.example.com", "a.example.com")
    assert not certs.name_covers("*.example.com", "example.com")
    assert not certs.name_covers("*.example.com", "a.b.example.com")
    assert not certs.name_covers("a.example.com", "b.example.com")


def test_a_good_bundle_is_accepted(ca):
    bundle = certs.check_bundle(ca.bundle(["www.example.com"]), ["www.example.com", "x.test"])
    assert bundle.info.names == ["www.example.com"]
    assert bundle.info.issuer == "gitd test CA"
    assert bundle.chain_pem.count(b"BEGIN CERTIFICATE") == 2
    assert b"PRIVATE KEY" in bundle.key_pem and b"PRIVATE KEY" not in bundle.chain_pem


@pytest.mark.parametrize("make, words", [
    (lambda ca: "", "no certificate in the bundle"),
    (lambda ca: ca.leaf(["www.example.com"])[0], "no private key"),
    (lambda ca: ca.leaf(["www.example.com"])[0] + other_key_pem(), "does not match"),
    (lambda ca: ca.bundle(["www.example.com"]) + other_key_pem(), "2 private keys"),
    (lambda ca: ca.bundle(["www.example.com"], days=1, start_days=-2), "expired on"),
    (lambda ca: ca.bundle(["www.example.com"], start_days=2), "not valid before"),
    (lambda ca: ca.bundle(["other.example.com"]), "covers none of the app's domains"),
    (lambda ca: ca.bundle(["*.example.com"]).replace("MII", "MIX", 1), "does not parse"),
    (lambda ca: ca.pem + ca.bundle(["www.example.com"]), "does not match"),
    (lambda ca: "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
     + ca.leaf(["www.example.com"])[0], "encrypted"),
])
def test_bad_bundles_are_refused_in_words(ca, make, words):
    with pytest.raises(UsageError, match=words):
        certs.check_bundle(make(ca), ["www.example.com"])


def test_a_chain_out_of_order_is_refused(ca):
    cert, key = ca.leaf(["www.example.com"])
    stranger = MiniCA("another CA")
    with pytest.raises(UsageError, match="give the chain in order"):
        certs.check_bundle(cert + stranger.pem + key, ["www.example.com"])


def test_custom_certificate_stored_private_and_removed(tmp_path, ca):
    settings = Settings(data_dir=tmp_path)
    certs.install_custom(settings, "web", certs.check_bundle(ca.bundle(["w.test"]), ["w.test"]))
    for path in certs.custom_paths(settings, "web"):
        assert path.stat().st_mode & 0o777 == 0o600
    assert settings.custom_certs_dir.stat().st_mode & 0o777 == 0o700
    assert certs.custom_cert(settings, "web").names == ["w.test"]
    assert certs.remove_custom(settings, "web")
    assert certs.custom_cert(settings, "web") is None
    assert not certs.remove_custom(settings, "web")


def test_routes_http_only_without_tls():
    assert router.routes("web", 3, ["a.test"]) == [router.Route("web-s3", "web", ("a.test",))]
    assert router.labels("web", 3, [], 5000, tls=router.TLSPlan()) == {"traefik.enable": "false"}


def test_routes_with_acme_and_a_custom_certificate():
    plan = router.TLSPlan(resolver="gitd", custom_hosts=frozenset({"b.test"}))
    routes = router.routes("web", 3, ["a.test", "b.test", "c.test"], tls=plan)
    assert [(r.router, r.entrypoint, r.hosts, r.resolver) for r in routes] == [
        ("web-s3", "web", ("a.test", "b.test", "c.test"), ""),
        ("web-s3-tls", "websecure", ("a.test", "c.test"), "gitd"),
        ("web-s3-tlsc", "websecure", ("b.test",), ""),
    ]
    labels = router.labels("web", 3, ["a.test", "b.test", "c.test"], 5000, tls=plan)
    assert labels["traefik.http.routers.web-s3-tls.tls.certresolver"] == "gitd"
    # one certificate per host: a failing domain holds up no other
    assert labels["traefik.http.routers.web-s3-tls.tls.domains[1].main"] == "c.test"
    assert labels["traefik.http.routers.web-s3-tlsc.tls"] == "true"
    assert "traefik.http.routers.web-s3-tlsc.tls.certresolver" not in labels
    assert {labels[f"traefik.http.routers.{n}.service"] for n in ("web-s3", "web-s3-tls", "web-s3-tlsc")} \
        == {"web-s3"}
    assert labels["traefik.http.routers.web-s3-tls.priority"] == "1003"


def test_dns_challenge_covers_the_apps_domain_with_one_wildcard():
    plan = router.TLSPlan(resolver="gitd", wildcard_domain="apps.example.com")
    hosts = ["web.apps.example.com", "www.shop.test", "a.b.apps.example.com"]
    labels = router.labels("web", 1, hosts, 5000, tls=plan)
    domains = [v for k, v in labels.items() if ".tls.domains[" in k]
    assert domains == ["*.apps.example.com", "www.shop.test", "a.b.apps.example.com"]
    settings = Settings(https_port=443, acme_email="o@e.com", acme_challenge="dns",
                        acme_dns_provider="cloudflare", domain="apps.example.com")
    assert tls.tls_plan(settings, "web", []).wildcard_domain == "apps.example.com"
    assert tls.tls_plan(Settings(https_port=443, acme_email="o@e.com"), "web", []).wildcard_domain == ""


def test_redirect_config():
    assert router.redirect_config("web", [], 443) == {}
    config = router.redirect_config("web", ["b.test", "a.test"], 8443)
    r = config["routers"]["gitd-redirect-web"]
    assert r["rule"] == "Host(`a.test`) || Host(`b.test`)"
    assert r["entryPoints"] == ["web"] and r["service"] == "noop@internal"
    assert r["priority"] > 1000 + 10**6
    assert config["middlewares"][r["middlewares"][0]]["redirectScheme"] == {
        "scheme": "https", "port": "8443", "permanent": False}


def _acme_json(path, ca, names):
    cert, key = ca.leaf(names)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"gitd": {"Account": {}, "Certificates": [{
        "domain": {"main": names[0]}, "certificate": base64.b64encode(cert.encode()).decode(),
        "key": base64.b64encode(key.encode()).decode(), "Store": "default"}]}}))


def test_status_redirects_and_dynamic_config(tmp_path, ca):
    settings = Settings(data_dir=tmp_path, https_port=8443, acme_email="ops@example.com")
    store = Store(tmp_path / "gitd.db")
    store.create_app("web")
    store.add_domains("web", ["a.test", "b.test", "c.test"])
    _acme_json(settings.acme_storage, ca, ["a.test"])
    certs.install_custom(settings, "web", certs.check_bundle(ca.bundle(["b.test"]), ["b.test"]))
    settings.traefik_dir.mkdir()
    settings.traefik_log.write_text(json.dumps({
        "level": "error", "time": "2030-01-01T00:00:00Z", "providerName": "gitd.acme",
        "domains": ["c.test"], "error": "unable to generate a certificate for the domains [c.test]: "
        "[c.test: invalid authorization: acme: error: 403 :: urn:ietf:params:acme:error:unauthorized "
        ":: Invalid response from http://c.test/.well-known/acme-challenge/x: 404]"}) + "\nnot json\n")

    rows = {r["domain"]: r for r in certs.domain_status(settings, "web", store.domains("web"))}
    assert (rows["a.test"]["source"], rows["b.test"]["source"], rows["c.test"]["source"]) == \
        ("acme", "custom", "none")
    assert rows["c.test"]["acme_error"] == ("HTTP-01 challenge failed (unauthorized): Invalid "
                                            "response from http://c.test/.well-known/acme-challenge/x: 404")
    assert rows["a.test"]["issuer"] == "gitd test CA" and rows["a.test"]["days_left"] > 28
    assert certs.warnings(settings, "web", ["c.test"]) == [f"c.test: {rows['c.test']['acme_error']}"]

    plan = tls.tls_plan(settings, "web", store.domains("web"))
    assert plan == router.TLSPlan(resolver="gitd", custom_hosts=frozenset({"b.test"}))

    assert tls.sync_dynamic(settings, store)
    assert not tls.sync_dynamic(settings, store)  # unchanged: not rewritten
    path = settings.dynamic_dir / tls.DYNAMIC_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    config = json.loads(path.read_text())
    # only hosts that have a certificate are redirected
    assert config["http"]["routers"]["gitd-redirect-web"]["rule"] == "Host(`a.test`) || Host(`b.test`)"
    assert "BEGIN CERTIFICATE" in config["tls"]["certificates"][0]["certFile"]

    store.update_app_settings("web", https_redirect="off")
    assert tls.sync_dynamic(settings, store)
    assert "http" not in json.loads(path.read_text())


def test_an_error_older_than_the_certificate_is_not_reported(tmp_path, ca):
    settings = Settings(data_dir=tmp_path, https_port=8443, acme_email="ops@example.com")
    _acme_json(settings.acme_storage, ca, ["a.test"])
    settings.traefik_dir.mkdir()
    settings.traefik_log.write_text(json.dumps({
        "level": "error", "time": "2001-01-01T00:00:00Z", "domains": ["a.test"],
        "error": "acme: error: 400 :: urn:ietf:params:acme:error:connection :: refused"}) + "\n")
    assert certs.domain_status(settings, "web", ["a.test"])[0]["acme_error"] is None


def test_expiring_certificates_warn(tmp_path):
    settings = Settings(data_dir=tmp_path, https_port=8443)
    soon = MiniCA()
    cert, key = soon.leaf(["a.test"], days=11, start_days=-1)
    certs.install_custom(settings, "web", certs.check_bundle(cert + key, ["a.test"]))
    (warning,) = certs.warnings(settings, "web", ["a.test"])
    assert warning.startswith("a.test: certificate expires in 10 day(s)")


def test_static_config_with_https(tmp_path):
    base = dict(data_dir=tmp_path, instance="x", https_port=8443)
    text = render_static_config(Settings(**base), mode="managed")
    assert 'websecure:\n    address: "0.0.0.0:8443"' in text
    assert f'directory: "{tmp_path}/tls/dynamic"' in text
    assert "certificatesResolvers" not in text  # no acme_email: custom certificates only
    text = render_static_config(Settings(**base, acme_email="ops@example.com",
                                         acme_ca_server="https://ca.test/dir"))
    assert f'storage: "{tmp_path}/tls/acme.json"' in text
    assert 'caServer: "https://ca.test/dir"' in text
    assert "httpChallenge:\n        entryPoint: web" in text
    assert "filePath" not in text  # managed: gitd writes Traefik's output itself
    text = render_static_config(Settings(**base, acme_email="o@e.com", acme_challenge="tls"))
    assert "tlsChallenge: {}" in text
    text = render_static_config(Settings(**base, acme_email="o@e.com", acme_challenge="dns",
                                         acme_dns_provider="cloudflare"), mode="external")
    assert 'dnsChallenge:\n        provider: "cloudflare"' in text
    assert f'filePath: "{tmp_path}/traefik/traefik.log"' in text


def test_without_https_the_static_config_has_no_https_part():
    text = render_static_config(Settings(instance="x"))
    assert "websecure" not in text and "certificatesResolvers" not in text
    assert "file:" in text  # a managed Traefik takes deploys' bridge routes
    assert "file:" not in render_static_config(Settings(instance="x"), mode="external")


def test_lego_ca_certificates_only_when_set():
    assert "LEGO_CA_CERTIFICATES" not in traefik_environment(Settings(), base={})
    env = traefik_environment(Settings(acme_ca_certificates="/tmp/ca.pem"), base={"A": "1"})
    assert env == {"A": "1", "LEGO_CA_CERTIFICATES": "/tmp/ca.pem"}


@pytest.mark.parametrize("flags, words", [
    ({"https_port": 80, "http_port": 80}, "must differ"),
    ({"https_port": 70000}, "not a port"),
    ({"acme_challenge": "smtp"}, "http, tls or dns"),
    ({"acme_challenge": "dns", "acme_email": "a@b.c"}, "acme_dns_provider"),
    ({"acme_email": "a@b.c\"\nx: y"}, "spaces or quotes"),
])
def test_bad_https_settings_are_refused(tmp_path, flags, words):
    with pytest.raises(GitdError, match=words):
        load_settings(tmp_path, flags=flags, environ={})


def test_urls_are_https_when_https_is_on():
    assert Settings(https_port=443).host_url("a.test") == "https://a.test"
    assert Settings(https_port=8443).host_url("a.test") == "https://a.test:8443"
    assert Settings().host_url("a.test") == "http://a.test"


def test_hostile_bundles_are_refused(ca):
    # unterminated blocks: one linear pass over the lines (the backtracking
    # regex this replaced took 10 s for 6,000 such lines, quadratic in them)
    with pytest.raises(UsageError, match="no certificate"):
        certs.check_bundle("-----BEGIN CERTIFICATE-----\n" * 60000, ["a.test"])
    with pytest.raises(UsageError, match="more than 16 PEM blocks"):
        certs.check_bundle(ca.pem * 40, ["a.test"])


def test_odd_log_lines_are_skipped_or_read_safely(tmp_path, ca):
    settings = Settings(data_dir=tmp_path, https_port=8443, acme_email="ops@example.com")
    _acme_json(settings.acme_storage, ca, ["a.test"])
    settings.traefik_dir.mkdir()
    lines = [
        json.dumps({"level": "error", "time": "2030-01-01T00:00:00", "domains": "a.test",
                    "error": "acme: error: 400 :: urn:ietf:params:acme:error:dns :: SERVFAIL"}),
        json.dumps({"level": "error", "domains": {"x": 1}, "error": "acme"}),
        json.dumps(["acme", "error"]),
        '{"level": "error", "error": "acme: truncated',
    ]
    settings.traefik_log.write_text("\n".join(lines) + "\n")
    (row,) = certs.domain_status(settings, "web", ["a.test"])
    assert row["acme_error"] == "HTTP-01 challenge failed (dns): SERVFAIL"
    assert row["acme_error_at"] == "2030-01-01T00:00:00Z"
    settings.acme_storage.write_text('{"gitd": {"Certificates": [{"certificate": "!!"}, 7]}}')
    assert certs.acme_certs(settings) == []

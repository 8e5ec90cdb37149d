"""HTTPS end to end, offline: Pebble (Let's Encrypt's test CA) issues through
Traefik's own ACME client, validating HTTP-01 against gitd's HTTP port."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from hooks.router import REDIRECT_PRIORITY
from tests.e2e.acme_helpers import DOMAIN, ISSUE_TIMEOUT, gitd_with_pebble, http_status, pebble_certificate, wait_until
from tests.e2e.conftest import web_app
from tests.e2e.harness import commit, free_port, make_key, make_repo, unique_app
from tests.e2e.tls_helpers import HttpsLoad, MiniCA, https_get, other_key_pem

# a CGI that shows the scheme the app was told about
CGI = ('RUN mkdir -p /www/cgi-bin && echo "#!/bin/sh" > /www/cgi-bin/proto && '
       'echo "echo Content-Type: text/plain; echo; echo proto=\\$HTTP_X_FORWARDED_PROTO" '
       '>> /www/cgi-bin/proto && chmod +x /www/cgi-bin/proto\n')


@pytest.fixture(scope="module")
def https_gitd(docker_client, base_image, tmp_path_factory):
    with gitd_with_pebble(tmp_path_factory.mktemp("https"), docker_client) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(https_gitd, tmp_path_factory):
    """An app pushed once: (name, its repo)."""
    name = unique_app("tls")
    assert https_gitd.ssh("apps:create", name).returncode == 0
    repo = make_repo(tmp_path_factory.mktemp("repo"), web_app("tls-v1", extra=CGI))
    result = https_gitd.push(repo, name)
    assert result.returncode == 0, result.stderr
    assert f"https://{name}.{DOMAIN}:{https_gitd.https_port}" in result.stderr
    assert "(HTTP and HTTPS)" in result.stderr
    return name, repo


@pytest.fixture(scope="module")
def app(pushed):
    return pushed[0]



def certs_json(gitd, app: str) -> dict:
    result = gitd.ssh("certs", app, "--json")
    assert result.returncode == 0, result.stderr
    return {row["domain"]: row for row in json.loads(result.stdout)}


def test_acme_certificate_is_issued_and_http_redirects(https_gitd, app):
    host = f"{app}.{DOMAIN}"
    root = https_gitd.pebble.root_pem()
    result = pebble_certificate(https_gitd, host)
    assert isinstance(result, tuple), f"no Pebble certificate for {host}: {result}\n" \
        f"{https_gitd.ssh('certs', app).stdout}"
    status, body, cert = result
    assert body.strip() == "tls-v1"
    assert "Pebble" in cert.issuer.rfc4514_string()

    # renewals still reach Traefik's HTTP-01 answers once the host redirects
    acme_router = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{https_gitd.api_port}/api/http/routers/acme-http@internal",
        timeout=5).read())
    assert acme_router["priority"] > REDIRECT_PRIORITY

    location = wait_until(lambda: http_status(https_gitd, host)[0] in (302, 307)
                          and http_status(https_gitd, host)[1], 30)
    assert location == f"https://{host}:{https_gitd.https_port}/"

    row = certs_json(https_gitd, app)[host]
    assert row["source"] == "acme"
    assert "Pebble" in row["issuer"]
    assert row["days_left"] > 1 and row["expires"].endswith("Z")
    assert row["acme_error"] is None

    _, _, body, _ = https_get(https_gitd.https_port, host, root, path="/cgi-bin/proto")
    assert body.strip() == "proto=https"

    # the ACME storage is private and in the data dir
    storage = https_gitd.data_dir / "tls" / "acme.json"
    assert storage.stat().st_mode & 0o777 == 0o600

    # https:redirect off: plain HTTP serves again
    assert https_gitd.ssh("https:redirect", app, "off").returncode == 0
    assert wait_until(lambda: http_status(https_gitd, host)[0] == 200, 30) is True
    assert https_gitd.ssh("https:redirect", app, "on").returncode == 0
    assert wait_until(lambda: http_status(https_gitd, host)[0] in (302, 307), 30) is True


def test_deploys_drop_no_https_request(https_gitd, pushed):
    """The switch is confirmed on the HTTPS router too: load over HTTPS
    (SNI, verified against Pebble's root) across two deploys."""
    name, repo = pushed
    host = f"{name}.{DOMAIN}"
    with HttpsLoad(https_gitd.https_port, host, https_gitd.pebble.root_pem(),
                   max_seconds=180) as load:
        time.sleep(1)
        for version in ("tls-v2", "tls-v3"):
            commit(repo, {"Dockerfile": web_app(version, extra=CGI)["Dockerfile"]}, version)
            result = https_gitd.push(repo, name)
            assert result.returncode == 0, result.stderr
        time.sleep(1)
    assert load.ok > 50
    assert load.failures == [], load.failures[:5]
    assert {"tls-v1", "tls-v3"} <= load.bodies


def test_certificates_survive_a_restart(https_gitd, app):
    host = f"{app}.{DOMAIN}"
    root = https_gitd.pebble.root_pem()
    before = https_get(https_gitd.https_port, host, root)[3]
    https_gitd.stop()
    https_gitd.start(**https_gitd.start_kwargs)

    def served():
        status, _, _, cert = https_get(https_gitd.https_port, host, root)
        return cert if status == 200 else None

    after = wait_until(served, 30)
    assert getattr(after, "serial_number", None) == before.serial_number  # not issued again


def test_custom_certificate_checked_then_served(https_gitd, app):
    host = f"shop-{app}.example.org"
    assert https_gitd.ssh("domains:add", app, host).returncode == 0
    ca = MiniCA()
    custom_dir = https_gitd.data_dir / "tls" / "custom"

    def refused(bundle: str, words: str) -> None:
        result = https_gitd.ssh("certs:add", app, input=bundle)
        assert result.returncode != 0
        assert words in result.stderr, result.stderr
        assert not list(custom_dir.glob(f"{app}.*"))

    cert, key = ca.leaf([host])
    refused("not a certificate at all\n", "no certificate in the bundle")
    refused(cert + ca.pem, "no private key")
    refused(cert + other_key_pem(), "does not match the certificate")
    refused(ca.bundle([host], days=1, start_days=-3), "expired on")
    refused(ca.bundle(["elsewhere.example.net"]), "covers none of the app's domains")
    refused(cert.replace("MII", "MIX", 1) + key, "does not parse")

    result = https_gitd.ssh("certs:add", app, input=cert + ca.pem + key)
    assert result.returncode == 0, result.stderr
    assert f"Installed a certificate for {host}" in result.stdout
    assert f"Traefik serves it for {host}" in result.stdout
    for path in custom_dir.glob(f"{app}.*"):
        assert path.stat().st_mode & 0o777 == 0o600

    def served():
        status, _, body, served_cert = https_get(https_gitd.https_port, host, ca.pem)
        return body if status == 200 else None

    assert (wait_until(served, 30) or "").startswith("tls-v")
    row = certs_json(https_gitd, app)[host]
    assert (row["source"], row["issuer"]) == ("custom", "gitd test CA")

    assert https_gitd.ssh("certs:remove", app).returncode == 0
    assert not list(custom_dir.glob(f"{app}.*"))
    assert certs_json(https_gitd, app)[host]["source"] != "custom"
    assert https_gitd.ssh("certs:remove", app).returncode != 0


def test_failing_challenge_is_reported_in_words(https_gitd, app):
    host = f"broken.{app}.{DOMAIN}"  # <name>.<domain> is reserved for an app of that name
    # Pebble validates at 127.0.0.2, where nothing listens
    https_gitd.pebble.resolve(host, "127.0.0.2")
    assert https_gitd.ssh("domains:add", app, host).returncode == 0

    row = wait_until(lambda: certs_json(https_gitd, app)[host]["acme_error"] and
                     certs_json(https_gitd, app)[host], ISSUE_TIMEOUT, interval=1.0)
    assert isinstance(row, dict), f"no ACME error reported for {host}"
    assert row["source"] == "none"
    assert "HTTP-01" in row["acme_error"], row["acme_error"]
    print("reported:", row["acme_error"])
    text = https_gitd.ssh("certs", app).stdout
    assert f"{host}: HTTP-01" in text
    info = https_gitd.ssh("apps:info", app).stdout
    assert f"{host}: HTTP-01" in info


def test_apps_destroy_removes_its_custom_certificate(https_gitd):
    name = unique_app("tlsd")
    host = f"{name}.example.org"
    assert https_gitd.ssh("apps:create", name).returncode == 0
    assert https_gitd.ssh("domains:add", name, host).returncode == 0
    result = https_gitd.ssh("certs:add", name, input=MiniCA().bundle([host]))
    assert result.returncode == 0, result.stderr
    dynamic = https_gitd.data_dir / "tls" / "dynamic" / "gitd.yml"
    custom_dir = https_gitd.data_dir / "tls" / "custom"
    assert len(list(custom_dir.glob(f"{name}.*"))) == 2
    cert_pem = (custom_dir / f"{name}.crt").read_text().split("-----END CERTIFICATE-----")[0]
    assert cert_pem.splitlines()[1] in dynamic.read_text()

    result = https_gitd.ssh("apps:destroy", name, "--force")
    assert result.returncode == 0, result.stderr
    assert "removed its custom certificate" in result.stdout
    assert not list(custom_dir.glob(f"{name}.*"))
    assert cert_pem.splitlines()[1] not in dynamic.read_text()


def test_tls_alpn_challenge(docker_client, base_image, tmp_path):
    """acme_challenge = tls: Pebble validates on gitd's HTTPS port instead."""
    with gitd_with_pebble(tmp_path, docker_client) as server:
        server.stop()
        (server.data_dir / "gitd.toml").write_text('acme_challenge = "tls"\n')
        server.start(**server.start_kwargs)
        name = unique_app("alpn")
        assert server.ssh("apps:create", name).returncode == 0
        repo = make_repo(tmp_path / "repo", web_app("alpn-v1"))
        assert server.push(repo, name).returncode == 0
        result = pebble_certificate(server, f"{name}.{DOMAIN}")
        assert isinstance(result, tuple), f"no certificate: {result}\n{server.ssh('certs', name).stdout}"
        assert result[1].strip() == "alpn-v1"
        config = (server.data_dir / "traefik" / "traefik.yml").read_text()
        assert "tlsChallenge" in config and "httpChallenge" not in config


def test_turning_https_on_reaches_the_running_apps(own_gitd, tmp_path):
    """Apps deployed before HTTPS was configured get their HTTPS routes at
    the next start (a zero-downtime redeploy), without a push."""
    name = unique_app("later")
    own_gitd.start()
    assert own_gitd.ssh("apps:create", name).returncode == 0
    repo = make_repo(tmp_path / "repo", web_app("later-v1"))
    assert own_gitd.push(repo, name).returncode == 0
    own_gitd.stop()
    own_gitd.start()  # nothing changed: nothing redeployed
    assert wait_until(lambda: '"routes checked"' in own_gitd.log_text(), 30)
    assert '"redeployed": []' in own_gitd.log_text()
    own_gitd.stop()

    own_gitd.https_port = free_port()
    own_gitd.start(extra_args=("--https-port", str(own_gitd.https_port)))
    host = own_gitd.host(name)

    def served():
        status, _, body, _ = https_get(own_gitd.https_port, host, None)
        return body if status == 200 else None

    assert (wait_until(served, 60) or "").strip() == "later-v1"
    assert "Routes changed (HTTPS settings): redeploying" in own_gitd.log_text()
    # no certificate yet (no ACME account, no custom one): HTTP is not redirected
    assert http_status(own_gitd, host)[0] == 200


def test_deployers_read_certificates_but_do_not_change_them(https_gitd, app, tmp_path):
    dev_name = unique_app("dev")
    dev = make_key(tmp_path, dev_name)
    assert https_gitd.ssh("keys:add", dev_name,
                          input=(tmp_path / f"{dev_name}.pub").read_text()).returncode == 0
    assert "permission denied" in https_gitd.ssh("certs", app, key=dev).stderr
    assert https_gitd.ssh("apps:grant", app, dev_name).returncode == 0
    assert https_gitd.ssh("certs", app, "--json", key=dev).returncode == 0
    for args in (["certs:add", app], ["certs:remove", app], ["https:redirect", app, "off"]):
        result = https_gitd.ssh(*args, key=dev, input="")
        assert result.returncode != 0 and "permission denied" in result.stderr, args
    for args, words in ((["https:redirect", app, "sideways"], "must be one of on, off"),
                        (["certs", "../etc"], ""), (["certs:add", "nope-" + app], "")):
        result = https_gitd.ssh(*args, input="")
        assert result.returncode != 0 and result.stderr.startswith(" !     "), (args, result.stderr)
        assert words in result.stderr


class OutageWindow:
    """The longest stretch plain HTTP to `host` got no answer from the app
    (refused, or Traefik's 404 while it loads its routes) within the block."""

    def __init__(self, gitd, host: str):
        self.gitd, self.host, self.longest = gitd, host, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def _up(self) -> bool:
        try:
            return http_status(self.gitd, self.host)[0] in (200, 301, 302, 307, 308)
        except OSError:
            return False

    def _probe(self):
        down_since = None
        while not self._stop.is_set():
            if self._up():
                down_since = None
            else:
                down_since = down_since or time.monotonic()
                self.longest = max(self.longest, time.monotonic() - down_since)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def served_issuer(gitd, host: str) -> str:
    """The issuer of the certificate a client's handshake gets for `host` (unverified)."""
    return https_get(gitd.https_port, host, None)[3].issuer.rfc4514_string()


def test_custom_certificate_replaces_an_acme_one(https_gitd, tmp_path):
    """certs:add for a host that already has an ACME certificate: every
    handshake gets the custom one, also after Traefik reloads its config;
    certs:remove brings the ACME one back."""
    name = unique_app("tlsc")
    host = f"{name}.{DOMAIN}"
    assert https_gitd.ssh("apps:create", name).returncode == 0
    assert https_gitd.push(make_repo(tmp_path, web_app("tlsc-v1")), name).returncode == 0
    issued = pebble_certificate(https_gitd, host)
    assert isinstance(issued, tuple), https_gitd.ssh("certs", name).stdout

    ca = MiniCA("gitd custom CA")
    with OutageWindow(https_gitd, host) as window:
        result = https_gitd.ssh("certs:add", name, input=ca.bundle([host]))
    assert result.returncode == 0, result.stderr
    assert f"Restarting Traefik so that it lets go of its ACME certificate for {host}" in result.stdout
    assert f"Traefik serves it for {host}" in result.stdout
    print(f"{host} went unanswered for {window.longest:.2f}s at most during certs:add")
    assert window.longest < 5
    for round_ in range(3):
        # each config change makes Traefik build its certificate store again
        assert https_gitd.ssh("https:redirect", name, "on" if round_ % 2 else "off").returncode == 0
        time.sleep(1)
        issuers = {served_issuer(https_gitd, host) for _ in range(5)}
        assert issuers == {"CN=gitd custom CA"}, issuers
    row = certs_json(https_gitd, name)[host]
    assert (row["source"], row["served"]) == ("custom", True)

    result = https_gitd.ssh("certs:remove", name)
    assert result.returncode == 0, result.stderr
    served = pebble_certificate(https_gitd, host, timeout=30)
    assert isinstance(served, tuple), served
    status, body, cert = served
    assert body.strip() == "tlsc-v1"
    assert "Pebble" in cert.issuer.rfc4514_string()
    row = certs_json(https_gitd, name)[host]
    assert (row["source"], row["served"]) == ("acme", True)
    assert cert.serial_number == issued[2].serial_number  # set aside and put back, not ordered again

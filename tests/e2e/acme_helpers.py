"""A gitd serving HTTPS with its own ACME test CA (Pebble), for e2e tests."""

import shutil
import time
from contextlib import contextmanager

from tests.conftest import require
from tests.e2e.harness import free_port, new_gitd
from tests.e2e.pebble import Pebble
from tests.e2e.tls_helpers import https_get

DOMAIN = "paas.test"


ISSUE_TIMEOUT = 120.0


@contextmanager
def gitd_with_pebble(root, docker_client, *extra_args):
    """A gitd serving HTTPS, its ACME CA a Pebble of its own."""
    for tool in ("pebble", "pebble-challtestsrv", "openssl"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    server = new_gitd(root / "gitd")
    server.https_port = free_port()
    pebble = Pebble(root / "pebble", http_port=server.http_port, tls_port=server.https_port)
    pebble.start()
    server.start_kwargs = dict(
        extra_env={"GITD_ACME_CA_CERTIFICATES": str(pebble.listener_cert)},
        extra_args=("--https-port", str(server.https_port), "--acme-email", "ops@gitd.test",
                    "--acme-ca-server", pebble.directory_url, "--domain", DOMAIN, *extra_args))
    try:
        server.start(**server.start_kwargs)
        server.pebble = pebble
        yield server
    finally:
        server.stop()
        server.cleanup(docker_client)
        pebble.stop()


def pebble_certificate(gitd, host: str, timeout: float = ISSUE_TIMEOUT):
    """The certificate served for `host` once it verifies against Pebble's root."""
    root = gitd.pebble.root_pem()

    def served():
        status, _, body, cert = https_get(gitd.https_port, host, root)
        return (status, body, cert) if status == 200 else None

    return wait_until(served, timeout)


def wait_until(probe, timeout: float, interval: float = 0.5):
    """probe() until it returns something true (or raises no OSError); the last result."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    return last


def http_status(gitd, host: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gitd.http_port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Location") or ""
    finally:
        conn.close()

"""Let's Encrypt's test CA for the HTTPS tests: Debian's `pebble` and its
test DNS server `pebble-challtestsrv`, on ephemeral 127.0.0.1 ports.

challtestsrv answers 127.0.0.1 for every name, so Pebble validates HTTP-01
against gitd's own HTTP port (Pebble's `httpPort`). Pebble's listener
certificate is minted here with openssl; Traefik trusts it through
LEGO_CA_CERTIFICATES (gitd's acme_ca_certificates)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.harness import free_port


def mint_listener_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "pebble.crt", directory / "pebble.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=pebble test listener",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


@dataclass
class Pebble:
    root: Path
    http_port: int  # where Pebble validates HTTP-01 (gitd's HTTP port)
    tls_port: int  # where it validates TLS-ALPN-01 (gitd's HTTPS port)
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    challtestsrv_port: int = field(default_factory=free_port)
    procs: list = field(default_factory=list)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self, timeout: float = 30.0) -> "Pebble":
        self.root.mkdir(parents=True, exist_ok=True)
        self.listener_cert, key = mint_listener_cert(self.root)
        config = self.root / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.listener_cert), "privateKey": str(key),
            "httpPort": self.http_port, "tlsPort": self.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        self._spawn("challtestsrv", [
            shutil.which("pebble-challtestsrv"), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
            "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
            "-tlsalpn01", "", "-management", f"127.0.0.1:{self.challtestsrv_port}"], {})
        self._spawn("pebble", [shutil.which("pebble"), "-config", str(config),
                               "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                    {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get(self.directory_url)
                self.root_pem()
                return self
            except OSError:
                for proc, log in self.procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{log.name} exited:\n{log.read_text()}")
                time.sleep(0.1)
        raise RuntimeError("pebble did not answer")

    def _spawn(self, name: str, argv: list, env: dict) -> None:
        log = self.root / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, **env), start_new_session=True)
        self.procs.append((proc, log))

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.listener_cert))

    def get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=5, context=self.context()) as resp:
            return resp.read()

    def root_pem(self) -> str:
        """The root Pebble issues under (a new one each run)."""
        return self.get(f"https://127.0.0.1:{self.management_port}/roots/0").decode()

    def resolve(self, host: str, address: str) -> None:
        """Make challtestsrv answer `address` for `host` instead of 127.0.0.1."""
        body = json.dumps({"host": host.rstrip(".") + ".", "addresses": [address]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.challtestsrv_port}/add-a", data=body,
                                     method="POST")
        with urllib.request.urlopen(req, timeout=5):
            pass

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

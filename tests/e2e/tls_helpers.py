"""HTTPS through Traefik on 127.0.0.1 with a chosen SNI, and certificates
minted for tests (a CA, a leaf for some names, expired or not)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.harness import Load


def https_get(port: int, host: str, ca_pem: str | None, path: str = "/",
              timeout: float = 5.0) -> tuple[int, dict, str, x509.Certificate]:
    """GET (HTTP/1.0: no chunks) over TLS to 127.0.0.1:port with SNI `host`; verified against
    `ca_pem` (or not verified when None). Returns status, headers, body and
    the certificate served."""
    if ca_pem:
        ctx = ssl.create_default_context(cadata=ca_pem)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as conn:
            der = conn.getpeercert(binary_form=True)
            conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, headers, body.decode("utf-8", "replace"), x509.load_der_x509_certificate(der)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class MiniCA:
    def __init__(self, name: str = "gitd test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1))
                     .not_valid_after(now + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def leaf(self, names: list[str], days: float = 30, start_days: float = -1) -> tuple[str, str]:
        """(certificate PEM, key PEM) for `names`, valid from now+start_days
        for `days` days."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        begin = now + dt.timedelta(days=start_days)
        cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(begin).not_valid_after(begin + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)

    def bundle(self, names: list[str], **kw) -> str:
        cert, key = self.leaf(names, **kw)
        return cert + self.pem + key


def other_key_pem() -> str:
    return _pem_key(ec.generate_private_key(ec.SECP256R1()))


class HttpsLoad(Load):
    """Bounded HTTPS load through Traefik on 127.0.0.1 with SNI `host`."""

    def __init__(self, port: int, host: str, ca_pem: str | None, **kwargs):
        super().__init__(None, host, **kwargs)
        self.port, self.ca_pem = port, ca_pem

    def request(self) -> tuple[int, str]:
        status, _, body, _ = https_get(self.port, self.host, self.ca_pem, self.path, timeout=10)
        return status, body

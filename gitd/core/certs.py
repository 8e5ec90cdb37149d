"""Certificates: custom bundles (checked, stored 0600), what Traefik's ACME
client holds (acme.json), its last errors (Traefik's log), and each domain's
status in words. What Traefik is told is in hooks.tls.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from gitd.core.config import Settings
from gitd.core.errors import Conflict, UsageError

EXPIRY_WARNING_DAYS = 14
LOG_TAIL_BYTES = 4 * 1024 * 1024

MAX_PEM_BLOCKS = 16  # a leaf, its chain and a key fit many times over
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----")


@dataclass
class CertInfo:
    names: list[str]
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str = ""  # of the DER certificate: what a handshake is compared with

    def covers(self, host: str) -> bool:
        return any(name_covers(name, host) for name in self.names)

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or utcnow()
        return (self.not_after - now).total_seconds() / 86400


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def name_covers(name: str, host: str) -> bool:
    """A certificate name covers a host: equal, or a wildcard for one label."""
    name, host = name.lower().rstrip("."), host.lower().rstrip(".")
    if name.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == name[2:]
    return name == host


def cert_info(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return CertInfo(names=[str(n).lower() for n in names], issuer=describe_name(cert.issuer),
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    sha256=cert.fingerprint(hashes.SHA256()).hex())


def describe_name(name: x509.Name) -> str:
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        values = name.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return name.rfc4514_string() or "(no name)"


# custom certificates

@dataclass
class Bundle:
    chain_pem: bytes
    key_pem: bytes
    info: CertInfo


def pem_blocks(text: str) -> list[tuple[str, str]]:
    """(kind, block) for each BEGIN/END block, in one pass over the lines."""
    blocks: list[tuple[str, str]] = []
    kind, lines = None, []
    for line in text.splitlines():
        line = line.strip()
        if kind is None:
            begin = _PEM_BEGIN.fullmatch(line)
            if begin:
                kind, lines = begin.group(1), [line]
            continue
        lines.append(line)
        if line == f"-----END {kind}-----":
            blocks.append((kind, "\n".join(lines)))
            kind = None
            if len(blocks) > MAX_PEM_BLOCKS:
                raise UsageError(f"the bundle holds more than {MAX_PEM_BLOCKS} PEM blocks")
    return blocks


def check_bundle(text: str, app_hosts: list[str], now: dt.datetime | None = None) -> Bundle:
    """A PEM bundle (certificate chain, leaf first, and its private key),
    checked before anything is stored. Refusals say what is wrong."""
    now = now or utcnow()
    certs, keys = [], []
    for kind, block in pem_blocks(text):
        if kind == "CERTIFICATE":
            certs.append(block)
        elif kind.endswith("PRIVATE KEY"):
            if "ENCRYPTED" in kind or "Proc-Type: 4,ENCRYPTED" in block:
                raise UsageError("the private key is encrypted: give it without a passphrase")
            keys.append(block)
    if not certs:
        raise UsageError("no certificate in the bundle (expected PEM: -----BEGIN CERTIFICATE-----)")
    if not keys:
        raise UsageError("no private key in the bundle (put the key after the certificate chain)")
    if len(keys) > 1:
        raise UsageError(f"the bundle holds {len(keys)} private keys; give exactly one")
    chain = []
    for index, pem in enumerate(certs, 1):
        try:
            chain.append(x509.load_pem_x509_certificate(pem.encode()))
        except ValueError as exc:
            raise UsageError(f"certificate {index} of the bundle does not parse: {exc}")
    try:
        key = serialization.load_pem_private_key(keys[0].encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"the private key does not parse: {exc}")
    leaf = chain[0]
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo):
        raise UsageError("the private key does not match the certificate (the first in the bundle)")
    for index, (child, parent) in enumerate(zip(chain, chain[1:]), 1):
        if child.issuer != parent.subject:
            raise UsageError(f"certificate {index + 1} did not issue certificate {index}: "
                             "give the chain in order, leaf first")
    info = cert_info(leaf)
    if info.not_after <= now:
        raise UsageError(f"the certificate expired on {_date(info.not_after)}")
    if info.not_before > now:
        raise UsageError(f"the certificate is not valid before {_date(info.not_before)}")
    if not any(info.covers(h) for h in app_hosts):
        raise UsageError(f"the certificate (for {', '.join(info.names) or 'no names'}) covers "
                         f"none of the app's domains ({', '.join(app_hosts) or 'none'})")
    chain_pem = "".join(c + "\n" for c in certs).encode()
    key_pem = (keys[0] + "\n").encode()
    return Bundle(chain_pem, key_pem, info)


def custom_paths(settings: Settings, app: str) -> tuple[Path, Path]:
    base = settings.custom_certs_dir
    return base / f"{app}.crt", base / f"{app}.key"


def set_aside_path(settings: Settings, app: str) -> Path:
    """The ACME certificates the app's custom one replaced, kept for certs:remove."""
    return settings.custom_certs_dir / f"{app}.acme.json"


def write_private(path: Path, data: bytes, staging: Path | None = None) -> None:
    """Atomically, mode 0600 from the start. The temporary file is made in
    `staging` (default: beside the file; a dir on the same filesystem) and
    moved in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=staging or path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp makes it 0600
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install_custom(settings: Settings, app: str, bundle: Bundle) -> None:
    crt, key = custom_paths(settings, app)
    write_private(key, bundle.key_pem)
    write_private(crt, bundle.chain_pem)


def read_custom(settings: Settings, app: str) -> tuple[bytes, bytes] | None:
    crt, key = custom_paths(settings, app)
    try:
        return crt.read_bytes(), key.read_bytes()
    except OSError:
        return None


def restore_custom(settings: Settings, app: str, saved: tuple[bytes, bytes] | None) -> None:
    if saved is None:
        remove_custom(settings, app)
    else:
        crt, key = custom_paths(settings, app)
        write_private(key, saved[1])
        write_private(crt, saved[0])


def remove_custom(settings: Settings, app: str) -> bool:
    """The custom certificate (and the ACME ones it replaced). True if it had one."""
    set_aside_path(settings, app).unlink(missing_ok=True)
    removed = False
    for path in custom_paths(settings, app):
        if path.exists():
            path.unlink()
            removed = True
    return removed


def custom_cert(settings: Settings, app: str) -> CertInfo | None:
    crt, _ = custom_paths(settings, app)
    try:
        return cert_info(x509.load_pem_x509_certificate(crt.read_bytes()))
    except (OSError, ValueError):
        return None


# what Traefik's ACME client holds

def acme_certs(settings: Settings) -> list[CertInfo]:
    """Certificates in acme.json (all resolvers). Unreadable parts are skipped."""
    try:
        data = json.loads(settings.acme_storage.read_text() or "{}")
    except (OSError, ValueError):
        return []
    found = []
    for resolver in (data.values() if isinstance(data, dict) else []):
        for entry in (resolver or {}).get("Certificates") or []:
            try:
                pem = base64.b64decode(entry["certificate"])
                found.append(cert_info(x509.load_pem_x509_certificate(pem)))
            except (KeyError, TypeError, ValueError, binascii.Error):
                continue
    return found


# Traefik serves every certificate acme.json holds, whether a router asks for
# it or not, and when an ACME and a custom certificate name the same host it
# picks one at random at each configuration change. So a custom certificate
# wins only once the ACME ones for its hosts leave acme.json, which Traefik
# reads at start only: these run while Traefik is stopped.

def _read_acme(settings: Settings) -> dict:
    try:
        data = json.loads(settings.acme_storage.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def entry_names(entry) -> set[str]:
    domain = entry.get("domain") if isinstance(entry, dict) else None
    if not isinstance(domain, dict):
        return set()
    names = [domain.get("main"), *(domain.get("sans") or [])]
    return {str(n).lower().rstrip(".") for n in names if n}


def acme_entries_for(settings: Settings, hosts: set[str]) -> dict[str, list]:
    """{resolver: entries} of acme.json whose names all are among `hosts`."""
    found: dict[str, list] = {}
    for resolver, content in _read_acme(settings).items():
        entries = content.get("Certificates") if isinstance(content, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            names = entry_names(entry)
            if names and names <= hosts:
                found.setdefault(resolver, []).append(entry)
    return found


def set_aside_acme(settings: Settings, app: str, hosts: set[str]) -> int:
    """Move the ACME certificates for `hosts` out of acme.json into the
    app's set-aside file; how many moved. Only while Traefik is stopped."""
    data = _read_acme(settings)
    moving = acme_entries_for(settings, hosts)
    if not moving:
        return 0
    kept = _read_set_aside(settings, app)
    for resolver, entries in moving.items():
        data[resolver]["Certificates"] = [e for e in data[resolver]["Certificates"]
                                          if e not in entries]
        kept.setdefault(resolver, []).extend(entries)
    write_private(set_aside_path(settings, app), json.dumps(kept).encode())
    write_private(settings.acme_storage, json.dumps(data, indent=1).encode())
    return sum(len(e) for e in moving.values())


def _read_set_aside(settings: Settings, app: str) -> dict[str, list]:
    try:
        data = json.loads(set_aside_path(settings, app).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_set_aside(settings: Settings, app: str) -> dict[str, list]:
    """The app's set-aside ACME certificates that are still valid."""
    return _valid(_read_set_aside(settings, app))


def returning_set_aside(settings: Settings, app: str, hosts: set[str]) -> dict[str, list]:
    """The set-aside certificates for names outside `hosts` (a new custom
    certificate covers fewer): the valid ones, for put_back_acme. Nothing
    is changed: release_set_aside takes them out of the app's file."""
    return _valid(_split_set_aside(settings, app, hosts)[1])


def release_set_aside(settings: Settings, app: str, hosts: set[str]) -> dict[str, list]:
    """Take the set-aside certificates for names outside `hosts` out of the
    app's file; the valid ones, as returning_set_aside."""
    kept, released = _split_set_aside(settings, app, hosts)
    if released:
        write_private(set_aside_path(settings, app), json.dumps(kept).encode())
    return _valid(released)


def _split_set_aside(settings: Settings, app: str, hosts: set[str]) -> tuple[dict, dict]:
    kept, released = {}, {}
    for resolver, entries in _read_set_aside(settings, app).items():
        for entry in entries if isinstance(entries, list) else []:
            side = kept if entry_names(entry) <= hosts else released
            side.setdefault(resolver, []).append(entry)
    return kept, released


def _valid(set_aside: dict) -> dict[str, list]:
    now = utcnow()
    valid: dict[str, list] = {}
    for resolver, entries in set_aside.items():
        for entry in entries if isinstance(entries, list) else []:
            try:
                pem = base64.b64decode(entry["certificate"])
                info = cert_info(x509.load_pem_x509_certificate(pem))
            except (KeyError, TypeError, ValueError, binascii.Error):
                continue
            if info.not_after > now:
                valid.setdefault(resolver, []).append(entry)
    return valid


def put_back_acme(settings: Settings, entries: dict[str, list]) -> int:
    """Return set-aside certificates to acme.json (not for names it holds
    again meanwhile); how many. Only while Traefik is stopped."""
    data = _read_acme(settings)
    added = 0
    for resolver, moving in entries.items():
        content = data.get(resolver)
        if not isinstance(content, dict):
            continue  # that account is gone: Traefik would not read them
        present = [entry_names(e) for e in content.get("Certificates") or []]
        for entry in moving:
            if entry_names(entry) not in present:
                content.setdefault("Certificates", []).append(entry)
                added += 1
    if added:
        write_private(settings.acme_storage, json.dumps(data, indent=1).encode())
    return added


@dataclass
class AcmeError:
    time: dt.datetime | None
    words: str


def acme_errors(settings: Settings) -> dict[str, AcmeError]:
    """The last ACME error Traefik logged for each domain."""
    errors: dict[str, AcmeError] = {}
    for line in _log_tail(settings.traefik_log):
        if '"error"' not in line or ("acme" not in line.lower() and "certificate" not in line):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("error", "warn"):
            continue
        domains = entry.get("domains") or _domains_in(str(entry.get("error", "")))
        if isinstance(domains, str):
            domains = [domains]
        if not isinstance(domains, list) or not domains or "acme" not in json.dumps(entry).lower():
            continue
        when = _parse_time(entry.get("time"))
        words = describe_acme_error(str(entry.get("error") or entry.get("message") or ""),
                                    settings.acme_challenge)
        for domain in domains:
            errors[str(domain).lower()] = AcmeError(when, words)
    return errors


def _log_tail(path: Path) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def _domains_in(text: str) -> list[str]:
    match = re.search(r"domains \[([^\]]*)\]", text)
    return match.group(1).split() if match else []


def _parse_time(value) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


CHALLENGE_NAMES = {"http": "HTTP-01", "tls": "TLS-ALPN-01", "dns": "DNS-01"}


def describe_acme_error(error: str, challenge: str) -> str:
    """lego's nested error, as one sentence: the CA's detail is the part
    after its last ' :: '."""
    text = " ".join(error.split())
    detail = text.rsplit(" :: ", 1)[-1] if " :: " in text else text
    detail = detail.strip().rstrip(",;]").strip()
    dial = re.search(r'Get "([^"]+)": dial tcp (\S+): (?:connect: )?(.+)$', detail)
    if dial:
        url, address, reason = dial.groups()
        detail = f"the CA could not reach {url} at {address} ({reason})"
    name = CHALLENGE_NAMES.get(challenge, challenge)
    kinds = re.findall(r"urn:ietf:params:acme:error:(\w+)", text)
    if kinds:
        return f"{name} challenge failed ({kinds[-1]}): {detail}"
    return f"could not get a certificate: {detail}"


# per-domain status

def domain_status(settings: Settings, app: str, hosts: list[str],
                  now: dt.datetime | None = None) -> list[dict]:
    now = now or utcnow()
    custom = custom_cert(settings, app)
    issued = acme_certs(settings) if settings.acme else []
    errors = acme_errors(settings) if settings.acme else {}
    rows = []
    for host in hosts:
        cert, source = None, "none"
        if custom and custom.covers(host):
            cert, source = custom, "custom"
        else:
            matching = [c for c in issued if c.covers(host)]
            if matching:
                cert, source = max(matching, key=lambda c: c.not_after), "acme"
        # a DNS-01 wildcard's errors are logged under *.<parent>
        error = errors.get(host) or errors.get("*." + host.partition(".")[2])
        if error and cert and error.time and error.time < cert.not_before:
            error = None  # an older failure, since fixed
        if source == "custom":
            error = None
        row = {"domain": host, "source": source,
               "issuer": cert.issuer if cert else None,
               "expires": _iso(cert.not_after) if cert else None,
               "days_left": round(cert.days_left(now), 1) if cert else None,
               "expired": bool(cert and cert.not_after <= now),
               "sha256": cert.sha256 if cert else None,
               "acme_error": error.words if error else None,
               "acme_error_at": _iso(error.time) if error and error.time else None}
        rows.append(row)
    return rows


def warnings(settings: Settings, app: str, hosts: list[str]) -> list[str]:
    """Certificates that expire soon and ACME errors, in words."""
    if not settings.https:
        return []
    found = []
    for row in domain_status(settings, app, hosts):
        if row["expired"]:
            found.append(f"{row['domain']}: certificate expired on {row['expires'][:10]}")
        elif row["days_left"] is not None and row["days_left"] < EXPIRY_WARNING_DAYS:
            found.append(f"{row['domain']}: certificate expires in {row['days_left']:.0f} day(s) "
                         f"({row['expires'][:10]})")
        if row["acme_error"]:
            found.append(f"{row['domain']}: {row['acme_error']}")
    return found


def certified_hosts(settings: Settings, app: str, hosts: list[str], issued: list[CertInfo],
                    now: dt.datetime | None = None) -> list[str]:
    """The hosts that have an unexpired certificate (custom, or from ACME)."""
    now = now or utcnow()
    custom = custom_cert(settings, app)
    valid = [c for c in ([custom] if custom else []) + issued if c.not_after > now]
    return [h for h in hosts if any(c.covers(h) for c in valid)]


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def require_https(settings: Settings) -> None:
    if not settings.https:
        raise Conflict("HTTPS is off: start gitd with --https-port (https_port in gitd.toml)")

"""Images to and from a registry: the one swarm nodes pull releases from
(gitd's own, or one it is pointed at with `registry`). gitd pushes through
the Docker engine, so the engine's rules hold: plain HTTP only to
127.0.0.0/8 or its insecure-registries."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import urllib.error
import urllib.request

import structlog

from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.core.validate import app_name

log = structlog.get_logger("gitd.registry")

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# what a HEAD of a manifest may answer with; the digest is of what it returns
MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
))
LOOPBACK = re.compile(r"^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost)(:\d+)?$")


def registry_host(settings: Settings) -> str:
    return settings.registry or f"127.0.0.1:{settings.registry_port}"


def is_own_registry(host: str, settings: Settings) -> bool:
    """Whether `host` ([host][:port], a reference's first part) is gitd's own
    registry however it is spelled: the same port, and the same name or an
    address it resolves to (127.1, 0x7f.1, 2130706433, localhost, 127.0.0.2,
    this host's own addresses: any address that is this machine's, when the
    registry is on it). A name on that port that does not resolve is refused
    (GitdError): the engine, on the same resolver, could not pull from it
    either, and what it is cannot be told."""
    own = registry_host(settings)
    name, port = _host_port(host)
    own_name, own_port = _host_port(own)
    if port != own_port:
        return False
    if name == own_name:
        return True
    addresses, own_addresses = _addresses(name), _addresses(own_name)
    if addresses is None:
        raise GitdError(f"registry host {name} does not resolve (and it has the port of "
                        "gitd's own registry): name the registry by an address")
    if own_addresses and addresses & own_addresses:
        return True
    return bool(own_addresses) and all(map(_is_this_host, own_addresses)) and any(
        map(_is_this_host, addresses))


REGISTRY_PORT = 443  # a reference's host without a port: the engine asks HTTPS's


def _host_port(host: str) -> tuple[str, int]:
    name, colon, port = host.rpartition(":") if ":" in host else (host, "", "")
    return name.rstrip(".").lower(), int(port) if colon and port.isdigit() else REGISTRY_PORT


RESOLVE_TIMEOUT = 10.0


def _addresses(name: str) -> set | None:
    """The addresses `name` stands for (an address in any spelling inet_aton
    takes: 127.1, 0x7f.1, 2130706433), or None when it does not resolve."""
    if name == "localhost" or name.endswith(".localhost"):
        return {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    try:
        return {ipaddress.ip_address(name.strip("[]"))}
    except ValueError:
        pass
    try:
        return {ipaddress.ip_address(socket.inet_ntoa(socket.inet_aton(name)))}
    except OSError:
        pass
    found: list = []
    resolver = threading.Thread(target=_resolve, args=(name, found), daemon=True)
    resolver.start()
    resolver.join(RESOLVE_TIMEOUT)
    return {ipaddress.ip_address(a.split("%")[0]) for a in found} or None


def _resolve(name: str, found: list) -> None:
    try:
        found.extend(info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError):
        pass


def _is_this_host(address) -> bool:
    """Loopback, unspecified (0.0.0.0 reaches this host), or one of its own
    addresses (it can be bound here)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


def repository(host: str, app: str) -> str:
    return f"{host}/gitd/{app_name(app)}"


def _base_urls(host: str) -> list[str]:
    """Loopback registries speak HTTP; another host is tried over HTTPS first."""
    return [f"http://{host}"] if LOOPBACK.match(host) else [f"https://{host}", f"http://{host}"]


def http_status(url: str, timeout: float, method: str = "GET", headers: dict | None = None):
    """(status, headers) of a request; None when nothing answers."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers
    except (OSError, ValueError):
        return None


def ping(host: str, timeout: float = 2.0) -> bool:
    """Does a registry answer at `host`? 401 counts: it is there, with auth."""
    return any((http_status(f"{base}/v2/", timeout) or (0,))[0] in (200, 401)
               for base in _base_urls(host))


def push_image(engine, registry: str, image: str, app: str, tag: str) -> str:
    """Push a local image (reference or id) as REGISTRY/gitd/APP:TAG through the
    Docker engine (`engine`: an Engine or a docker client) and return the
    pushed reference by digest, REGISTRY/gitd/APP@sha256:..., which swarm
    services pin. The extra local tag is removed again; the image is kept."""
    import docker.errors

    client = getattr(engine, "client", engine)
    if not TAG.fullmatch(tag or ""):
        raise GitdError(f"invalid image tag {tag!r}")
    repo = repository(registry, app)
    try:
        local = client.images.get(image)
        local.tag(repo, tag)
    except docker.errors.ImageNotFound:
        raise GitdError(f"image {image!r} not found")
    except docker.errors.APIError as exc:
        raise GitdError(f"tagging {image} as {repo}:{tag} failed: {exc.explanation or exc}")
    try:
        digest = _push(client, repo, tag)
    finally:
        _untag(client, local.id, f"{repo}:{tag}")
    log.info("image pushed", app=app, tag=tag, ref=f"{repo}@{digest}")
    return f"{repo}@{digest}"


def _push(client, repo: str, tag: str) -> str:
    import docker.errors

    digest = ""
    try:
        for line in client.images.push(repo, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise GitdError(_push_error(repo, line.get("error") or str(line)))
            digest = (line.get("aux") or {}).get("Digest") or digest
    except docker.errors.APIError as exc:
        raise GitdError(_push_error(repo, str(exc.explanation or exc)))
    if not digest:
        raise GitdError(f"pushing {repo}:{tag} gave no digest")
    return digest


def _push_error(repo: str, message: str) -> str:
    text = f"pushing {repo} failed: {message.strip()}"
    if "https" in message.lower() or "http:" in message.lower():
        text += (" (the Docker engine pushes over HTTPS except to 127.0.0.0/8: give the "
                 "registry TLS, or list it in the engine's insecure-registries)")
    elif "connection refused" in message.lower():
        text += " (is the registry running? see `gitd doctor`)"
    return text


def _untag(client, image_id: str, ref: str) -> None:
    """Drop `ref` but never the image: removing an image's only tag would
    delete it, so then the tag stays."""
    import docker.errors

    try:
        if len(client.images.get(image_id).tags) > 1:
            client.images.remove(ref, noprune=True)
    except docker.errors.APIError as exc:
        log.warning("could not remove the registry tag", ref=ref, error=str(exc))


def remove_image(settings: Settings, app: str, tag: str, timeout: float = 10.0) -> bool:
    """Delete APP:TAG's manifest from the registry (its blobs go at the
    registry's garbage collection). Best effort: False when it did not."""
    try:
        name = f"gitd/{app_name(app)}"
    except GitdError:
        return False
    if not TAG.fullmatch(tag or ""):
        return False
    for base in _base_urls(registry_host(settings)):
        head = http_status(f"{base}/v2/{name}/manifests/{tag}", timeout, "HEAD",
                       {"Accept": MANIFEST_TYPES})
        if head is None:
            continue
        digest = head[1].get("Docker-Content-Digest") if head[0] == 200 else None
        if not digest:
            return False
        deleted = http_status(f"{base}/v2/{name}/manifests/{digest}", timeout, "DELETE")
        ok = deleted is not None and deleted[0] == 202
        if not ok:
            log.warning("could not delete an image from the registry", app=app, tag=tag,
                        status=deleted and deleted[0])
        return ok
    return False

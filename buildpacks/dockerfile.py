"""Build a Dockerfile app with the docker SDK, streaming every line."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from pathlib import Path

import docker
import docker.errors
import requests

from buildpacks import dockerfile_refs
from buildpacks.base import BuildRequest, BuildResult
from gitd.core import resources, validate
from gitd.core.errors import BuildError

# Docker resolves `docker.io/gitd/x` and `index.docker.io/gitd/x` to the
# local `gitd/x` too.
REGISTRY_PREFIXES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")
MAX_DOCKERFILE_BYTES = 1024**2
LOOKS_LIKE_ID = re.compile(r"(sha256:)?[0-9a-f]{1,64}")


class DockerfileBuildpack:
    name = "dockerfile"
    looks_for = "Dockerfile"

    def detect(self, source_dir: Path) -> str | None:
        if (source_dir / "Dockerfile").is_file():
            return "found Dockerfile"
        return None

    def build(self, request: BuildRequest) -> BuildResult:
        # No build labels: the legacy builder turns each into an uncached
        # step. Images are found through the release rows instead.
        request.emit("-----> Building with Dockerfile")
        dockerfile = request.source_dir / "Dockerfile"
        if dockerfile.is_symlink() or not dockerfile.is_file():
            raise BuildError("no Dockerfile (a regular file) at the build root")
        if dockerfile.stat().st_size > MAX_DOCKERFILE_BYTES:
            raise BuildError("the Dockerfile is larger than 1 MiB")
        text = dockerfile.read_text("utf-8", "replace")
        check_labels(text)
        check_remote_sources(text)
        check_references(request, text)
        return BuildResult(image_id=docker_build(request))


def docker_build(request: BuildRequest, dockerfile: Path | None = None) -> str:
    """Build `request.source_dir` (with `dockerfile`, which may live outside
    it, else its own Dockerfile) on the build network, within the build
    timeout and the app's limits; return the image id."""
    image_id = None
    api, responses = _own_client(request)
    # At the limit the build's connection is shut: dockerd then cancels
    # the build (and kills the step's container).
    timed_out = threading.Event()

    def hang_up():
        timed_out.set()
        _hang_up(api, responses)

    timer = threading.Timer(request.timeout, hang_up)
    timer.daemon = True
    timer.start()
    try:
        stream = api.build(
            path=str(request.source_dir),
            dockerfile=str(dockerfile) if dockerfile else None,
            tag=request.image_tag,
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
            network_mode=request.network or None,
            container_limits=resources.build_limits(request.limits),
            timeout=int(request.timeout) + 60,  # per read: a fallback to the timer
        )
        watch = _DiskFullWatch(request.emit)
        for chunk in stream:
            image_id = _handle_chunk(chunk, watch.emit) or image_id
    except Exception as exc:
        if timed_out.is_set():
            raise BuildError(_timeout_message(request.timeout))
        if isinstance(exc, BuildError):
            if watch.seen:
                raise BuildError(f"no space left on device: the build ran out of disk space "
                                 f"({exc.message}); free some on Docker's disk or shrink what "
                                 "the step writes, then push again") from None
            raise
        if isinstance(exc, docker.errors.APIError):
            raise BuildError(f"docker build failed: {exc.explanation or exc}")
        if isinstance(exc, (docker.errors.DockerException, OSError,
                            requests.exceptions.RequestException)):
            raise BuildError(f"docker build failed: {exc}")
        raise
    finally:
        timer.cancel()
        _hang_up(api, responses)
        api.close()
    if timed_out.is_set():
        raise BuildError(_timeout_message(request.timeout))
    if not image_id:
        image_id = request.docker.images.get(request.image_tag).id
    return image_id


def _own_client(request: BuildRequest):
    """A Docker API client for this build alone (same engine, same API
    version), keeping the HTTP response of the build so it can be shut."""
    api = (request.engine_client or _client_from_environment(request))().api
    responses: list = []
    post = api._post

    def keep_response(*args, **kwargs):
        response = post(*args, **kwargs)
        responses.append(response)
        return response

    api._post = keep_response
    return api, responses


def _client_from_environment(request: BuildRequest):
    return lambda: docker.from_env(version=request.docker.api.api_version)


def _hang_up(api, responses: list) -> None:
    for response in responses:
        try:
            sock = response.raw._fp.fp.raw  # how docker-py itself reaches it
            getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
        except Exception:
            pass
        try:
            response.close()
        except Exception:
            pass


def _timeout_message(timeout: float) -> str:
    return f"the build ran longer than {timeout:g}s (build_timeout) and was stopped"


def _normalise(ref: str) -> str:
    ref = ref.lower()
    for prefix in REGISTRY_PREFIXES:
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def _private_registry(ref: str) -> bool:
    """Whether `ref` names a registry on the host's loopback or a private,
    link-local or otherwise non-public address: dockerd pulls from the
    host's network. (A name resolving to such an address is not caught.)"""
    first, sep, _ = ref.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return False  # a Docker Hub name
    host = first.rsplit(":", 1)[0] if not first.endswith("]") else first
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False


def _gitd_app_of_name(ref: str) -> str | None:
    """`gitd/hello:v3` (or @digest) -> hello."""
    ref = _normalise(ref)
    if not ref.startswith("gitd/"):
        return None
    return ref[len("gitd/"):].split(":")[0].split("@")[0]


def check_labels(text: str) -> None:
    """The containers of a build's steps carry the labels of the image being
    built, and Traefik routes running containers: a `LABEL traefik.*` line
    would route any host to a `RUN` step while the build runs. So LABEL
    lines may not set the keys only gitd sets (the built image is checked
    again before it runs)."""
    found = dockerfile_refs.reserved_labels(text)
    if found:
        line, key = found[0]
        why = ("a label key spelled with a variable (it could spell Traefik labels)" if "$" in key
               else "Traefik labels and gitd.* labels are gitd's to set")
        raise BuildError(f"Dockerfile line {line}: LABEL {key[:80]}: {why}; routing is gitd's "
                         "alone (domains:add routes hosts)")


def check_remote_sources(text: str) -> None:
    """ADD with a URL is fetched by dockerd on the host, outside any
    container and the build network: refused (RUN wget/curl in the build
    fetches from inside its container instead)."""
    found = dockerfile_refs.remote_sources(text)
    if found:
        line, source = found[0]
        raise BuildError(f"Dockerfile line {line}: ADD {source[:80]}: Docker would download it "
                         "from the host, outside the build's container; ADD copies files from "
                         "the repository only (a URL or a variable is refused): use RUN wget or "
                         "curl in the build instead")


def _routing_labels_of(image) -> list[str]:
    return validate.routing_labels((image.attrs.get("Config") or {}).get("Labels"))


def check_references(request: BuildRequest, text: str) -> None:
    """A build may read base images and its own app's images, never another
    app's: by name (`gitd/<other>:vN`), by id or digest (resolved through
    the engine to the app that owns it), or an untagged image (what is left
    of another app's build steps). ONBUILD triggers of the images read are
    checked the same way."""
    refs, _ = dockerfile_refs.references(text)
    seen: set[str] = set()
    while refs:
        ref = refs.pop(0)
        if ref.image in seen:
            continue
        seen.add(ref.image)
        where = f"Dockerfile line {ref.line}: " if ref.line else ""
        named = _gitd_app_of_name(ref.image)
        if named is not None and named != request.app:
            raise BuildError(f"{where}{ref.instruction} {ref.image}: an image of another app; "
                             "a build may use base images and its own app's images only")
        try:
            image = request.docker.images.get(ref.image)
        except docker.errors.ImageNotFound:
            if LOOKS_LIKE_ID.fullmatch(ref.image.lower()):
                # an id prefix no image has yet could match another app's
                # image made before the builder resolves it
                raise BuildError(f"{where}{ref.instruction} {ref.image}: no such image here")
            if _private_registry(ref.image):
                raise BuildError(f"{where}{ref.instruction} {ref.image}: dockerd would pull it "
                                 "from the host's own or a private network's registry; "
                                 "a build may pull from public registries only")
            continue  # not here: the builder would pull it from a registry
        except docker.errors.DockerException as exc:
            raise BuildError(f"{where}{ref.instruction} {ref.image}: cannot be checked: {exc}")
        owners = {_gitd_app_of_name(tag) for tag in image.tags} - {None}
        owners |= set(request.image_owners(image.id))
        if owners - {request.app}:
            raise BuildError(f"{where}{ref.instruction} {ref.image}: an image of another app; "
                             "a build may use base images and its own app's images only")
        if not image.tags and not owners:
            raise BuildError(f"{where}{ref.instruction} {ref.image}: an untagged image; a build "
                             "may use tagged base images and its own app's images only")
        if _routing_labels_of(image):
            raise BuildError(f"{where}{ref.instruction} {ref.image}: carries Traefik labels, which "
                             "the build's step containers would carry: routing is gitd's alone")
        triggers = (image.attrs.get("Config") or {}).get("OnBuild")
        check_labels("\n".join(f"ONBUILD {t}" for t in triggers or []))
        check_remote_sources("\n".join(f"ONBUILD {t}" for t in triggers or []))
        refs.extend(dockerfile_refs.onbuild_references(triggers))


class _DiskFullWatch:
    """Passes the build's lines on, noting whether one told of a full disk
    (a step's own write, or dockerd's layer store): the build's failure is
    then said to be that, not only the step's exit code."""

    def __init__(self, emit):
        self._emit = emit
        self.seen = False

    def emit(self, line: str) -> None:
        if "no space left on device" in line.lower():
            self.seen = True
        self._emit(line)


def _handle_chunk(chunk: dict, emit) -> str | None:
    """Emit a build-stream chunk's text; return the image id when it names one."""
    if "error" in chunk:
        detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
        for line in str(detail).rstrip().splitlines():
            emit(f"       {line}")
        raise BuildError(f"docker build failed: {str(detail).strip().splitlines()[-1] if str(detail).strip() else 'error'}")
    if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
        return chunk["aux"]["ID"]
    text = chunk.get("stream")
    if text:
        for line in text.rstrip("\n").splitlines():
            if line.strip():
                emit(f"       {line.rstrip()}")
    status = chunk.get("status")
    if status and not chunk.get("progressDetail"):
        emit(f"       {status}")
    return None

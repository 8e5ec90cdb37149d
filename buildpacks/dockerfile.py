"""Build a Dockerfile app with the docker SDK, streaming every line."""

from __future__ import annotations

from pathlib import Path

import docker.errors

from buildpacks import BuildRequest, BuildResult
from gitd.errors import BuildError


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
        if not (request.source_dir / "Dockerfile").is_file():
            raise BuildError("no Dockerfile at the build root")
        image_id = docker_build(request)
        return BuildResult(image_id=image_id)


def docker_build(request: BuildRequest, dockerfile: Path | None = None) -> str:
    """Build `request.source_dir` (with `dockerfile`, which may live outside
    it, else its own Dockerfile) on the build network; return the image id."""
    image_id = None
    try:
        stream = request.docker.api.build(
            path=str(request.source_dir),
            dockerfile=str(dockerfile) if dockerfile else None,
            tag=request.image_tag,
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
            network_mode=request.network or None,
        )
        for chunk in stream:
            image_id = _handle_chunk(chunk, request.emit) or image_id
    except docker.errors.APIError as exc:
        raise BuildError(f"docker build failed: {exc.explanation or exc}")
    except docker.errors.DockerException as exc:
        raise BuildError(f"docker build failed: {exc}")
    if not image_id:
        image_id = request.docker.images.get(request.image_tag).id
    return image_id


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

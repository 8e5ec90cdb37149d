"""What every builder takes and returns: a BuildRequest in, a BuildResult out,
behind the Buildpack Protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol


@dataclass
class BuildRequest:
    app: str
    release: int
    source_dir: Path  # the build root, exported from the pushed commit
    image_tag: str  # gitd/<app>:v<N>
    labels: dict[str, str]  # to put on the image (gitd.app, gitd.instance, ...)
    emit: Callable[[str], None]  # one line of output, without newline
    docker: object  # docker.DockerClient
    work_dir: Path  # scratch space for this build, removed afterwards
    gc_root: Path  # where a builder may keep a GC root for this release
    options: dict[str, str] = field(default_factory=dict)  # per-app settings
    procfile: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] | None = None  # environment for build tools (None = gitd's)
    network: str = ""  # the network docker builds run on ("" = Docker's default bridge)
    base_images: dict[str, str] = field(default_factory=dict)  # stacks: role -> image
    # Who pushed: an admin's key is root-equivalent; anyone else's code must
    # only ever run in a container or a real sandbox.
    trusted: bool = False
    timeout: float = 1800.0  # seconds for the whole build (build_timeout)
    limits: dict[str, str] = field(default_factory=dict)  # the app's resources (memory, ...)
    # image id -> the apps whose releases it made (empty: not an app's): a
    # build may use base images and its own app's, never another app's
    image_owners: Callable[[str], set[str]] = lambda image_id: set()
    # a new client of the same engine (a build's own); None: one from the environment
    engine_client: Callable[[], object] | None = None


@dataclass
class BuildResult:
    image_id: str
    details: dict = field(default_factory=dict)  # shown in the log (layers reused, size)


class Buildpack(Protocol):
    name: str

    def detect(self, source_dir: Path) -> str | None: ...

    def build(self, request: BuildRequest) -> BuildResult: ...

"""Builders behind one small interface, tried in an explicit order.

A buildpack answers two questions: does this source look like mine
(`detect`, returning the reason or None), and turn it into the image
`request.image_tag` (`build`). Output goes line by line to `request.emit`,
which reaches the pusher live and the release log.
"""

from __future__ import annotations

from pathlib import Path

from buildpacks.base import Buildpack, BuildRequest, BuildResult  # noqa: F401 - the package's interface
from gitd.core.errors import BuildError


def registry() -> list[Buildpack]:
    """The buildpacks in the order they are tried."""
    from buildpacks.dockerfile import DockerfileBuildpack
    from buildpacks.nix import NixBuildpack
    from buildpacks.stacks import STACKS, StackBuildpack

    return [NixBuildpack(), DockerfileBuildpack(), *(StackBuildpack(s) for s in STACKS)]


def names() -> list[str]:
    return [bp.name for bp in registry()]


def by_name(name: str) -> Buildpack:
    for buildpack in registry():
        if buildpack.name == name:
            return buildpack
    raise BuildError(f"unknown buildpack {name!r} (known: {', '.join(names())})")


def detect(source_dir: Path, forced: str | None = None,
           build_dir: str = "") -> tuple[Buildpack, str]:
    """Pick the buildpack for `source_dir`: the app's setting, else the first
    match. `build_dir` (where `source_dir` is in the repository) only names
    it in the error."""
    if forced:
        return by_name(forced), "set with buildpacks:set"
    for buildpack in registry():
        reason = buildpack.detect(source_dir)
        if reason:
            return buildpack, reason
    raise BuildError(nothing_found(build_dir))


def nothing_found(build_dir: str = "") -> str:
    """Every file looked for, in the order tried, and where."""
    files = [name.strip() for bp in registry() for name in bp.looks_for.split(",")]
    looked_for = ", ".join(files[:-1]) + " or " + files[-1]
    build_dir = build_dir.strip("/")
    if build_dir:
        return (f"no {looked_for} in {build_dir}/ (the build directory): "
                "add one, or change it with buildpacks:set APP --dir DIR")
    return (f"no {looked_for} at the repository's root: "
            "add one, or build a subdirectory with buildpacks:set APP --dir DIR")

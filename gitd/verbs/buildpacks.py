"""Buildpacks: which builder a push uses, from which directory of the
repository, and which flake attribute.

Without settings a push is built from the repository's root: with Nix when
a `flake.nix` is there, else with its `Dockerfile`. The settings live in the
app's settings (`buildpack`, `build_dir`, `buildpack_options`) and apply from
the next push.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import buildpacks
from buildpacks.stacks import StackBuildpack, render, stage_label
from gitd import gitserve
from gitd.core.errors import BuildError, GitdError, UsageError
from gitd.core import validate
from gitd.verbs import Session
from hooks import checkout, procfile

SET_REASON = "set with buildpacks:set"
UNSET_KEYS = ("buildpack", "dir", "attr", "package")


def settings_of(app_settings: dict) -> dict:
    return {"buildpack": app_settings.get("buildpack"),
            "build_dir": app_settings.get("build_dir", ""),
            "options": dict(app_settings.get("buildpack_options") or {})}


def deploy_ref(repo, current_commit: str | None) -> tuple[bytes, bytes] | None:
    """(branch, commit) of the deploy branch: the one the live release came
    from when both exist, else main, else master; None before any push."""
    found = []
    for ref in gitserve.DEPLOY_BRANCHES:
        try:
            found.append((ref, repo.refs[ref]))
        except KeyError:
            continue
    for ref, sha in found:
        if current_commit and sha.decode() == current_commit:
            return ref, sha
    return found[0] if found else None


def _resolve(s: Session, name: str) -> dict:
    """What the next build of the deploy branch's commit would use, and why."""
    app = s.store.get_app(name)
    data = {"app": name, **settings_of(app.settings)}
    current = s.store.current_release(name)
    data["last_build"] = ({"release": current.version, "buildpack": current.buildpack,
                           "commit": current.commit} if current else None)
    repo = gitserve.open_repo(s.settings.repos_dir, name)
    try:
        found = deploy_ref(repo, current.commit if current else None)
        data["branch"] = found[0].decode().removeprefix("refs/heads/") if found else None
        data["commit"] = found[1].decode() if found else None
        data["selected"] = data["reason"] = data["error"] = None
        data["stack"] = data["dockerfile"] = data["services"] = None
        if found is None:
            if data["buildpack"]:
                data["selected"], data["reason"] = data["buildpack"], SET_REASON
            else:
                data["reason"] = "no push yet"
            return data
        try:
            _detect(s, repo, found[1], data)
        except (BuildError, UsageError) as exc:  # UsageError: a malformed app.json
            data["error"] = exc.message
        return data
    finally:
        repo.close()


def _detect(s: Session, repo, commit: bytes, data: dict) -> None:
    """Fill in data's selected, reason, stack (what a stack plan found) and
    dockerfile (the one the build will use), from the pushed files; for an
    app.json declaring `services`, each service's in data["services"]."""
    from hooks import components

    tree = checkout.subtree(repo, commit, data["build_dir"])  # the directory must exist
    declared = components.parse(checkout.read_file(repo, tree, "app.json"))
    if declared:
        data["selected"] = "services"
        names = ", ".join(c.name for c in declared)
        data["reason"] = f"app.json declares {len(declared)}: {names}"
        data["services"] = [_service(s, repo, commit, data, c) for c in declared]
        return
    processes = procfile.parse(checkout.read_file(repo, tree, "Procfile"))
    data.update(_choice(s, repo, tree, data["app"], data["buildpack"], data["build_dir"],
                        processes, "Procfile web"))


def _service(s: Session, repo, commit: bytes, data: dict, component) -> dict:
    """What the push builds one app.json service with: the buildpack detected
    in its directory (as the pipeline does: the app's buildpack setting does
    not apply), or nix for a flake attribute."""
    entry = {"name": component.name, "build": ({"dir": component.build_dir} if component.build_dir
                                               else {"flake_attr": component.flake_attr}),
             "selected": None, "reason": None, "stack": None, "dockerfile": None,
             "processes": dict(component.processes), "error": None}
    try:
        if not component.build_dir:
            entry["selected"] = "nix"
            entry["reason"] = f"flake attribute {component.flake_attr} of the root flake.nix"
            return entry
        where = "/".join(p for p in (data["build_dir"], component.build_dir) if p)
        tree = checkout.subtree(repo, commit, where)
        processes = (component.processes
                     or procfile.parse(checkout.read_file(repo, tree, "Procfile")))
        entry["processes"] = dict(processes)
        label = "app.json web" if component.processes.get("web") else "Procfile web"
        entry.update(_choice(s, repo, tree, data["app"], None, where, processes, label))
    except GitdError as exc:  # buildpacks:set does not choose a service's directory
        fix = f"change app.json services.{component.name}.build.dir"
        entry["error"] = exc.message.replace("change it with buildpacks:set APP --dir DIR", fix)
    return entry


def _choice(s: Session, repo, tree, app: str, forced: str | None, where: str, processes: dict,
            web_label: str) -> dict:
    """The buildpack for the files of `tree` (`where` in the repository)."""
    work = s.settings.work_dir
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix=f"{app}-show-") as tmp:
        source = Path(tmp) / "src"
        checkout.export(repo, tree, source)
        buildpack, reason = buildpacks.detect(source, forced, build_dir=where)
        found = {"selected": buildpack.name, "reason": reason}
        if isinstance(buildpack, StackBuildpack):
            plan = buildpack.plan(source, processes)
            found["reason"] = reason if reason == SET_REASON else plan.reason
            found["stack"] = {"web": web_label if processes.get("web") else plan.web,
                              "notes": plan.notes}
            found["dockerfile"] = render(plan, s.settings.base_images,
                                         stage_label(s.settings.instance, app))
        elif buildpack.name == "dockerfile":
            found["dockerfile"] = checkout.read_file(repo, tree, "Dockerfile")
        return found




# --- verbs ------------------------------------------------------------------


def show(s: Session, app: str) -> dict:
    """What the next build of the deploy branch's commit would use, and why;
    the settings, and what the live release was built with."""
    s.app(app)
    return _resolve(s, app)


def dockerfile(s: Session, app: str) -> str:
    """The Dockerfile the next build uses (generated for a stack)."""
    data = show(s, app)
    if data["error"]:
        raise BuildError(data["error"])
    if data["services"]:
        names = ", ".join(c["name"] for c in data["services"])
        raise UsageError(f"{app} builds one image per app.json service ({names}): "
                         "--dockerfile shows a single image's; `buildpacks:show "
                         f"{app} --json` holds each service's")
    if data["dockerfile"] is not None:
        return data["dockerfile"]
    if data["selected"] == "nix":
        raise UsageError(f"{app} builds with nix: its image comes from flake.nix, "
                         "not from a Dockerfile")
    if data["commit"] is None:
        raise UsageError(f"{app} has no push yet: nothing to build a Dockerfile from")
    raise UsageError(f"no Dockerfile for {app}")


def set_settings(s: Session, app: str, buildpack: str | None = None, *,
                 build_dir: str | None = None, attr: str | None = None,
                 package: str | None = None) -> dict:
    """Choose the buildpack, the build directory ("." or "": the root) or
    the flake attribute (`attr`: an image; `package`: a closure, one of
    them). Settings not named stay as they are."""
    s.require_admin()
    found = s.app(app)
    if all(v is None for v in (buildpack, build_dir, attr, package)):
        raise UsageError("nothing to set: name a buildpack, --dir, --attr or --package")
    if attr is not None and package is not None:
        raise UsageError("--attr and --package exclude each other: name one")
    for what, value in (("buildpack", buildpack), ("--dir", build_dir), ("--attr", attr),
                        ("--package", package)):
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{what} must be text, not {type(value).__name__}")
    changes: dict = {}
    if buildpack is not None:
        if buildpack not in buildpacks.names():
            raise UsageError(f"unknown buildpack {buildpack!r}; "
                             f"choose one of: {', '.join(buildpacks.names())}")
        changes["buildpack"] = buildpack
    if build_dir is not None:
        changes["build_dir"] = validate.build_dir(build_dir) or None
    if attr is not None or package is not None:
        options = dict(found.settings.get("buildpack_options") or {})
        options.pop("image_attr", None)
        options.pop("package_attr", None)  # one choice at a time
        if attr is not None:
            options["image_attr"] = validate.attr_name(attr, "--attr")
        else:
            options["package_attr"] = validate.attr_name(package, "--package")
        changes["buildpack_options"] = options
    return _settings_now(app, s.store.update_app_settings(app, **changes))


def unset(s: Session, app: str, names: list[str] = ()) -> dict:
    """Remove the settings named (buildpack, dir, attr, package); all of
    them when none is named."""
    s.require_admin()
    found = s.app(app)
    for name in names:
        if not isinstance(name, str) or name not in UNSET_KEYS:
            raise UsageError(f"cannot unset {name!r}; choose from: {', '.join(UNSET_KEYS)}")
    if not names:
        return clear(s, app)
    changes: dict = {}
    options = dict(found.settings.get("buildpack_options") or {})
    for name in names:
        if name == "buildpack":
            changes["buildpack"] = None
        elif name == "dir":
            changes["build_dir"] = None
        else:
            options.pop("image_attr" if name == "attr" else "package_attr", None)
            changes["buildpack_options"] = options or None
    return _settings_now(app, s.store.update_app_settings(app, **changes))


def clear(s: Session, app: str) -> dict:
    """Every buildpack setting goes: the next push detects its buildpack."""
    s.require_admin()
    s.app(app)
    settings = s.store.update_app_settings(app, buildpack=None, build_dir=None,
                                           buildpack_options=None)
    return {**_settings_now(app, settings), "cleared": True}


def _settings_now(app: str, app_settings: dict) -> dict:
    return {"app": app, **settings_of(app_settings), "cleared": False}

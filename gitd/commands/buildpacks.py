"""buildpacks:show, buildpacks:set, buildpacks:unset: which builder a push
uses, from which directory of the repository, and which flake attribute.

Without settings a push is built from the repository's root: with Nix when
a `flake.nix` is there, else with its `Dockerfile`. The settings live in the
app's settings (`buildpack`, `build_dir`, `buildpack_options`) and apply from
the next push.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import buildpacks
from gitd import gitserve
from gitd.core.validate import attr_name, build_dir
from gitd.commands import app_parser, command
from gitd.core.errors import BuildError, GitdError, UsageError
from buildpacks.stacks import StackBuildpack, render, stage_label
from hooks import checkout, procfile

SET_REASON = "set with buildpacks:set"
OPTION_FLAGS = {"image_attr": "--attr", "package_attr": "--package"}
UNSET_KEYS = ("buildpack", "dir", "attr", "package")


def _settings(app) -> dict:
    s = app.settings
    return {"buildpack": s.get("buildpack"), "build_dir": s.get("build_dir", ""),
            "options": dict(s.get("buildpack_options") or {})}


def _describe_settings(data: dict) -> str:
    parts = [data["buildpack"] or "auto-detect"]
    if data["build_dir"]:
        parts.append(f"dir {data['build_dir']}/")
    for option, value in sorted(data["options"].items()):
        parts.append(f"{OPTION_FLAGS.get(option, option).lstrip('-')} {value}")
    return ", ".join(parts)


def _parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    # With exit_on_error=False, argparse raises some errors (a missing value,
    # two exclusive options) instead of calling error(): make them usage errors.
    try:
        return p.parse_intermixed_args(argv)  # `APP --dir x nix` too
    except argparse.ArgumentError as exc:
        raise UsageError(f"{exc}\nusage: {p.usage}")


# --- resolving against the pushed code --------------------------------------


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


def resolve(ctx, name: str) -> dict:
    """What the next build of the deploy branch's commit would use, and why."""
    app = ctx.store.get_app(name)
    data = {"app": name, **_settings(app)}
    current = ctx.store.current_release(name)
    data["last_build"] = ({"release": current.version, "buildpack": current.buildpack,
                           "commit": current.commit} if current else None)
    repo = gitserve.open_repo(ctx.settings.repos_dir, name)
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
            _detect(ctx, repo, found[1], data)
        except (BuildError, UsageError) as exc:  # UsageError: a malformed app.json
            data["error"] = exc.message
        return data
    finally:
        repo.close()


def _detect(ctx, repo, commit: bytes, data: dict) -> None:
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
        data["services"] = [_service(ctx, repo, commit, data, c) for c in declared]
        return
    processes = procfile.parse(checkout.read_file(repo, tree, "Procfile"))
    data.update(_choice(ctx, repo, tree, data["app"], data["buildpack"], data["build_dir"],
                        processes, "Procfile web"))


def _service(ctx, repo, commit: bytes, data: dict, component) -> dict:
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
        entry.update(_choice(ctx, repo, tree, data["app"], None, where, processes, label))
    except GitdError as exc:  # buildpacks:set does not choose a service's directory
        fix = f"change app.json services.{component.name}.build.dir"
        entry["error"] = exc.message.replace("change it with buildpacks:set APP --dir DIR", fix)
    return entry


def _choice(ctx, repo, tree, app: str, forced: str | None, where: str, processes: dict,
            web_label: str) -> dict:
    """The buildpack for the files of `tree` (`where` in the repository)."""
    work = ctx.settings.work_dir
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
            found["dockerfile"] = render(plan, ctx.settings.base_images,
                                         stage_label(ctx.settings.instance, app))
        elif buildpack.name == "dockerfile":
            found["dockerfile"] = checkout.read_file(repo, tree, "Dockerfile")
        return found


# --- commands ---------------------------------------------------------------


@command("buildpacks:show", "buildpacks:show APP [--dockerfile] [--json]",
         "Show which buildpack the next push uses, and why", admin=False, help="""
Resolved against the deploy branch's commit (main, or master): the app's
setting (buildpacks:set) wins, else a flake.nix at the build root (nix), else
a Dockerfile (dockerfile), else the first stack detected, in this order:
python (requirements.txt, pyproject.toml, Pipfile), node (package.json),
go (go.mod), rust (Cargo.toml), ruby (Gemfile), static (index.html, or a
package.json with a build script and no start script). Also shows the build
directory, the flake attribute options, and what the live release was built
with.
--dockerfile   print the Dockerfile the build will use (generated for a stack)""")
def show(ctx, argv):
    p = app_parser("buildpacks:show", json_flag=True)
    p.add_argument("--dockerfile", action="store_true")
    args = _parse(p, argv)
    ctx.app(args.app)
    data = resolve(ctx, args.app)
    if args.dockerfile:
        return _show_dockerfile(ctx, data)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {args.app} buildpack")
    if data["error"]:
        choice = f"none ({data['error']})"
    elif data["selected"]:
        choice = f"{data['selected']} ({data['reason']})"
    else:
        choice = data["reason"]
    ctx.out(f"buildpack:   {choice}")
    if data.get("stack"):
        if data["stack"]["web"]:
            ctx.out(f"web:         {data['stack']['web']}")
        for note in data["stack"]["notes"]:
            ctx.out(f"             {note}")
    for service in data.get("services") or ():
        _show_service(ctx, service)
    where = f"{data['build_dir']}/" if data["build_dir"] else "/ (the repository's root)"
    ctx.out(f"build dir:   {where}")
    for option, value in sorted(data["options"].items()):
        ctx.out(f"{option + ':':<12} {value}")
    if data["commit"]:
        ctx.out(f"commit:      {data['commit'][:8]} ({data['branch']})")
    last = data["last_build"]
    if last:
        ctx.out(f"live:        v{last['release']} built with {last['buildpack']}")
    if not (data["buildpack"] or data["build_dir"] or data["options"]):
        ctx.out("settings:    none (buildpacks:set to choose)")


@command("buildpacks:set", "buildpacks:set APP [BUILDPACK] [--dir DIR] [--attr NAME | "
         "--package NAME] [--clear]", "Choose the buildpack, build directory or flake attribute",
         help="""
BUILDPACK           nix, dockerfile, or a stack: python, node, go, rust, ruby,
                    static; used even when another would be detected
--dir DIR           build from this directory of the repository (monorepos);
                    `--dir .` builds from the root again
--attr NAME         nix: load the image packages.<system>.NAME
                    (dockerTools.buildLayeredImage or streamLayeredImage)
--package NAME      nix: build packages.<system>.NAME and make an image of
                    its closure
--clear             remove every buildpack setting (same as buildpacks:unset)
Settings not named stay as they are. They apply from the next push.""")
def set_(ctx, argv):
    p = app_parser("buildpacks:set")
    p.add_argument("buildpack", nargs="?")
    p.add_argument("--dir", dest="build_dir")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--attr")
    choice.add_argument("--package")
    p.add_argument("--clear", action="store_true")
    args = _parse(p, argv)
    app = ctx.app(args.app)
    given = [args.buildpack, args.build_dir, args.attr, args.package]
    if args.clear:
        if any(v is not None for v in given):
            raise UsageError("--clear takes no other settings")
        return _clear(ctx, args.app)
    if all(v is None for v in given):
        raise UsageError("nothing to set: name a buildpack, --dir, --attr or --package\n"
                         f"usage: {p.usage}")
    changes: dict = {}
    if args.buildpack is not None:
        if args.buildpack not in buildpacks.names():
            raise UsageError(f"unknown buildpack {args.buildpack!r}; "
                             f"choose one of: {', '.join(buildpacks.names())}")
        changes["buildpack"] = args.buildpack
    if args.build_dir is not None:
        changes["build_dir"] = build_dir(args.build_dir) or None
    if args.attr is not None or args.package is not None:
        options = dict(app.settings.get("buildpack_options") or {})
        options.pop("image_attr", None)
        options.pop("package_attr", None)  # one choice at a time
        if args.attr is not None:
            options["image_attr"] = attr_name(args.attr, "--attr")
        else:
            options["package_attr"] = attr_name(args.package, "--package")
        changes["buildpack_options"] = options
    settings = ctx.store.update_app_settings(args.app, **changes)
    data = {"buildpack": settings.get("buildpack"), "build_dir": settings.get("build_dir", ""),
            "options": settings.get("buildpack_options") or {}}
    ctx.out(f"-----> Buildpack of {args.app}: {_describe_settings(data)}")
    if data["buildpack"] == "dockerfile" and data["options"]:
        ctx.err(" !     --attr and --package apply to the nix buildpack only")
    ctx.out("       applies from the next push")


@command("buildpacks:unset", "buildpacks:unset APP [buildpack|dir|attr|package ...]",
         "Remove buildpack settings (all of them by default)", help="""
Without names, removes every buildpack setting: the next push detects its
buildpack from the repository's root again.""")
def unset(ctx, argv):
    p = app_parser("buildpacks:unset")
    p.add_argument("names", nargs="*")
    args = _parse(p, argv)
    app = ctx.app(args.app)
    for name in args.names:
        if name not in UNSET_KEYS:
            raise UsageError(f"cannot unset {name!r}; choose from: {', '.join(UNSET_KEYS)}")
    if not args.names:
        return _clear(ctx, args.app)
    changes: dict = {}
    options = dict(app.settings.get("buildpack_options") or {})
    for name in args.names:
        if name == "buildpack":
            changes["buildpack"] = None
        elif name == "dir":
            changes["build_dir"] = None
        else:
            options.pop("image_attr" if name == "attr" else "package_attr", None)
            changes["buildpack_options"] = options or None
    settings = ctx.store.update_app_settings(args.app, **changes)
    data = {"buildpack": settings.get("buildpack"), "build_dir": settings.get("build_dir", ""),
            "options": settings.get("buildpack_options") or {}}
    ctx.out(f"-----> Buildpack of {args.app}: {_describe_settings(data)}")


def _show_service(ctx, service: dict) -> None:
    build = service["build"]
    where = f"dir {build['dir']}/" if "dir" in build else f"flake attribute {build['flake_attr']}"
    if service["error"]:
        ctx.out(f"service {service['name']}: none ({service['error']}), {where}")
        return
    ctx.out(f"service {service['name']}: {service['selected']} ({service['reason']}), {where}")
    processes, stack = service["processes"], service["stack"]
    for process, command_line in sorted(processes.items()):
        ctx.out(f"  {process + ':':<10} {command_line}")
    if stack and stack["web"] and "web" not in processes:  # the stack's own web convention
        ctx.out(f"  {'web:':<10} {stack['web']}")
    for note in (stack or {}).get("notes", ()):
        ctx.out(f"             {note}")


def _show_dockerfile(ctx, data: dict) -> None:
    if data["error"]:
        raise BuildError(data["error"])
    if data["services"]:
        names = ", ".join(s["name"] for s in data["services"])
        raise UsageError(f"{data['app']} builds one image per app.json service ({names}): "
                         "--dockerfile shows a single image's; `buildpacks:show "
                         f"{data['app']} --json` holds each service's")
    if data["dockerfile"] is not None:
        ctx.out(data["dockerfile"].rstrip("\n"))
    elif data["selected"] == "nix":
        raise UsageError(f"{data['app']} builds with nix: its image comes from flake.nix, "
                         "not from a Dockerfile")
    elif data["commit"] is None:
        raise UsageError(f"{data['app']} has no push yet: nothing to build a Dockerfile from")
    else:
        raise UsageError(f"no Dockerfile for {data['app']}")


def _clear(ctx, app: str) -> None:
    ctx.store.update_app_settings(app, buildpack=None, build_dir=None, buildpack_options=None)
    ctx.out(f"-----> Buildpack settings of {app} removed: the next push detects its buildpack")


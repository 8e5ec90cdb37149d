"""buildpacks:show, buildpacks:set, buildpacks:unset: the SSH face of
gitd.verbs.buildpacks (which builder a push uses, from which directory of the
repository, and which flake attribute)."""

from __future__ import annotations

import argparse

from gitd.commands.base import app_parser, command
from gitd.core.errors import UsageError
from gitd.verbs import buildpacks

OPTION_FLAGS = {"image_attr": "--attr", "package_attr": "--package"}


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
    if args.dockerfile:
        ctx.out(buildpacks.dockerfile(ctx, args.app).rstrip("\n"))
        return
    data = buildpacks.show(ctx, args.app)
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
    ctx.app(args.app)
    given = [args.buildpack, args.build_dir, args.attr, args.package]
    if args.clear:
        if any(v is not None for v in given):
            raise UsageError("--clear takes no other settings")
        return say_settings(ctx, buildpacks.clear(ctx, args.app))
    if all(v is None for v in given):
        raise UsageError("nothing to set: name a buildpack, --dir, --attr or --package\n"
                         f"usage: {p.usage}")
    data = buildpacks.set_settings(ctx, args.app, args.buildpack, build_dir=args.build_dir,
                                   attr=args.attr, package=args.package)
    say_settings(ctx, data)
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
    say_settings(ctx, buildpacks.unset(ctx, args.app, args.names))


def say_settings(ctx, data: dict) -> None:
    if data["cleared"]:
        ctx.out(f"-----> Buildpack settings of {data['app']} removed: "
                "the next push detects its buildpack")
    else:
        ctx.out(f"-----> Buildpack of {data['app']}: {_describe_settings(data)}")


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

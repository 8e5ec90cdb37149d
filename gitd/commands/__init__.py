"""Admin commands: `ssh paas <namespace>:<verb> ARGS`, one module a namespace.

Each verb registers itself with `@command`; `dispatch` checks access, parses
and runs it. Commands raise GitdError; the SSH layer prints it.
"""

from __future__ import annotations

import difflib

from gitd.commands.base import COMMANDS, NAMESPACE_ORDER, Command, Context  # noqa: F401 - the front door
from gitd.core.errors import UsageError


def _load_modules() -> None:
    from gitd.commands import apps  # noqa: F401
    for module in ("config", "domains", "ps", "releases", "logs", "run", "checks",
                   "buildpacks", "resources", "services", "storage", "keys", "certs", "https",
                   "nodes", "git", "tokens", "deployments", "notify", "maintenance", "previews", "cron"):
        try:
            __import__(f"gitd.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gitd.commands.{module}":
                raise


def dispatch(ctx: Context, argv: list[str]) -> int:
    _load_modules()
    name, args = argv[0], argv[1:]
    if name in ("help", "--help", "-h"):
        return show_help(ctx, args)
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise UsageError(f"unknown command {name!r}{_closest_hint(ctx, name)}; "
                         "run `help` for the list")
    if args[:1] in (["--help"], ["-h"]):
        return show_command_help(ctx, cmd)
    if cmd.admin:
        ctx.require_admin()
    if ctx.has_pty and not cmd.pty:
        raise UsageError(f"{name} does not take a pty; run it without ssh -t")
    ctx.command = name
    status = cmd.func(ctx, args)
    return status or 0


def _closest_hint(ctx: Context, name: str) -> str:
    """`; did you mean apps:destroy?` for a typo of a command the caller may run."""
    allowed = [c.name for c in COMMANDS.values() if ctx.key is None or ctx.key.is_admin or not c.admin]
    close = difflib.get_close_matches(name[:100], allowed, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def show_command_help(ctx: Context, cmd: Command) -> int:
    ctx.out(f"usage: {cmd.usage}")
    ctx.out("")
    ctx.out(f"  {cmd.summary}")
    if cmd.help:
        ctx.out("")
        for line in cmd.help.splitlines():
            ctx.out(f"  {line}".rstrip())
    return 0


def show_help(ctx: Context, args: list[str] | None = None) -> int:
    _load_modules()
    args = args or []
    if args:
        topic = args[0]
        matching = sorted((c for c in COMMANDS.values() if c.name.split(":")[0] == topic),
                          key=lambda c: c.name)
        if ":" in topic or len(matching) < 2:
            if topic not in COMMANDS:
                raise UsageError(f"no help for {topic!r}; run `help` for the list")
            return show_command_help(ctx, COMMANDS[topic])
        _print_table(ctx, matching)
        ctx.out("")
        ctx.out(f"`COMMAND --help` for one of them, e.g. `{matching[-1].name} --help`")
        return 0
    ctx.out("gitd: push to deploy.  git push ssh://git@HOST:PORT/APP main")
    ctx.out("")
    ctx.out("Commands (ssh -p PORT git@HOST COMMAND ARGS; `help NAMESPACE` for more):")
    ordered = sorted(COMMANDS.values(), key=lambda c: (_ns_rank(c.name), c.name))
    _print_table(ctx, [c for c in ordered if ctx.key is None or ctx.key.is_admin or not c.admin])
    return 0


def _ns_rank(name: str) -> int:
    ns = name.split(":")[0]
    return NAMESPACE_ORDER.index(ns) if ns in NAMESPACE_ORDER else len(NAMESPACE_ORDER)


HELP_USAGE_WIDTH = 40


def _print_table(ctx: Context, cmds: list[Command]) -> None:
    width = min(HELP_USAGE_WIDTH, max(len(c.usage) for c in cmds))
    for c in cmds:
        if len(c.usage) > width:  # a long usage gets a line of its own
            ctx.out(f"  {c.usage}")
            ctx.out(f"  {'':{width}}  {c.summary}")
        else:
            ctx.out(f"  {c.usage.ljust(width)}  {c.summary}")




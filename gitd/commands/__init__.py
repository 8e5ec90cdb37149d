"""Admin commands: `ssh paas <namespace>:<verb> ARGS`, one module a namespace.

Each verb registers itself with `@command`; `dispatch` checks access, parses
and runs it. Commands raise GitdError; the SSH layer prints it.
"""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass, field
from typing import Callable

from gitd.core.errors import UsageError
from gitd.verbs import Session, iso_time  # noqa: F401 - commands import iso_time from here


@dataclass
class Command:
    name: str
    func: Callable
    usage: str
    summary: str
    admin: bool  # False: keys granted on the app may run it too
    help: str = ""
    pty: bool = False  # may run with a pty (ssh -t)


COMMANDS: dict[str, Command] = {}
NAMESPACE_ORDER = ["apps", "config", "domains", "ps", "releases", "logs", "run", "checks",
                   "buildpacks", "resources", "services", "storage", "keys", "certs", "https",
                   "nodes", "git", "tokens", "deployments"]


def command(name: str, usage: str, summary: str, admin: bool = True, help: str = "",
            pty: bool = False):
    def register(func):
        COMMANDS[name] = Command(name, func, usage, summary, admin, help.strip(), pty)
        return func
    return register


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message}\nusage: {self.usage}")

    def parse_known_args(self, args=None, namespace=None):
        try:
            return super().parse_known_args(args, namespace)
        except argparse.ArgumentError as exc:  # exit_on_error=False raises these as they are
            self.error(str(exc))


def parser(cmd_name: str, json_flag: bool = False) -> argparse.ArgumentParser:
    usage = COMMANDS[cmd_name].usage if cmd_name in COMMANDS else cmd_name
    p = _Parser(prog=cmd_name, usage=usage, add_help=False, exit_on_error=False,
                allow_abbrev=False)
    if json_flag:
        p.add_argument("--json", action="store_true")
    return p


def app_parser(cmd_name: str, json_flag: bool = False) -> argparse.ArgumentParser:
    """A parser whose first positional argument is the app."""
    p = parser(cmd_name, json_flag=json_flag)
    p.add_argument("app")
    return p


def parse_app(ctx: "Context", p: argparse.ArgumentParser, argv: list[str]):
    """Parse, then validate the app and check the caller may touch it."""
    args = p.parse_args(argv)
    ctx.app(args.app)
    return args


@dataclass
class Context(Session):
    """A verb's session over SSH: what the caller types and reads on its channel."""
    bridge: object  # gitd.bridge.ThreadBridge
    has_pty: bool = False
    command: str = ""
    extra: dict = field(default_factory=dict)

    def out(self, text: str = "") -> None:
        self.bridge.out(text + "\n")

    def err(self, text: str) -> None:
        self.bridge.err(text + "\n")

    def progress(self, line: str) -> None:
        self.out(line)

    def json(self, data) -> None:
        self.out(json.dumps(data, indent=2, sort_keys=True, default=str))

    def read_stdin(self, limit: int = 1024 * 1024) -> str:
        data = self.bridge.read_all(limit)
        if len(data) > limit:
            raise UsageError(f"input is larger than {limit} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("input is not UTF-8 text") from None

    def progress_sink(self):
        return self.progress


def _load_modules() -> None:
    from gitd.commands import apps  # noqa: F401
    for module in ("config", "domains", "ps", "releases", "logs", "run", "checks",
                   "buildpacks", "resources", "services", "storage", "keys", "certs", "https",
                   "nodes", "git", "tokens", "deployments"):
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


def one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise UsageError(f"{what} must be one of {', '.join(allowed)}")
    return value


def duration(seconds: float) -> str:
    """3s, 4m 12s, 2h 5m, 3d 4h."""
    s = int(max(0, seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                      ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {(s % size) // sub_size}{sub}"
    return f"{s}s"


def print_rows(ctx: Context, rows: list[list[str]]) -> None:
    """Columns aligned to their widest cell; the last column is not padded."""
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [str(row[-1])]
        ctx.out("  ".join(cells).rstrip())

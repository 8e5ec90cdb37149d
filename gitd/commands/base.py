"""What every SSH command module uses: the registry (`@command`), argv
parsers that raise UsageError, the Context (a verb's Session that prints on
the SSH channel) and text formatting. gitd/commands/__init__.py dispatches."""

from __future__ import annotations

import argparse
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
                   "nodes", "git", "tokens", "deployments", "notify", "maintenance", "previews", "cron"]


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

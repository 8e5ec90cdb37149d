"""config, config:get, config:set, config:unset: the SSH face of
gitd.verbs.config (the app's environment)."""

from __future__ import annotations

import shlex

from gitd.core import validate
from gitd.commands.base import app_parser, command
from gitd.core.errors import UsageError
from gitd.verbs import config
from gitd.verbs.config import replace_config  # noqa: F401 - tests' deployed() imports it here

STDIN_VALUE = "@-"


def parse_pairs(pairs: list[str], read_stdin) -> dict[str, str]:
    """`K=V ...` -> {K: V}; `K=@-` takes the value from stdin (one trailing
    newline dropped). Values may hold anything but NUL."""
    values: dict[str, str] = {}
    from_stdin = False
    for pair in pairs:
        key, value = validate.config_pair(pair)
        config.check_key(key)
        if value == STDIN_VALUE:
            if from_stdin:
                raise UsageError(f"only one value can come from stdin ({key}={STDIN_VALUE})")
            from_stdin = True
            value = _strip_newline(read_stdin())
        values[key] = config.check_value(key, value)
    return values


def _strip_newline(text: str) -> str:
    for end in ("\r\n", "\n"):
        if text.endswith(end):
            return text[: -len(end)]
    return text


def say_applied(ctx, done: dict) -> None:
    """What a config change did (config:set, config:unset, services:link...)."""
    app, description = done["app"], done["description"]
    if done["outcome"] == "unchanged":
        ctx.out(f"-----> {app}: config unchanged")
    elif done["outcome"] == "stored":
        ctx.out(f"-----> {description} on {app}: stored; the first push uses it")
    elif done["outcome"] == "pending":
        ctx.out(f"-----> {description} on {app}: stored; the next deploy or "
                f"`ps:restart {app}` uses it (v{done['running']} keeps running as it is)")


def _parser(name: str, json_flag: bool = False, restart_flag: bool = False):
    p = app_parser(name, json_flag=json_flag)
    if restart_flag:
        p.add_argument("--no-restart", action="store_true")
    return p


@command("config", "config APP [--json | --shell]", "Show an app's config vars", help="""
Config vars are the containers' environment. They hold secrets: only admins
see them. --shell prints KEY='value' lines that a shell can read back.""")
def show(ctx, argv):
    p = _parser("config", json_flag=True)
    p.add_argument("--shell", action="store_true")
    args = p.parse_args(argv)
    values = config.show(ctx, args.app)
    if args.json:
        ctx.json(values)
        return
    if args.shell:
        for key, value in values.items():
            ctx.out(f"{key}={shlex.quote(value)}")
        return
    ctx.out(f"=== {args.app} config vars")
    width = max((len(k) for k in values), default=0) + 1
    for key, value in values.items():
        ctx.out(f"{(key + ':').ljust(width)}  " + value.replace("\n", "\n" + " " * (width + 2)))
    if not values:
        ctx.out(f"none (config:set {args.app} KEY=VALUE)")
    running = config.pending(ctx, args.app, values)
    if running is not None:
        ctx.err(f" !     v{running} runs with other values (set with --no-restart); "
                f"`ps:restart {args.app}` applies these")


@command("config:get", "config:get APP KEY", "Print one config value")
def get(ctx, argv):
    p = _parser("config:get")
    p.add_argument("key")
    args = p.parse_args(argv)
    ctx.out(config.get(ctx, args.app, args.key))


@command("config:set", "config:set APP KEY=VALUE [KEY=VALUE ...] [--no-restart]",
         "Set config vars and restart the app with them", help="""
Makes a new release with the new values and deploys it (zero downtime);
if that deploy fails, the old values are put back and the old release keeps
serving. --no-restart only stores them, for the next deploy or ps:restart.

Values may hold spaces, quotes, '=' and newlines. Over ssh the command line
is split again on the server, so quote twice:
    ssh paas config:set APP 'GREETING="hello world"'
KEY=@- reads the value from stdin (one trailing newline dropped):
    ssh paas config:set APP TLS_KEY=@- < key.pem""")
def set_(ctx, argv):
    p = _parser("config:set", restart_flag=True)
    p.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    args = p.parse_args(argv)
    ctx.app(args.app)  # access first: stdin is read only for a caller who may set
    values = parse_pairs(args.pairs, ctx.read_stdin)
    say_applied(ctx, config.set_vars(ctx, args.app, values, restart=not args.no_restart))


@command("config:unset", "config:unset APP KEY [KEY ...] [--no-restart]",
         "Remove config vars and restart the app without them", help="""
Like config:set: a new release, deployed at once unless --no-restart.
Naming a key that is not set is an error and changes nothing.""")
def unset(ctx, argv):
    p = _parser("config:unset", restart_flag=True)
    p.add_argument("keys", nargs="+", metavar="KEY")
    args = p.parse_args(argv)
    say_applied(ctx, config.unset(ctx, args.app, args.keys, restart=not args.no_restart))

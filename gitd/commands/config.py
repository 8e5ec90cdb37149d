"""config, config:get, config:set, config:unset: the app's environment.

Config is given to the containers as their environment when they start; it
is never baked into an image. A change makes a new release (kind "config")
from the current release's image and deploys it; a failed deploy puts the
old values back so what is stored matches what runs.
"""

from __future__ import annotations

import shlex

from gitd.core import validate
from gitd.commands import app_parser, command, parse_app
from gitd.core.errors import GitdError, NotFound, UsageError

STDIN_VALUE = "@-"
RESERVED_PREFIX = "GITD_"
RESERVED_KEYS = ("DYNO",)


def check_key(key: str) -> str:
    validate.config_key(key)
    if key.startswith(RESERVED_PREFIX) or key in RESERVED_KEYS:
        raise UsageError(f"{key} is set by gitd itself and cannot be changed")
    return key


def parse_pairs(pairs: list[str], read_stdin) -> dict[str, str]:
    """`K=V ...` -> {K: V}; `K=@-` takes the value from stdin (one trailing
    newline dropped). Values may hold anything but NUL."""
    values: dict[str, str] = {}
    from_stdin = False
    for pair in pairs:
        key, value = validate.config_pair(pair)
        check_key(key)
        if value == STDIN_VALUE:
            if from_stdin:
                raise UsageError(f"only one value can come from stdin ({key}={STDIN_VALUE})")
            from_stdin = True
            value = _strip_newline(read_stdin())
        if "\0" in value:
            raise UsageError(f"the value of {key} holds a NUL byte")
        if key == "PORT":  # gitd routes to it: it must be a port
            validate.port(value)
        values[key] = value
    return values


def _strip_newline(text: str) -> str:
    for end in ("\r\n", "\n"):
        if text.endswith(end):
            return text[: -len(end)]
    return text


def replace_config(store, app: str, old: dict, new: dict) -> None:
    """Make the stored config `new` (it was `old`)."""
    store.set_config(app, new, unset=[k for k in old if k not in new])


def apply_config(ctx, app: str, change, description: str, restart: bool = True) -> None:
    """Change the stored config under the app's lock and, unless told not
    to, release it. `change(old) -> new` may raise to refuse."""
    with ctx.lock(app):
        old = ctx.store.get_config(app)
        new = change(dict(old))
        if new == old:
            ctx.out(f"-----> {app}: config unchanged")
            return
        replace_config(ctx.store, app, old, new)
        current = ctx.store.current_release(app)
        if current is None:
            ctx.out(f"-----> {description} on {app}: stored; the first push uses it")
        elif not restart:
            ctx.out(f"-----> {description} on {app}: stored; the next deploy or "
                    f"`ps:restart {app}` uses it (v{current.version} keeps running as it is)")
        else:
            _release(ctx, current, old, new, description)


def _release(ctx, current, old: dict, new: dict, description: str) -> None:
    """Deploy `new` as a config release; on failure store `old` again."""
    app = current.app
    try:
        ctx.gitd.pipeline.release(app, current, new, kind="config", description=description,
                                  by=ctx.key.name, sink=ctx.progress_sink())
    except Exception as exc:  # any failure puts the old state back
        replace_config(ctx.store, app, new, old)
        if not isinstance(exc, GitdError):
            raise
        raise GitdError(f"{exc}\nconfig of {app} left as it was; "
                        f"v{current.version} keeps serving") from exc


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
    args = parse_app(ctx, p, argv)
    config = ctx.store.get_config(args.app)
    if args.json:
        ctx.json(config)
        return
    if args.shell:
        for key, value in config.items():
            ctx.out(f"{key}={shlex.quote(value)}")
        return
    ctx.out(f"=== {args.app} config vars")
    width = max((len(k) for k in config), default=0) + 1
    for key, value in config.items():
        ctx.out(f"{(key + ':').ljust(width)}  " + value.replace("\n", "\n" + " " * (width + 2)))
    if not config:
        ctx.out(f"none (config:set {args.app} KEY=VALUE)")
    _note_pending(ctx, args.app, config)


def _note_pending(ctx, app: str, config: dict) -> None:
    current = ctx.store.current_release(app)
    if current and current.config != config:
        ctx.err(f" !     v{current.version} runs with other values (set with --no-restart); "
                f"`ps:restart {app}` applies these")


@command("config:get", "config:get APP KEY", "Print one config value")
def get(ctx, argv):
    p = _parser("config:get")
    p.add_argument("key")
    args = parse_app(ctx, p, argv)
    validate.config_key(args.key)
    config = ctx.store.get_config(args.app)
    if args.key not in config:
        raise NotFound(f"{args.key} is not set on {args.app}")
    ctx.out(config[args.key])


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
    args = parse_app(ctx, p, argv)
    values = parse_pairs(args.pairs, ctx.read_stdin)
    apply_config(ctx, args.app, lambda old: {**old, **values},
                 f"Set {', '.join(values)}", restart=not args.no_restart)


@command("config:unset", "config:unset APP KEY [KEY ...] [--no-restart]",
         "Remove config vars and restart the app without them", help="""
Like config:set: a new release, deployed at once unless --no-restart.
Naming a key that is not set is an error and changes nothing.""")
def unset(ctx, argv):
    p = _parser("config:unset", restart_flag=True)
    p.add_argument("keys", nargs="+", metavar="KEY")
    args = parse_app(ctx, p, argv)
    keys = [check_key(k) for k in args.keys]

    def change(old: dict) -> dict:
        missing = [k for k in keys if k not in old]
        if missing:
            raise NotFound(f"not set on {args.app}: {', '.join(missing)}; nothing changed")
        return {k: v for k, v in old.items() if k not in keys}

    apply_config(ctx, args.app, change, f"Unset {', '.join(keys)}", restart=not args.no_restart)

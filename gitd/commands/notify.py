"""notify, notify:add, notify:remove: the SSH face of gitd.verbs.notify
(URLs told of an app's deploys, rollbacks, failed backups...)."""

from __future__ import annotations

from gitd.commands.base import command, parser, print_rows
from gitd.core import notify as events
from gitd.core.errors import UsageError
from gitd.verbs import notify

_SCOPE_HELP = "--global (admins): every app's events instead of one app's."


def _scoped_parser(name: str, json_flag: bool = False):
    p = parser(name, json_flag=json_flag)
    p.add_argument("--global", action="store_true", dest="everywhere")
    return p


def _app_of(args) -> str | None:
    """The app named, or None with --global; exactly one of them."""
    if args.everywhere == (args.app is not None):
        raise UsageError("name an APP or --global (not both)")
    return args.app


@command("notify:add", "notify:add APP|--global URL [--events e1,e2] [--format json|slack]",
         "Send an app's events to a URL", admin=False, help=f"""
Each event is POSTed as JSON (--format slack: {{"text": ...}}), signed with
HMAC-SHA256 of the body under a secret shown once, here:
  {events.SIGNATURE_HEADER}: sha256=<hex>
Failed deliveries are retried with backoff for {int(events.RETRY_FOR // 60)} minutes;
redirects are not followed. Events (default all): {', '.join(events.EVENTS)}.
A URL on a loopback, private or other internal address is for admins only.
{_SCOPE_HELP}""")
def add(ctx, argv):
    p = _scoped_parser("notify:add")
    p.add_argument("target", nargs="+", metavar="APP URL")
    p.add_argument("--events")
    p.add_argument("--format", dest="fmt")
    args = p.parse_args(argv)
    if len(args.target) != (1 if args.everywhere else 2):
        raise UsageError(f"usage: {p.usage}")
    args.app = None if args.everywhere else args.target[0]
    made = notify.add(ctx, _app_of(args), args.target[-1], args.events, args.fmt)
    every = len(made["events"]) == len(events.EVENTS)
    ctx.out(f"-----> Notification {made['id']} of {notify.scope_name(made['app'])}: "
            f"{made['url']} ({'every event' if every else ', '.join(made['events'])})")
    ctx.out(f"       Secret (shown only now): {made['secret']}")
    ctx.out(f"       Each delivery carries {made['signature_header']}: sha256=HMAC-SHA256(secret, body)")


@command("notify", "notify APP|--global [--json]",
         "Show an app's notification URLs and their last deliveries", admin=False,
         help=_SCOPE_HELP)
def show(ctx, argv):
    p = _scoped_parser("notify", json_flag=True)
    p.add_argument("app", nargs="?")
    args = p.parse_args(argv)
    data = notify.list_(ctx, _app_of(args))
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"=== {notify.scope_name(data['app'])} notifications")
    if not data["subscriptions"]:
        ctx.out("none: notify:add APP URL adds one")
        return
    rows = [["ID", "URL", "FORMAT", "EVENTS", "LAST DELIVERY"]]
    for sub in data["subscriptions"]:
        every = len(sub["events"]) == len(data["events"])
        rows.append([sub["id"], sub["url"], sub["format"], "all" if every else ",".join(sub["events"]),
                     describe(sub["deliveries"][0]) if sub["deliveries"] else "none yet"])
    print_rows(ctx, rows)


def describe(delivery: dict) -> str:
    result = delivery["error"] or f"HTTP {delivery['status']}"
    return f"{delivery['at']} {delivery['event']} (attempt {delivery['attempt']}): {result}"


@command("notify:remove", "notify:remove APP|--global ID", "Stop sending events to a URL",
         admin=False, help=_SCOPE_HELP)
def remove(ctx, argv):
    p = _scoped_parser("notify:remove")
    p.add_argument("target", nargs="+", metavar="APP ID")
    args = p.parse_args(argv)
    if len(args.target) != (1 if args.everywhere else 2):
        raise UsageError(f"usage: {p.usage}")
    args.app = None if args.everywhere else args.target[0]
    done = notify.remove(ctx, _app_of(args), args.target[-1])
    ctx.out(f"-----> Notification {done['removed']} of {notify.scope_name(done['app'])} removed")

"""maintenance, maintenance:on, maintenance:off: the SSH face of
gitd.verbs.maintenance (an app's routes answering 503 and a page)."""

from __future__ import annotations

from gitd.commands.base import app_parser, command
from gitd.verbs import maintenance


@command("maintenance", "maintenance APP [--json]", "Say whether an app is in maintenance",
         admin=False)
def show(ctx, argv):
    p = app_parser("maintenance", json_flag=True)
    args = p.parse_args(argv)
    state = maintenance.status(ctx, args.app)
    if args.json:
        ctx.json(state)
        return
    say_state(ctx, state)


@command("maintenance:on", "maintenance:on APP [--message TEXT]",
         "Answer every request to an app with 503 and a maintenance page", admin=False, help="""
Every route of the app (its domains and path prefixes, its app.json
services' routes, over HTTP and HTTPS) answers 503 with Retry-After and a small page showing TEXT (plain text, at
most 500 characters; quote it). Switched with no failed request; returns
once Traefik serves the page. Deploys, rollbacks and `run` still work while
it is on (migrate, then maintenance:off); a deploy leaves it on. Run again
to change the message. Needs the managed Traefik.""")
def switch_on(ctx, argv):
    p = app_parser("maintenance:on")
    p.add_argument("--message", metavar="TEXT")
    args = p.parse_args(argv)
    state = maintenance.on(ctx, args.app, args.message)
    verb = "is in maintenance" if state["changed"] else "stays in maintenance (message set)"
    ctx.out(f"-----> {args.app} {verb}: its routes answer 503 and the page")
    if not state["routed"]:
        ctx.out("       (it has no domains yet: its routes get the page once added)")


@command("maintenance:off", "maintenance:off APP", "Serve an app again after maintenance",
         admin=False, help="""
The app's releases answer again, with no failed request; returns once
Traefik no longer serves the page.""")
def switch_off(ctx, argv):
    p = app_parser("maintenance:off")
    args = p.parse_args(argv)
    state = maintenance.off(ctx, args.app)
    if state["changed"]:
        ctx.out(f"-----> {args.app} is out of maintenance: its releases answer again")
    else:
        ctx.out(f"-----> {args.app} was not in maintenance: nothing changed")


def say_state(ctx, state: dict) -> None:
    if not state["on"]:
        ctx.out(f"{state['app']}: maintenance off")
        return
    ctx.out(f"{state['app']}: maintenance on since {state['since']}")
    for line in state["message"].splitlines():
        ctx.out(f"  {line}")

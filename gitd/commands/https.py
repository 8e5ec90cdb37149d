"""https:redirect: the SSH face of gitd.verbs.https (whether plain HTTP to
an app is sent to HTTPS)."""

from __future__ import annotations

from gitd.commands.base import app_parser, command
from gitd.verbs import https


@command("https:redirect", "https:redirect APP on|off", "Redirect HTTP to HTTPS (default on)",
         help="""
With `on`, plain HTTP to each of the app's domains that has a certificate
answers with a redirect to HTTPS. The app sees the scheme in
X-Forwarded-Proto. No redeploy: the change applies within seconds.""")
def redirect(ctx, argv):
    p = app_parser("https:redirect")
    p.add_argument("state", nargs="?")
    args = p.parse_args(argv)
    done = https.redirect(ctx, args.app, args.state)
    if args.state is None:
        ctx.out(f"{args.app}: https redirect {done['redirect']}")
        return
    ctx.out(f"-----> {args.app}: HTTP "
            f"{'redirects' if done['redirect'] == 'on' else 'no longer redirects'} to HTTPS")

"""https:redirect: whether plain HTTP to an app is sent to HTTPS.

On by default: a host is redirected once it has a certificate (custom, or
issued by ACME), so nobody is sent to a certificate that does not exist yet.
"""

from __future__ import annotations

from gitd.core import certs
from hooks import tls
from gitd.commands import app_parser, command, one_of, parse_app


@command("https:redirect", "https:redirect APP on|off", "Redirect HTTP to HTTPS (default on)",
         help="""
With `on`, plain HTTP to each of the app's domains that has a certificate
answers with a redirect to HTTPS. The app sees the scheme in
X-Forwarded-Proto. No redeploy: the change applies within seconds.""")
def redirect(ctx, argv):
    p = app_parser("https:redirect")
    p.add_argument("state", nargs="?")
    args = parse_app(ctx, p, argv)
    if args.state is None:
        state = "on" if tls.redirect_enabled(ctx.store.get_app(args.app).settings) else "off"
        ctx.out(f"{args.app}: https redirect {state}")
        return
    state = one_of(args.state, ("on", "off"), "the redirect")
    certs.require_https(ctx.settings)
    ctx.store.update_app_settings(args.app, https_redirect=state)
    tls.sync_dynamic(ctx.settings, ctx.store)
    ctx.out(f"-----> {args.app}: HTTP {'redirects' if state == 'on' else 'no longer redirects'} "
            "to HTTPS")

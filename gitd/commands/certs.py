"""certs, certs:add, certs:remove: the SSH face of gitd.verbs.certs (an
app's HTTPS certificates)."""

from __future__ import annotations

from gitd.core import certs as certificates
from gitd.commands.base import app_parser, command, print_rows
from gitd.core.errors import UsageError
from gitd.verbs import certs


@command("certs", "certs APP [--json]", "Show an app's certificates: source, issuer, expiry, errors",
         admin=False, help="""
For each domain: where its certificate comes from (acme, custom, none yet),
its issuer and expiry, whether a TLS handshake with Traefik gets it
(`served`), and the last ACME error, if any.""")
def show(ctx, argv):
    p = app_parser("certs", json_flag=True)
    args = p.parse_args(argv)
    served: dict = {}
    rows = certs.show(ctx, args.app, served)
    if args.json:
        ctx.json(rows)
        return
    ctx.out(f"=== {args.app} certificates")
    if not ctx.settings.https:
        ctx.out("HTTPS is off (gitd serve --https-port 443)")
        return
    table = [["domain", "source", "issuer", "expires"]]
    for row in rows:
        expires = f"{row['expires'][:10]} ({row['days_left']:.0f} days)" if row["expires"] else "-"
        table.append([row["domain"], row["source"], row["issuer"] or "-", expires])
    print_rows(ctx, table)
    for row in rows:
        if row["served"] is False:
            other = served[row["domain"]]
            ctx.out(f" !     {row['domain']}: Traefik serves another certificate "
                    f"(issuer {certificates.describe_name(other.issuer)}, for "
                    f"{', '.join(certificates.cert_info(other).names) or 'no names'})")
        if row["acme_error"]:
            ctx.out(f" !     {row['domain']}: {row['acme_error']}")
    with_cert = [row for row in rows if row["sha256"]]
    if with_cert and all(row["served"] is None for row in with_cert):
        ctx.out(f" !     Traefik's HTTPS port ({ctx.settings.https_port}) did not answer")
    if not ctx.settings.acme:
        ctx.out("(no ACME account: set acme_email for automatic certificates)")


@command("certs:add", "certs:add APP < bundle.pem", "Install a custom certificate for an app",
         help="""
The bundle is one PEM: the certificate chain (leaf first) and its private
key. It is refused unless the key matches, the chain parses, the certificate
is valid now and it covers at least one of the app's domains. It replaces
the app's previous custom certificate; its domains stop using ACME.
Traefik would go on serving ACME certificates it holds for those domains:
they are set aside (certs:remove puts them back) and a managed Traefik is
restarted, so every app goes unanswered for a moment.""")
def add(ctx, argv):
    p = app_parser("certs:add")
    args = p.parse_args(argv)
    ctx.app(args.app)  # access first: stdin is read only for a caller who may add
    try:
        text = ctx.read_stdin()
    except UnicodeDecodeError:
        raise UsageError("the bundle is not PEM text (convert DER or PKCS#12 to PEM first)")
    added = certs.add(ctx, args.app, text)
    for host, served in added["served"].items():
        if served:
            ctx.out(f"       Traefik serves it for {host}")
        else:
            ctx.out(f" !     Traefik does not serve it for {host} yet; see `certs {args.app}`")


@command("certs:remove", "certs:remove APP", "Remove an app's custom certificate", help="""
Its domains go back to ACME (when an ACME account is set): the ACME
certificates certs:add set aside serve again at once (a managed Traefik is
restarted), others are ordered.""")
def remove(ctx, argv):
    p = app_parser("certs:remove")
    args = p.parse_args(argv)
    certs.remove(ctx, args.app)
    ctx.out(f"-----> Removed the custom certificate of {args.app}")

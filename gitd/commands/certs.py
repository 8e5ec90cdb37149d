"""certs, certs:add, certs:remove: an app's HTTPS certificates.

Certificates come from Traefik's ACME client (acme_email) or from a bundle
given with certs:add. `certs` says, per domain, which one serves it, its
issuer and expiry, and the last ACME error in words.
"""

from __future__ import annotations

from gitd.core import certs
from hooks import tls
from gitd.commands import app_parser, command, parse_app, print_rows
from gitd.core.errors import GitdError, UsageError


def certs_changed(ctx, app: str, before: frozenset[str]) -> None:
    """Custom certificates change which hosts ACME serves: a redeploy puts
    the routes right. Without ACME the file provider alone is enough."""
    tls.sync_dynamic(ctx.settings, ctx.store)
    hosts = ctx.store.domains(app)
    plan = tls.tls_plan(ctx.settings, app, hosts)
    if not ctx.settings.acme or plan.custom_hosts == before:
        return
    if ctx.store.current_release(app) is None:
        return
    ctx.gitd.pipeline.redeploy(app, ctx.progress_sink(), "Updating HTTPS routes: redeploying")


def _custom_hosts(ctx, app: str) -> frozenset[str]:
    plan = tls.tls_plan(ctx.settings, app, ctx.store.domains(app))
    return plan.custom_hosts if plan else frozenset()


@command("certs", "certs APP [--json]", "Show an app's certificates: source, issuer, expiry, errors",
         admin=False, help="""
For each domain: where its certificate comes from (acme, custom, none yet),
its issuer and expiry, whether a TLS handshake with Traefik gets it
(`served`), and the last ACME error, if any.""")
def show(ctx, argv):
    p = app_parser("certs", json_flag=True)
    args = parse_app(ctx, p, argv)
    rows = certs.domain_status(ctx.settings, args.app, ctx.store.domains(args.app))
    served = handshakes(ctx, rows)
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
                    f"(issuer {certs.describe_name(other.issuer)}, for "
                    f"{', '.join(certs.cert_info(other).names) or 'no names'})")
        if row["acme_error"]:
            ctx.out(f" !     {row['domain']}: {row['acme_error']}")
    with_cert = [row for row in rows if row["sha256"]]
    if with_cert and all(row["served"] is None for row in with_cert):
        ctx.out(f" !     Traefik's HTTPS port ({ctx.settings.https_port}) did not answer")
    if not ctx.settings.acme:
        ctx.out("(no ACME account: set acme_email for automatic certificates)")


def handshakes(ctx, rows: list[dict]) -> dict:
    """row["served"]: whether a handshake with Traefik (SNI: the domain) gets
    the certificate the row names; None when Traefik does not answer (then
    the other domains are not asked). {domain: the certificate served}."""
    served, answering = {}, ctx.settings.https
    for row in rows:
        cert = tls.served_certificate(ctx.settings, row["domain"]) \
            if answering and row["sha256"] else None
        answering = answering and (cert is not None or not row["sha256"])
        if cert is not None:
            served[row["domain"]] = cert
        row["served"] = (certs.cert_info(cert).sha256 == row["sha256"]) if cert else None
    return served


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
    args = parse_app(ctx, p, argv)
    certs.require_https(ctx.settings)
    app = args.app
    try:
        text = ctx.read_stdin()
    except UnicodeDecodeError:
        raise UsageError("the bundle is not PEM text (convert DER or PKCS#12 to PEM first)")
    bundle = certs.check_bundle(text, ctx.store.domains(app))
    with ctx.lock(app):
        before = _custom_hosts(ctx, app)
        saved = certs.read_custom(ctx.settings, app)
        certs.install_custom(ctx.settings, app, bundle)
        try:
            certs_changed(ctx, app, before)
        except GitdError as exc:
            certs.restore_custom(ctx.settings, app, saved)
            tls.sync_dynamic(ctx.settings, ctx.store)
            raise GitdError(f"{exc}\nthe certificates of {app} were left as they were") from exc
        covered = [h for h in ctx.store.domains(app) if bundle.info.covers(h)]
        ctx.out(f"-----> Installed a certificate for {', '.join(covered)} "
                f"(issuer {bundle.info.issuer}, expires {bundle.info.not_after:%Y-%m-%d})")
        let_custom_win(ctx, app, set(covered))
    report_served(ctx, app, covered, bundle.chain_pem)


def let_custom_win(ctx, app: str, hosts: set[str]) -> None:
    """Traefik may serve its ACME certificate for these hosts instead of the
    custom one (gitd.certs): a managed Traefik restarts without them, and
    with those set aside for hosts the custom one no longer covers."""
    shadowed = certs.acme_entries_for(ctx.settings, hosts)
    names = ", ".join(sorted(hosts & {n for es in shadowed.values() for e in es
                                      for n in certs.entry_names(e)}))
    child = ctx.gitd.traefik_child
    if child is None:
        if shadowed:
            ctx.out(f" !     Traefik also holds an ACME certificate for {names} and may serve "
                    f"it: stop Traefik, remove it from {ctx.settings.acme_storage}, start Traefik")
        return
    # taken out of the set-aside file only while Traefik is stopped: a
    # restart that fails leaves every certificate in one of the two files
    returning = certs.returning_set_aside(ctx.settings, app, hosts)
    if not shadowed and not returning:
        return
    if shadowed:
        ctx.out(f"-----> Restarting Traefik so that it lets go of its ACME certificate for "
                f"{names} (new connections are refused for a moment)")
    else:
        ctx.out("-----> Restarting Traefik to serve its ACME certificates for the hosts the "
                "custom one no longer covers (new connections are refused for a moment)")

    def while_stopped():  # into acme.json first: a failure between leaves them in both files
        certs.put_back_acme(ctx.settings, certs.returning_set_aside(ctx.settings, app, hosts))
        certs.release_set_aside(ctx.settings, app, hosts)
        certs.set_aside_acme(ctx.settings, app, hosts)

    child.restart(while_stopped)


def report_served(ctx, app: str, hosts: list[str], chain_pem: bytes) -> None:
    """Say "serves it" only for what a client's handshake gets."""
    for host in hosts:
        if tls.wait_served(ctx.settings, host, chain_pem):
            ctx.out(f"       Traefik serves it for {host}")
        else:
            ctx.out(f" !     Traefik does not serve it for {host} yet; see `certs {app}`")


@command("certs:remove", "certs:remove APP", "Remove an app's custom certificate", help="""
Its domains go back to ACME (when an ACME account is set): the ACME
certificates certs:add set aside serve again at once (a managed Traefik is
restarted), others are ordered.""")
def remove(ctx, argv):
    p = app_parser("certs:remove")
    args = parse_app(ctx, p, argv)
    app = args.app
    with ctx.lock(app):
        saved = certs.read_custom(ctx.settings, app)
        if saved is None:
            raise GitdError(f"{app} has no custom certificate")
        before = _custom_hosts(ctx, app)
        set_aside = certs.read_set_aside(ctx.settings, app)
        certs.remove_custom(ctx.settings, app)
        tls.sync_dynamic(ctx.settings, ctx.store)
        put_back_acme(ctx, set_aside)
        try:
            certs_changed(ctx, app, before)
        except GitdError as exc:
            certs.restore_custom(ctx.settings, app, saved)
            tls.sync_dynamic(ctx.settings, ctx.store)
            let_custom_win(ctx, app, before)
            raise GitdError(f"{exc}\nthe certificates of {app} were left as they were") from exc
    ctx.out(f"-----> Removed the custom certificate of {app}")


def put_back_acme(ctx, set_aside: dict) -> None:
    """The ACME certificates certs:add set aside serve again at once (no new
    order to the CA); without them, or without a managed Traefik, the
    redeploy asks the CA."""
    child = ctx.gitd.traefik_child
    if not set_aside or child is None:
        return
    ctx.out("-----> Restarting Traefik to serve its ACME certificate again "
            "(new connections are refused for a moment)")
    child.restart(lambda: certs.put_back_acme(ctx.settings, set_aside))

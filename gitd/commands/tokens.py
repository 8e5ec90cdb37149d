"""tokens, tokens:create, tokens:revoke: the SSH face of gitd.verbs.tokens."""

from __future__ import annotations

from gitd.commands.base import command, parser, print_rows
from gitd.verbs import tokens


@command("tokens", "tokens [--json]", "List API tokens (yours; an admin sees every key's)",
         admin=False)
def list_tokens(ctx, argv):
    args = parser("tokens", json_flag=True).parse_args(argv)
    rows = tokens.list_tokens(ctx)
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out("no tokens yet: tokens:create [--name NAME] [--expires 30d]")
        return
    print_rows(ctx, [["NAME", "KEY", "CREATED", "LAST USED", "EXPIRES"]] + [
        [t["name"], t["key"], t["created_at"], t["last_used_at"] or "never",
         (t["expires_at"] or "never") + (" (expired)" if t["expired"] else "")] for t in rows])


@command("tokens:create", "tokens:create [--name NAME] [--expires 30d]",
         "Make an API token carrying this key's powers (shown once)", admin=False, help="""
The token acts as the key that made it: an admin key's token is admin, a
deployer's reaches only the apps granted to it. It stops working when it is
revoked, when it expires (--expires 12h or 30d; default: never) or when its
key is removed. Send it as `Authorization: Bearer TOKEN`.""")
def create(ctx, argv):
    p = parser("tokens:create")
    p.add_argument("--name")
    p.add_argument("--expires")
    args = p.parse_args(argv)
    made = tokens.create(ctx, args.name, args.expires)
    ctx.out(f"-----> Created token {made['name']} for key {made['key']}"
            f" (expires {made['expires_at'] or 'never'})")
    ctx.out("       It is shown only now; keep it secret:")
    ctx.out(made["token"])


@command("tokens:revoke", "tokens:revoke NAME [--key KEY]", "Revoke an API token", admin=False,
         help="""
Token names are unique per key: NAME is this key's token. An admin may
revoke another key's: the one token named NAME of any key, or KEY's with
--key KEY when several keys have one.""")
def revoke(ctx, argv):
    p = parser("tokens:revoke")
    p.add_argument("name")
    p.add_argument("--key")
    args = p.parse_args(argv)
    done = tokens.revoke(ctx, args.name, args.key)
    ctx.out(f"-----> Revoked token {done['name']} of key {done['key']}")

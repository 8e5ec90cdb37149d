"""keys, keys:add, keys:remove: the SSH face of gitd.verbs.keys (who may
connect)."""

from __future__ import annotations

from gitd.commands.base import command, parser, print_rows
from gitd.verbs import keys


@command("keys", "keys [--json]", "List SSH keys and what they may reach")
def list_keys(ctx, argv):
    args = parser("keys", json_flag=True).parse_args(argv)
    rows = keys.list_keys(ctx)
    if args.json:
        ctx.json(rows)
        return
    print_rows(ctx, [[k["name"], k["role"], k["fingerprint"],
                      k["apps"] if k["apps"] == "all" else " ".join(k["apps"]) or "-"]
                     for k in rows])


@command("keys:add", "keys:add NAME [--admin] < KEY.pub", "Add an SSH key (public key on stdin)",
         help="""
Without --admin the key is a deployer: it reaches nothing until apps:grant.
    ssh paas keys:add alice < ~/.ssh/id_ed25519.pub
    ssh paas apps:grant hello alice""")
def add(ctx, argv):
    p = parser("keys:add")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true")
    args = p.parse_args(argv)
    key = keys.add(ctx, args.name, ctx.read_stdin(keys.MAX_PUBLIC_KEY), admin=args.admin)
    ctx.out(f"-----> Added {key['role']} key {key['name']} ({key['fingerprint']})")


@command("keys:remove", "keys:remove NAME", "Remove an SSH key and its grants", help="""
The last admin key cannot be removed (nobody could manage gitd over SSH
afterwards; `gitd keys` on the server is the way back in).""")
def remove(ctx, argv):
    p = parser("keys:remove")
    p.add_argument("name")
    args = p.parse_args(argv)
    keys.remove(ctx, args.name)
    ctx.out(f"-----> Removed key {args.name}")

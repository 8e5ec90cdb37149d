"""keys, keys:add, keys:remove: who may connect.

An admin key may do everything. Any other key (a deployer) may push to, and
read (apps:info, releases, ps, logs, domains), only the apps it was granted
with apps:grant; not their config, not `run`.
"""

from __future__ import annotations

from gitd.commands import command, iso_time, parser, print_rows
from gitd.keys import register


def key_info(store, key) -> dict:
    return {
        "name": key.name,
        "role": "admin" if key.is_admin else "deployer",
        "fingerprint": key.fingerprint,
        "apps": "all" if key.is_admin else store.grants_of_key(key.name),
        "created_at": iso_time(key.created_at),
    }


@command("keys", "keys [--json]", "List SSH keys and what they may reach")
def list_keys(ctx, argv):
    args = parser("keys", json_flag=True).parse_args(argv)
    keys = [key_info(ctx.store, k) for k in ctx.store.list_keys()]
    if args.json:
        ctx.json(keys)
        return
    print_rows(ctx, [[k["name"], k["role"], k["fingerprint"],
                      k["apps"] if k["apps"] == "all" else " ".join(k["apps"]) or "-"]
                     for k in keys])


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
    key = register(ctx.store, args.name, ctx.read_stdin(64 * 1024), args.admin)
    role = "admin" if key.is_admin else "deployer"
    ctx.out(f"-----> Added {role} key {key.name} ({key.fingerprint})")


@command("keys:remove", "keys:remove NAME", "Remove an SSH key and its grants", help="""
The last admin key cannot be removed (nobody could manage gitd over SSH
afterwards; `gitd keys` on the server is the way back in).""")
def remove(ctx, argv):
    p = parser("keys:remove")
    p.add_argument("name")
    args = p.parse_args(argv)
    ctx.store.remove_key(args.name, keep_an_admin=True)
    ctx.out(f"-----> Removed key {args.name}")

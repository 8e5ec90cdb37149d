"""previews, previews:enable, previews:disable, previews:destroy: the SSH
face of gitd.verbs.previews (preview apps of branches, issue #25)."""

from __future__ import annotations

from gitd.commands.base import app_parser, command, duration, print_rows
from gitd.verbs import previews


@command("previews:enable", "previews:enable APP [--ttl 7d] [--max 5]",
         "Deploy each pushed branch as a preview app", help="""
Then `git push paas BRANCH` (any branch but main/master) deploys the app
APP--BRANCH at APP--BRANCH.<domain> with APP's config (minus app.json's
previews.exclude, plus previews.env) and bounded resources (settings
preview_memory, preview_cpus, preview_pids); `git push paas :BRANCH` removes
it. --ttl: a preview no push updated for this long is removed (s, m, h, d;
default 7d). --max: previews at most (1-20, default 5). app.json's
"previews": {...} turns them on too; these flags win over it.""")
def enable(ctx, argv):
    p = app_parser("previews:enable", json_flag=True)
    p.add_argument("--ttl")
    p.add_argument("--max", dest="max_count")
    args = p.parse_args(argv)
    data = previews.enable(ctx, args.app, args.ttl, args.max_count)
    if args.json:
        ctx.json(data)
        return
    ctx.out(f"-----> Previews of {args.app} on: each lasts {duration(data['ttl_seconds'])} "
            f"after its last push, {data['max']} at most")


@command("previews:disable", "previews:disable APP", "No more preview apps; remove them",
         help="Off whatever app.json says; the app's previews are removed.")
def disable(ctx, argv):
    args = app_parser("previews:disable").parse_args(argv)
    data = previews.disable(ctx, args.app)
    ctx.out(f"-----> Previews of {args.app} off; removed {len(data['removed'])}")


@command("previews", "previews APP [--json]", "List an app's preview apps", admin=False)
def list_previews(ctx, argv):
    args = app_parser("previews", json_flag=True).parse_args(argv)
    data = previews.list_previews(ctx, args.app)
    if args.json:
        ctx.json(data)
        return
    state = (f"on, {duration(data['ttl_seconds'])} TTL, {data['max']} at most"
             if data["enabled"] else "off (previews:enable APP)")
    ctx.out(f"=== {args.app} previews: {state}")
    rows = [[p["branch"], p["url"], (p["commit"] or "")[:8], duration(p["age_seconds"])]
            for p in data["previews"]]
    print_rows(ctx, [["BRANCH", "URL", "COMMIT", "AGE"]] + rows if rows else [])
    if not rows:
        ctx.out("no previews: git push paas BRANCH makes one")


@command("previews:destroy", "previews:destroy APP BRANCH", "Remove the preview of a branch",
         admin=False, help="The branch itself stays in the repository.")
def destroy(ctx, argv):
    p = app_parser("previews:destroy")
    p.add_argument("branch")
    args = p.parse_args(argv)
    data = previews.destroy(ctx, args.app, args.branch)
    ctx.out(f"-----> Removed {data['removed']}")

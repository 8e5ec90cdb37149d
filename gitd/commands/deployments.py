"""deployments, deployments:info, apps:deploy-image: the SSH face of
gitd.verbs.deployments."""

from __future__ import annotations

from gitd.commands.base import app_parser, command, parser, print_rows
from gitd.verbs import deployments


@command("deployments", "deployments APP [-n COUNT] [--json]",
         "List an app's deployments (every deploy, whatever started it), newest first",
         admin=False, help="""
Each push, config change, rollback, scale, restart and image deploy is a
deployment: its status (pending, building, deploying, succeeded, failed,
cancelled) and trigger. deployments:info ID shows one with its log.""")
def list_deployments(ctx, argv):
    p = app_parser("deployments", json_flag=True)
    p.add_argument("-n", type=int, default=20, dest="count")
    args = p.parse_args(argv)
    rows = deployments.list_for_app(ctx, args.app, limit=max(0, min(args.count, 1000)))
    if args.json:
        ctx.json(rows)
        return
    if not rows:
        ctx.out(f"{args.app} has no deployments yet: push to deploy it")
        return
    ctx.out(f"=== {args.app} deployments")
    print_rows(ctx, [["ID", "STATUS", "TRIGGER", "RELEASE", "COMMIT", "BY", "CREATED", "IMAGE"]]
               + [[r["id"], r["status"], r["trigger"], f"v{r['release']}" if r["release"] else "-",
                   (r["commit"] or "-")[:7], r["by"] or "-", r["created_at"], r["image"] or "-"]
                  for r in rows])


@command("deployments:info", "deployments:info ID [--json]",
         "Show one deployment and its log", admin=False)
def info(ctx, argv):
    p = parser("deployments:info", json_flag=True)
    p.add_argument("id", type=int)
    args = p.parse_args(argv)
    data = deployments.get(ctx, args.id)
    if args.json:
        ctx.json(data)
        return
    for key in ("id", "app", "status", "trigger", "by", "ref", "commit", "image", "release",
                "error", "created_at", "started_at", "finished_at"):
        if data[key] is not None:
            ctx.out(f"{key + ':':<12} {data[key]}")
    ctx.out("")
    ctx.out(data["log"].rstrip("\n"))


@command("apps:deploy-image", "apps:deploy-image APP IMAGE",
         "Deploy a prebuilt image (pulled from a registry) as a push deploys a build", help="""
IMAGE is [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST] (no tag: latest). gitd
pulls it, refuses an image with traefik.* labels, tags it as the app's next
release and deploys it with the app's config, health checks and zero
downtime, as a push; releases:rollback goes back to it or away from it.""")
def deploy_image(ctx, argv):
    p = app_parser("apps:deploy-image")
    p.add_argument("image")
    args = p.parse_args(argv)
    done = deployments.deploy_image(ctx, args.app, args.image)
    ctx.out(f"-----> Deployment {done['id']} of {args.app}: {done['status']} (v{done['release']})")

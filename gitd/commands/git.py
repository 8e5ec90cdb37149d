"""git:sync, git:deploy-key, git:webhook: the SSH face of gitd.verbs.git."""

from __future__ import annotations

from gitd.commands.base import app_parser, command
from gitd.verbs import git


@command("git:sync", "git:sync APP [URL] [REF]",
         "Fetch a repository's branch or commit and deploy it now", admin=False,
         help="""
Without URL: the repository the app follows (apps:create --repo, or an
earlier git:sync APP URL). A URL given here becomes the followed one (admins
only): https://..., ssh://... or user@host:path (with the app's deploy key,
git:deploy-key), or a local path. REF: a branch, tag or commit (default: the
followed branch, main).""")
def sync(ctx, argv):
    p = app_parser("git:sync")
    p.add_argument("url", nargs="?")
    p.add_argument("ref", nargs="?")
    args = p.parse_args(argv)
    result = git.sync(ctx, args.app, args.url, args.ref)
    if result["deployed"]:
        ctx.out(f"-----> {args.app} v{result['release']} runs {result['commit'][:12]}")


@command("git:deploy-key", "git:deploy-key APP",
         "Show the app's deploy key (made on first use) to add to the forge")
def deploy_key(ctx, argv):
    args = app_parser("git:deploy-key").parse_args(argv)
    ctx.out(git.deploy_key(ctx, args.app)["public_key"])


@command("git:webhook", "git:webhook APP [--rotate] [--json]",
         "Show the URL and secret a forge's push webhook needs", help="""
GitHub, Gitea and Forgejo: content type application/json, the secret as the
webhook's secret. GitLab: the secret as its secret token. A push to the
followed branch fetches it and deploys; other branches are ignored.
--rotate makes a new secret (the old one stops working at once).""")
def webhook(ctx, argv):
    p = app_parser("git:webhook", json_flag=True)
    p.add_argument("--rotate", action="store_true")
    args = p.parse_args(argv)
    hook = git.webhook(ctx, args.app, rotate=args.rotate)
    if args.json:
        ctx.json(hook)
        return
    ctx.out(f"url:          {hook['url']}")
    ctx.out(f"secret:       {hook['secret']}")
    ctx.out(f"content type: {hook['content_type']}")

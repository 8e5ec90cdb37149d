"""POST /api/v1/apps/{name}/webhook: a forge's push event (GitHub, GitLab,
Gitea, Forgejo), verified with the app's own secret instead of a token
(gitd.verbs.git.receive_webhook)."""

from __future__ import annotations

from aiohttp import web

from gitd.api.routing import APP_PARAM, STRING, Routes, json_response, run_blocking
from gitd.core.errors import TooLarge
from gitd.verbs import git
from gitd.webhooks import Unverified

routes = Routes()

ANSWER = {"type": "object", "properties": {"status": STRING, "commit": STRING, "error": STRING,
                                           "branch": STRING}}


@routes.post("/api/v1/apps/{name}/webhook", auth=False, tags=["apps"], parameters=[APP_PARAM],
             summary="A forge's push event, signed with the app's webhook secret (git:webhook): "
                     "fetches the followed branch and deploys it; a pull request's event "
                     "deploys or removes its preview app (branch pr-N)",
             responses={200: ANSWER, 202: ANSWER, 401: ANSWER, 409: ANSWER})
async def receive(request):
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"request body is larger than {request.app['max_body']} bytes") from None
    try:
        status, answer = await run_blocking(git.receive_webhook, request.app["gitd"],
                                            request.match_info["name"], dict(request.headers),
                                            body)
    except Unverified as exc:
        return json_response({"error": exc.message}, status=401)
    return json_response(answer, status=status)

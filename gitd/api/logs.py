"""/api/v1/apps/{name}/logs: the HTTP face of gitd.verbs.logs (the lines of
`logs`); with `follow=true` and `Accept: text/event-stream`, live as
server-sent events until the client leaves, like a deployment's log."""

from __future__ import annotations

from aiohttp import web

from gitd.api.routing import (APP_PARAM, STRING, Routes, call, query, query_param, run_blocking,
                              run_verb)
from gitd.core.errors import GitdError
from gitd.verbs import logs

routes = Routes()

LINES_PARAM = query_param("lines", {"type": "integer", "minimum": 0, "maximum": logs.MAX_LINES},
                          "how many past lines (default 100)")
TYPE_PARAM = query_param("type", {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,29}$"},
                         "only this process type")
SERVICE_PARAM = query_param("service", {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,29}$"},
                            "only this app.json service")
FOLLOW_PARAM = query_param("follow", {"type": "boolean"},
                           "with Accept: text/event-stream, stream new lines as they come")
LOGS = {"type": "object", "required": ["app", "lines"], "additionalProperties": False,
        "properties": {"app": STRING, "lines": {"type": "array", "items": STRING}}}
KEEPALIVE_TICKS = 30  # an SSE comment after this many quiet ticks (logs.POLL each)


@routes.get("/api/v1/apps/{name}/logs", tags=["logs"],
            parameters=[APP_PARAM, LINES_PARAM, TYPE_PARAM, SERVICE_PARAM, FOLLOW_PARAM],
            responses={200: LOGS}, events=True,
            summary="The last lines of the app's live containers (logs -n); with follow=true "
                    "and `Accept: text/event-stream`, then every new line as a server-sent "
                    "event (`data:` one line each) until the client leaves (logs -f)")
async def app_logs(request):
    app = request.match_info["name"]
    lines = query(request, LINES_PARAM)
    lines = 100 if lines is None else lines
    process, service = query(request, TYPE_PARAM), query(request, SERVICE_PARAM)
    # as a deployment's log: without Accept: text/event-stream, the lines so far
    if not (query(request, FOLLOW_PARAM)
            and "text/event-stream" in request.headers.get("Accept", "")):
        return await call(request, logs.recent, app, lines, process, service)
    stream = await run_verb(request, logs.logs, app, lines, True, process, service)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        quiet = 0
        while True:
            line = await run_blocking(next, stream, StopIteration)
            if line is StopIteration:
                break
            if line is not None:
                quiet = 0
                await response.write(f"data: {line}\n\n".encode())
            elif (quiet := quiet + 1) >= KEEPALIVE_TICKS:
                quiet = 0
                await response.write(b": following\n\n")
    except GitdError as exc:  # the stream has begun: say why it ends (access taken away)
        message = " ".join(exc.message.splitlines())
        await response.write(f"event: error\ndata: {message}\n\n".encode())
    finally:
        await run_blocking(stream.close)  # a client that left stops the follower
    return response

"""Deployments: the HTTP face of gitd.verbs.deployments (the JSON of
`deployments --json` and `deployments:info --json`), deploys started over
HTTP (202, run in the background) and a deployment's log, live as
server-sent events when asked for with `Accept: text/event-stream`."""

from __future__ import annotations

import contextlib
import json
import time

from aiohttp import web

from gitd.api import auth
from gitd.api.routing import (APP_PARAM, INTEGER, STRING, TIME, Routes, call, json_body, nullable,
                              path_param, follow_blocking, run_verb)
from gitd.core import validate
from gitd.core.errors import UsageError
from gitd.verbs import deployments

routes = Routes()

ID_PARAM = path_param("id", {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
                      "the deployment's id")
STATUS = {"type": "string", "enum": ["pending", "building", "deploying", "succeeded", "failed",
                                     "cancelled"]}
TRIGGER = {"type": "string", "enum": ["push", "webhook", "api", "rollback", "config", "scale",
                                      "restart", "image"]}
FIELDS = {"id": INTEGER, "app": STRING, "status": STATUS, "trigger": TRIGGER,
          "by": nullable(STRING), "ref": nullable(STRING), "commit": nullable(STRING),
          "image": nullable(STRING), "release": nullable(INTEGER), "error": nullable(STRING),
          "created_at": TIME, "started_at": TIME, "finished_at": TIME}
SUMMARY = {"type": "object", "required": sorted(FIELDS), "additionalProperties": False,
           "properties": FIELDS}
DEPLOYMENT = {"type": "object", "required": sorted(FIELDS) + ["log"], "additionalProperties": False,
              "properties": {**FIELDS, "log": STRING}}
LOG = {"type": "object", "required": ["id", "status", "log"], "additionalProperties": False,
       "properties": {"id": INTEGER, "status": STATUS, "log": STRING}}
CREATE_BODY = {
    "type": "object", "additionalProperties": False, "maxProperties": 1,
    "description": "a ref or an image, not both",
    "properties": {
        "ref": {**STRING, "minLength": 1, "maxLength": 200, "pattern": deployments.REF_PATTERN,
                "description": "a branch, tag or full commit id of the app's repository "
                               "(default: main, else master)"},
        "image": {**STRING, "minLength": 1, "maxLength": validate.IMAGE_MAX,
                  "pattern": validate.IMAGE_PATTERN,
                  "description": "a prebuilt image to pull and deploy (admin)"},
    },
}
KEEPALIVE_TICKS = 15  # an SSE comment after this many quiet ticks (a second each)


def deployment_id(request) -> int:
    raw = request.match_info["id"]
    # ASCII only: str.isdigit() also takes "²", which int() then refuses (a 500)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < 1:
        raise UsageError("path parameter id: expected a deployment's number")
    return int(raw)


@routes.get("/api/v1/apps/{name}/deployments", tags=["deployments"], parameters=[APP_PARAM],
            summary="The app's deployments, newest first (every deploy, whatever started it)",
            responses={200: {"type": "array", "items": SUMMARY}})
async def list_deployments(request):
    return await call(request, deployments.list_for_app, request.match_info["name"])


@routes.post("/api/v1/apps/{name}/deployments", tags=["deployments"], parameters=[APP_PARAM],
             body=CREATE_BODY, responses={202: DEPLOYMENT},
             summary="Deploy a ref of the app's repository, or (admin) a prebuilt image; "
                     "answers the pending deployment, which runs in the background")
async def create_deployment(request):
    body = await json_body(request, CREATE_BODY)
    return await call(request, deployments.create, request.match_info["name"],
                      ref=body.get("ref"), image=body.get("image"), status=202)


@routes.get("/api/v1/deployments/{id}", tags=["deployments"], parameters=[ID_PARAM],
            summary="One deployment with its log", responses={200: DEPLOYMENT})
async def show_deployment(request):
    return await call(request, deployments.get, deployment_id(request))


@routes.get("/api/v1/deployments/{id}/log", tags=["deployments"], parameters=[ID_PARAM],
            summary="The deployment's log so far; with `Accept: text/event-stream`, its "
                    "lines as server-sent events (`data:` one line each) live until it "
                    "ends, then an `end` event with its status",
            responses={200: LOG}, events=True)
async def deployment_log(request):
    wanted = deployment_id(request)
    if "text/event-stream" not in request.headers.get("Accept", ""):
        return await call(request, deployments.log_so_far, wanted)
    lines = await run_verb(request, deployments.follow, wanted)  # access checked here
    with request.app["live_streams"].slot(request["key_name"]):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        quiet, checked = 0, time.monotonic()
        async with contextlib.aclosing(follow_blocking(lines)) as chunks:
            async for chunk in chunks:
                if request.transport is None or request.transport.is_closing():
                    return response  # the client left: its follower and slot go now
                if time.monotonic() - checked >= deployments.ACCESS_CHECK:
                    checked = time.monotonic()
                    if not await auth.still_authenticated(request):
                        return response  # the token was revoked or expired meanwhile
                if chunk:
                    quiet = 0
                    await response.write("".join(f"data: {line}\n\n"
                                                 for line in chunk.splitlines()).encode())
                elif (quiet := quiet + 1) >= KEEPALIVE_TICKS:
                    quiet = 0
                    await response.write(b": still running\n\n")
        ended = await run_verb(request, deployments.get, wanted)
        await response.write(("event: end\ndata: " + json.dumps(
            {"id": wanted, "status": ended["status"], "error": ended["error"]}) + "\n\n").encode())
    return response

"""/api/v1/apps/{name}/maintenance: the HTTP face of gitd.verbs.maintenance
(maintenance --json, maintenance:on, maintenance:off)."""

from __future__ import annotations

from gitd.api.routing import (APP_PARAM, BOOLEAN, STRING, TIME, Routes, call, json_body,
                              nullable)
from gitd.verbs import maintenance
from hooks.maintenance import MAX_MESSAGE, MESSAGE_PATTERN

routes = Routes()

STATE = {"type": "object", "required": ["app", "on", "message", "since"],
         "additionalProperties": False,
         "properties": {"app": STRING, "on": BOOLEAN, "message": nullable(STRING), "since": TIME}}
SWITCHED = {"type": "object",
            "required": ["app", "on", "message", "since", "changed", "routed", "confirmed_in"],
            "additionalProperties": False,
            "properties": {**STATE["properties"], "changed": BOOLEAN, "routed": BOOLEAN,
                           "confirmed_in": {"type": "number",
                                            "description": "seconds until Traefik confirmed"}}}
ON_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "message": {**STRING, "maxLength": MAX_MESSAGE, "pattern": MESSAGE_PATTERN,
                "description": "plain text shown on the page (escaped; newlines kept; "
                               "no other control characters)"}}}


@routes.get("/api/v1/apps/{name}/maintenance", tags=["maintenance"], parameters=[APP_PARAM],
            summary="Whether the app is in maintenance (maintenance --json)",
            responses={200: STATE})
async def show(request):
    return await call(request, maintenance.status, request.match_info["name"])


@routes.put("/api/v1/apps/{name}/maintenance", tags=["maintenance"], parameters=[APP_PARAM],
            body=ON_BODY, responses={200: SWITCHED},
            summary="Answer every request to the app with 503 and a page (maintenance:on); "
                    "live in Traefik before the answer")
async def switch_on(request):
    body = await json_body(request, ON_BODY)
    return await call(request, maintenance.on, request.match_info["name"], body.get("message"))


@routes.delete("/api/v1/apps/{name}/maintenance", tags=["maintenance"], parameters=[APP_PARAM],
               responses={200: SWITCHED},
               summary="Serve the app again (maintenance:off); confirmed in Traefik before "
                       "the answer")
async def switch_off(request):
    return await call(request, maintenance.off, request.match_info["name"])

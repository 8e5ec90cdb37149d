"""/api/v1/apps/{name}/notifications: the HTTP face of gitd.verbs.notify
(the JSON of `notify APP --json` and notify:remove).

Subscribing a URL stays on SSH (notify:add) for now: it is the verb that
resolves names and reaches out, and the API's fuzz tests would subscribe
whatever URLs they make up, then deliver to them off this machine.
"""

from __future__ import annotations

from gitd.api.routing import (APP_PARAM, INTEGER, STRING, TIME, Routes, call, nullable,
                              path_param)
from gitd.verbs import notify

routes = Routes()

DELIVERY = {"type": "object", "required": ["event", "delivery", "attempt", "status", "error", "at"],
            "additionalProperties": False,
            "properties": {"event": STRING, "delivery": STRING, "attempt": INTEGER,
                           "status": nullable(INTEGER), "error": nullable(STRING), "at": TIME}}
SUBSCRIPTION = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "app", "url", "events", "format", "by", "created_at", "deliveries"],
    "properties": {"id": INTEGER, "app": nullable(STRING), "url": STRING,
                   "events": {"type": "array", "items": STRING}, "format": STRING,
                   "by": STRING, "created_at": TIME,
                   "deliveries": {"type": "array", "items": DELIVERY,
                                  "description": "the last attempts, newest first"}}}
LISTED = {"type": "object", "required": ["app", "events", "subscriptions"],
          "additionalProperties": False,
          "properties": {"app": nullable(STRING), "events": {"type": "array", "items": STRING},
                         "subscriptions": {"type": "array", "items": SUBSCRIPTION}}}
REMOVED = {"type": "object", "required": ["app", "removed"], "additionalProperties": False,
           "properties": {"app": nullable(STRING), "removed": INTEGER}}
ID_PARAM = path_param("id", {"type": "integer", "minimum": 1, "maximum": notify.MAX_ID},
                      "the notification's id (notify APP)")


@routes.get("/api/v1/apps/{name}/notifications", tags=["notifications"], parameters=[APP_PARAM],
            summary="The app's notification URLs and their last deliveries (notify APP --json)",
            responses={200: LISTED})
async def list_notifications(request):
    return await call(request, notify.list_, request.match_info["name"])


@routes.delete("/api/v1/apps/{name}/notifications/{id}", tags=["notifications"],
               parameters=[APP_PARAM, ID_PARAM], responses={200: REMOVED},
               summary="Stop sending the app's events to a URL (notify:remove)")
async def remove_notification(request):
    return await call(request, notify.remove, request.match_info["name"], request.match_info["id"])

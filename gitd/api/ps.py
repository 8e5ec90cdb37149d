"""/api/v1/apps/{name}/ps, /formation and /restart: the HTTP face of
gitd.verbs.ps (the JSON of `ps --json`, `ps:scale --json`, ps:restart)."""

from __future__ import annotations

from gitd.api.routing import (APP_PARAM, BOOLEAN, INTEGER, STRING, Routes, call, json_body,
                              nullable)
from gitd.verbs import ps

routes = Routes()

COUNT = {"type": "integer", "minimum": 0, "maximum": ps.MAX_SCALE}
COUNTS = {"type": "object", "additionalProperties": INTEGER}
PS = {"type": "object", "required": ["app", "release", "formation", "stopped", "containers"],
      "additionalProperties": False,
      "properties": {"app": STRING, "release": nullable(INTEGER), "formation": COUNTS,
                     "stopped": BOOLEAN, "containers": {"type": "array",
                                                        "items": {"type": "object"}}}}
# TYPE, or SERVICE.TYPE for an app.json service; `release` is not scaled
PROCESS = {"type": "string", "pattern": "^([a-z][a-z0-9-]{0,29}\\.)?(?!release$)[a-z][a-z0-9_-]{0,29}$"}
SCALE_BODY = {"type": "object", "minProperties": 1, "maxProperties": 20, "propertyNames": PROCESS,
              "additionalProperties": COUNT,
              "description": "TYPE: COUNT for the types to change (the others stay)"}
SCALED = {"type": "object", "required": ["app", "changes", "deployed", "formation"],
          "additionalProperties": False,
          "properties": {"app": STRING, "changes": COUNTS, "deployed": BOOLEAN,
                         "formation": COUNTS}}
RESTARTED = {"type": "object", "required": ["app", "config_applied"], "additionalProperties": False,
             "properties": {"app": STRING, "config_applied": BOOLEAN}}


@routes.get("/api/v1/apps/{name}/ps", tags=["ps"], parameters=[APP_PARAM],
            summary="The app's formation and containers (ps --json)", responses={200: PS})
async def show_ps(request):
    return await call(request, ps.ps, request.match_info["name"])


@routes.get("/api/v1/apps/{name}/formation", tags=["ps"], parameters=[APP_PARAM],
            summary="How many of each process type run (admin; ps:scale --json)",
            responses={200: COUNTS})
async def show_formation(request):
    return await call(request, ps.show_formation, request.match_info["name"])


@routes.put("/api/v1/apps/{name}/formation", tags=["ps"], parameters=[APP_PARAM],
            body=SCALE_BODY, responses={200: SCALED},
            summary="Scale process types (admin; ps:scale APP TYPE=COUNT); redeployed "
                    "before the answer")
async def scale(request):
    body = await json_body(request, SCALE_BODY)
    return await call(request, ps.scale, request.match_info["name"], body)


@routes.post("/api/v1/apps/{name}/restart", tags=["ps"], parameters=[APP_PARAM],
             responses={200: RESTARTED},
             summary="New containers replace the old, zero downtime (admin; ps:restart); "
                     "done before the answer")
async def restart(request):
    return await call(request, ps.restart, request.match_info["name"])

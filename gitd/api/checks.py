"""/api/v1/apps/{name}/checks: the HTTP face of gitd.verbs.checks (the JSON of
`checks --json`)."""

from __future__ import annotations

from gitd.api.routing import APP_PARAM, STRING, Routes, call
from gitd.verbs import checks

routes = Routes()

CHECKS = {"type": "object", "required": ["app", "check", "from_app_json", "set", "drain",
                                         "stop_timeout"],
          "properties": {"app": STRING, "check": {"type": ["object", "null"]}}}


@routes.get("/api/v1/apps/{name}/checks", tags=["checks"], parameters=[APP_PARAM],
            summary="The health check that applies and where its values come from "
                    "(checks --json)", responses={200: CHECKS})
async def show_checks(request):
    return await call(request, checks.show, request.match_info["name"])

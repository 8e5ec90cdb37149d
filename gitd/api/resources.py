"""/api/v1/apps/{name}/resources: the HTTP face of gitd.verbs.resources (the JSON of
`resources --json`)."""

from __future__ import annotations

from gitd.api.routing import APP_PARAM, STRING, Routes, call
from gitd.verbs import resources

routes = Routes()

RESOURCES = {"type": "object", "required": ["app", "set", "defaults", "applied"],
             "additionalProperties": False,
             "properties": {"app": STRING, "set": {"type": "object"},
                            "defaults": {"type": "object"}, "applied": {"type": "object"}}}


@routes.get("/api/v1/apps/{name}/resources", tags=["resources"], parameters=[APP_PARAM],
            summary="The app's limits: set, defaults, applied (resources --json)",
            responses={200: RESOURCES})
async def show_resources(request):
    return await call(request, resources.show, request.match_info["name"])

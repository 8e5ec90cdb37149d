"""/api/v1/apps/{name}/storage: the HTTP face of gitd.verbs.storage (the JSON of
`storage --json`)."""

from __future__ import annotations

from gitd.api.routing import APP_PARAM, STRING, Routes, call
from gitd.verbs import storage

routes = Routes()

MOUNT = {"type": "object", "required": ["source", "type", "target"],
         "properties": {"source": STRING, "type": STRING, "target": STRING}}


@routes.get("/api/v1/apps/{name}/storage", tags=["storage"], parameters=[APP_PARAM],
            summary="The app's mounts (storage --json)",
            responses={200: {"type": "array", "items": MOUNT}})
async def list_storage(request):
    return await call(request, storage.list_mounts, request.match_info["name"])

"""The routes about the API itself: its health and its OpenAPI document."""

from __future__ import annotations

from gitd.api.routing import Routes, json_response

routes = Routes()


@routes.get("/health", summary="Whether gitd answers (no token needed)", auth=False,
            tags=["meta"],
            responses={200: {"type": "object", "required": ["status"],
                             "properties": {"status": {"type": "string", "const": "ok"}}}})
async def health(request):
    return json_response({"status": "ok"})


# public: it describes the API and holds no data; tools read it before any token
@routes.get("/api/v1/openapi.json", summary="This API's OpenAPI 3.1 document", auth=False,
            tags=["meta"], responses={200: {"type": "object", "required": ["openapi", "paths"]}})
async def openapi_document(request):
    return json_response(request.app["openapi"])

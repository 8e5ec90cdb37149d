"""/api/v1/services: the HTTP face of gitd.verbs.services (the JSON of
`services:list --json` and `services:info --json`; admin)."""

from __future__ import annotations

from gitd.api.routing import APP_NAME, Routes, call, path_param
from gitd.verbs import services

routes = Routes()

SERVICE_PARAM = path_param("service", APP_NAME, "the service's name")
SERVICE_ROW = {"type": "object", "required": ["name", "kind", "version", "linked"],
               "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                              "linked": {"type": "array", "items": {"type": "string"}}}}
SERVICE_INFO = {"type": "object",
                "required": ["name", "kind", "version", "image", "state", "linked"],
                "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                               "linked": {"type": "object"}}}


@routes.get("/api/v1/services", tags=["services"], summary="Services (admin; services:list --json)",
            responses={200: {"type": "array", "items": SERVICE_ROW}})
async def list_services(request):
    return await call(request, services.list_services)


@routes.get("/api/v1/services/{service}", tags=["services"], parameters=[SERVICE_PARAM],
            summary="A service: version, state, size, links, last backup "
                    "(admin; services:info --json)", responses={200: SERVICE_INFO})
async def show_service(request):
    return await call(request, services.info, request.match_info["service"])

"""/api/v1/services: the HTTP face of gitd.verbs.services (admin): the JSON
of `services:list --json` and `services:info --json`, and services:create,
services:destroy, services:link and services:unlink."""

from __future__ import annotations

from gitd import services as kinds
from gitd.api.config import APPLIED
from gitd.api.routing import (APP_NAME, BOOLEAN, STRING, Routes, call, json_body, nullable,
                              path_param)
from gitd.core import validate
from gitd.verbs import services

routes = Routes()

SERVICE_PARAM = path_param("service", APP_NAME, "the service's name")
LINKED_APP_PARAM = path_param("app", APP_NAME, "the app's name")
SERVICE_ROW = {"type": "object", "required": ["name", "kind", "version", "linked"],
               "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                              "linked": {"type": "array", "items": {"type": "string"}}}}
SERVICE_INFO = {"type": "object",
                "required": ["name", "kind", "version", "image", "state", "linked"],
                "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                               "linked": {"type": "object"}}}
CREATE_BODY = {
    "type": "object", "required": ["kind", "name"], "additionalProperties": False,
    "properties": {
        "kind": {"type": "string", "enum": sorted(kinds.KINDS)},
        "name": APP_NAME,
        "version": {**STRING, "pattern": validate.SERVICE_VERSION.pattern,
                    "description": "digits and dots, like 16 or 15.4 (default: the kind's)"},
        "node": {**STRING, "pattern": validate.NODE_NAME.pattern,
                 "description": "on a swarm: the node (hostname or id) it stays on"},
    },
}
CREATED = {"type": "object", "additionalProperties": False,
           "required": ["name", "kind", "image", "version", "server_version", "node",
                        "node_defaulted", "env_var"],
           "properties": {"name": STRING, "kind": STRING, "image": STRING, "version": STRING,
                          "server_version": nullable(STRING), "node": nullable(STRING),
                          "node_defaulted": BOOLEAN, "env_var": STRING}}
DESTROYED = {"type": "object", "required": ["name"], "additionalProperties": False,
             "properties": {"name": STRING}}
LINK = {"type": "object", "required": ["service", "app", "env_var", "config"],
        "additionalProperties": False,
        "properties": {"service": STRING, "app": STRING, "env_var": STRING, "config": APPLIED}}


@routes.get("/api/v1/services", tags=["services"], summary="Services (admin; services:list --json)",
            responses={200: {"type": "array", "items": SERVICE_ROW}})
async def list_services(request):
    return await call(request, services.list_services)


@routes.post("/api/v1/services", tags=["services"], body=CREATE_BODY, responses={201: CREATED},
             summary="Create a Postgres or Redis service and answer once it is healthy "
                     "(admin; services:create)")
async def create_service(request):
    body = await json_body(request, CREATE_BODY)
    return await call(request, services.create, body["kind"], body["name"], body.get("version"),
                      body.get("node"), status=201)


@routes.get("/api/v1/services/{service}", tags=["services"], parameters=[SERVICE_PARAM],
            summary="A service: version, state, size, links, last backup "
                    "(admin; services:info --json)", responses={200: SERVICE_INFO})
async def show_service(request):
    return await call(request, services.info, request.match_info["service"])


@routes.delete("/api/v1/services/{service}", tags=["services"], parameters=[SERVICE_PARAM],
               summary="Remove a service and its data; a final backup is kept "
                       "(admin; services:destroy --force)", responses={200: DESTROYED})
async def destroy_service(request):
    return await call(request, services.destroy, request.match_info["service"], force=True)


@routes.post("/api/v1/services/{service}/links/{app}", tags=["services"],
             parameters=[SERVICE_PARAM, LINKED_APP_PARAM], responses={201: LINK},
             summary="Give an app the service's URL in its config (a new release, deployed "
                     "before the answer) and access to it (admin; services:link)")
async def link_service(request):
    return await call(request, services.link, request.match_info["service"],
                      request.match_info["app"], status=201)


@routes.delete("/api/v1/services/{service}/links/{app}", tags=["services"],
               parameters=[SERVICE_PARAM, LINKED_APP_PARAM], responses={200: LINK},
               summary="Take the service's URL (a new release) and access away from an app "
                       "(admin; services:unlink)")
async def unlink_service(request):
    return await call(request, services.unlink, request.match_info["service"],
                      request.match_info["app"])

"""/api/v1/apps/{name}/config: the HTTP face of gitd.verbs.config (the JSON
of `config --json`, and of config:set/config:unset as one JSON merge patch)."""

from __future__ import annotations

from gitd.api.routing import (APP_PARAM, INTEGER, STRING, Routes, call, json_body, nullable,
                              query, query_param)
from gitd.verbs import config

routes = Routes()

CONFIG = {"type": "object", "additionalProperties": STRING}
# validate.config_key; gitd's own keys (GITD_*, DYNO) are refused with 409
KEY = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"}
VALUE = {"type": ["string", "null"], "pattern": "^[^\\x00]*$",
         "description": "the new value (no NUL byte; PORT a port), or null to unset it"}
PATCH_BODY = {
    "type": "object", "minProperties": 1, "maxProperties": 100, "propertyNames": KEY,
    "additionalProperties": VALUE,
    "properties": {"PORT": {**VALUE, "pattern": "^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}"
                                                "|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"}},
    "description": "a JSON merge patch: KEY: VALUE sets, KEY: null unsets (all in one release)",
}
RESTART_PARAM = query_param("restart", {"type": "boolean"},
                            "false: store the change for the next deploy (--no-restart)")
APPLIED = {"type": "object", "required": ["app", "description", "outcome", "running"],
           "additionalProperties": False,
           "properties": {"app": STRING, "description": STRING,
                          "outcome": {"type": "string",
                                      "enum": ["unchanged", "stored", "pending", "released"]},
                          "running": nullable(INTEGER)}}


@routes.get("/api/v1/apps/{name}/config", tags=["config"], parameters=[APP_PARAM],
            summary="The app's config vars (admin; config --json)", responses={200: CONFIG})
async def show_config(request):
    return await call(request, config.show, request.match_info["name"])


@routes.patch("/api/v1/apps/{name}/config", tags=["config"], parameters=[APP_PARAM, RESTART_PARAM],
              body=PATCH_BODY, responses={200: APPLIED},
              summary="Set and unset config vars (admin; config:set, config:unset): one new "
                      "release, deployed before the answer")
async def patch_config(request):
    body = await json_body(request, PATCH_BODY)
    restart = query(request, RESTART_PARAM)
    return await call(request, config.patch, request.match_info["name"], body,
                      restart=restart is not False)

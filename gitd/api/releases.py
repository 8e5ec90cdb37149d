"""/api/v1/apps/{name}/releases: the HTTP face of gitd.verbs.releases (the
JSON of `releases --json`, `releases:info --json`, releases:rollback)."""

from __future__ import annotations

from gitd.api.routing import (APP_PARAM, BOOLEAN, INTEGER, STRING, TIME, Routes, call, nullable,
                              path_param, query, query_param)
from gitd.core import validate
from gitd.verbs import releases

routes = Routes()

VERSION_PARAM = path_param("version", {"type": "string", "pattern": "^[vV]?[1-9][0-9]{0,8}$"},
                           "a release: 3 or v3")
COUNT_PARAM = query_param("count", {"type": "integer", "minimum": 0, "maximum": 10_000},
                          f"how many, newest first (default {releases.DEFAULT_COUNT})")
FIELDS = {"version": INTEGER, "current": BOOLEAN, "status": STRING, "kind": STRING,
          "commit": nullable(STRING), "buildpack": nullable(STRING),
          "pushed_by": nullable(STRING), "description": nullable(STRING), "created_at": TIME,
          "finished_at": TIME, "image": nullable(STRING)}
SUMMARY = {"type": "object", "required": sorted(FIELDS), "additionalProperties": False,
           "properties": FIELDS}
RELEASE = {"type": "object", "required": sorted(FIELDS) + ["procfile", "config_keys", "log"],
           "properties": {**FIELDS, "procfile": {"type": "object"},
                          "config_keys": {"type": "array", "items": STRING},
                          "port": {"type": ["integer", "string", "null"]}, "log": nullable(STRING),
                          "services": {"type": "object"}}}
ROLLED_BACK = {"type": "object", "required": ["app", "from", "release"],
               "additionalProperties": False,
               "properties": {"app": STRING, "from": INTEGER, "release": nullable(INTEGER)}}


def version(request) -> int:
    return validate.release_version(request.match_info["version"])


@routes.get("/api/v1/apps/{name}/releases", tags=["releases"], parameters=[APP_PARAM, COUNT_PARAM],
            summary="The app's releases, newest first (releases --json)",
            responses={200: {"type": "array", "items": SUMMARY}})
async def list_releases(request):
    count = query(request, COUNT_PARAM)
    return await call(request, releases.list_releases, request.match_info["name"],
                      releases.DEFAULT_COUNT if count is None else count)


@routes.get("/api/v1/apps/{name}/releases/{version}", tags=["releases"],
            parameters=[APP_PARAM, VERSION_PARAM], responses={200: RELEASE},
            summary="One release with its config names and log (releases:info --json)")
async def show_release(request):
    return await call(request, releases.info, request.match_info["name"], version(request))


@routes.post("/api/v1/apps/{name}/releases/{version}/rollback", tags=["releases"],
             parameters=[APP_PARAM, VERSION_PARAM], responses={200: ROLLED_BACK},
             summary="A new release from this one's image and config (admin; "
                     "releases:rollback), deployed before the answer")
async def rollback(request):
    return await call(request, releases.rollback, request.match_info["name"], version(request))

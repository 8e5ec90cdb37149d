"""/api/v1/apps: the HTTP face of gitd.verbs.apps (the JSON of
`apps:list --json` and `apps:info --json`)."""

from __future__ import annotations

from gitd.api.deployments import DEPLOYMENT
from gitd.api.routing import (APP_NAME, APP_PARAM, BOOLEAN, INTEGER, STRING, TIME, Routes, call,
                              json_body, nullable, path_param)
from gitd.verbs import apps
from hooks import remote

routes = Routes()

STRINGS = {"type": "array", "items": STRING}

APP_SUMMARY = {"type": "object", "required": ["name", "release"], "additionalProperties": False,
               "properties": {"name": STRING, "release": nullable(INTEGER),
                              "preview_of": nullable(STRING)}}

CONTAINER = {"type": "object", "properties": {
    "name": STRING, "process": STRING, "release": {"type": ["integer", "string", "null"]},
    "state": STRING, "health": {"type": ["string", "null"]}}}

LINKED_SERVICE = {"type": "object", "properties": {
    "kind": STRING, "env_var": STRING, "last_backup_ok": nullable(BOOLEAN),
    "last_backup_message": STRING}}

FOLLOWS = {"type": ["object", "null"], "required": ["url", "branch"], "additionalProperties": False,
           "properties": {"url": STRING, "branch": STRING},
           "description": "the repository the app follows (git:sync), without credentials"}

NOTIFICATION_RESULT = {
    "type": "object", "required": ["id", "url", "last"],
    "description": "a notification URL (notify:add) and its last delivery attempt",
    "properties": {"id": INTEGER, "url": STRING, "last": {"type": ["object", "null"]}}}
MAINTENANCE_STATE = {
    "type": "object", "required": ["on", "message", "since"], "additionalProperties": False,
    "properties": {"on": BOOLEAN, "message": nullable(STRING), "since": TIME},
    "description": "maintenance mode (maintenance:on): whether the app's routes answer 503"}

APP_INFO = {
    "type": "object",
    "required": ["name", "created_at", "release", "commit", "image", "buildpack", "domains",
                 "urls", "certificate_warnings", "scale", "containers", "state",
                 "health_restarts", "git_url", "granted_to", "deploying", "services", "follows",
                 "notifications", "cron_failing"],
    "additionalProperties": False,
    "properties": {
        "name": STRING, "created_at": TIME, "release": nullable(INTEGER),
        "commit": nullable(STRING), "image": nullable(STRING), "buildpack": nullable(STRING),
        "domains": STRINGS, "urls": STRINGS, "certificate_warnings": STRINGS,
        "scale": {"type": "object", "additionalProperties": INTEGER},
        "containers": {"type": "array", "items": CONTAINER},
        "state": STRING,
        "health_restarts": {"type": ["object", "null"]},
        "git_url": STRING, "granted_to": STRINGS, "deploying": BOOLEAN,
        "services": {"type": "object", "additionalProperties": LINKED_SERVICE},
        "follows": FOLLOWS,
        "notifications": {"type": "array", "items": NOTIFICATION_RESULT},
        "maintenance": MAINTENANCE_STATE,
        "cron_failing": {**STRINGS, "description": "cron jobs whose last run failed"},
    },
}

CREATE_BODY = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "dependentRequired": {"branch": ["repo_url"]},
    "properties": {
        "name": APP_NAME,
        "repo_url": {**STRING, "minLength": 1, "maxLength": remote.URL_MAX,
                     "pattern": remote.URL_PATTERN,
                     "description": "a repository to follow (https, ssh; a local path for "
                                    "admins): its branch is fetched and deployed at once"},
        "branch": {**STRING, "minLength": 1, "maxLength": remote.REF_MAX,
                   "pattern": remote.REF_PATTERN,
                   "description": "the branch to follow (default main); only with repo_url"},
    },
}

CREATED = {"type": "object", "required": ["name", "git_url", "host_known", "follows", "deployment"],
           "additionalProperties": False,
           "properties": {"name": STRING, "git_url": STRING, "host_known": BOOLEAN,
                          "follows": FOLLOWS,
                          "deployment": {**DEPLOYMENT, "type": ["object", "null"],
                                         "description": "with a repo_url: the deployment of its "
                                                        "branch, pending"}}}

DESTROYED = {"type": "object", "required": ["name", "services_left"], "additionalProperties": False,
             "properties": {"name": STRING, "services_left": {
                 "type": "object", "additionalProperties": STRINGS,
                 "description": "each service that was linked to the app (it keeps running) "
                                "-> the apps still linked to it"}}}


@routes.get("/api/v1/apps", summary="The apps the token's key may see", tags=["apps"],
            responses={200: {"type": "array", "items": APP_SUMMARY}})
async def list_apps(request):
    return await call(request, apps.list_apps)


@routes.post("/api/v1/apps", summary="Create an app (admin)", tags=["apps"], body=CREATE_BODY,
             responses={201: CREATED})
async def create_app(request):
    body = await json_body(request, CREATE_BODY)
    return await call(request, apps.create, body["name"], repo_url=body.get("repo_url"),
                      branch=body.get("branch"), deploy_now=True, status=201)


@routes.get("/api/v1/apps/{name}", summary="Show an app: release, URLs, containers",
            tags=["apps"], parameters=[APP_PARAM], responses={200: APP_INFO})
async def show_app(request):
    return await call(request, apps.info, request.match_info["name"])


@routes.delete("/api/v1/apps/{name}", tags=["apps"], parameters=[APP_PARAM],
               summary="Destroy an app and everything it holds (admin); linked services "
                       "keep running", responses={200: DESTROYED})
async def destroy_app(request):
    return await call(request, apps.destroy, request.match_info["name"], force=True)


KEY_PARAM = path_param("key", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]*$",
                               "minLength": 1, "maxLength": 64}, "an SSH key's name (`keys`)")

GRANTED = {"type": "object", "required": ["app", "key", "key_is_admin"],
           "additionalProperties": False,
           "properties": {"app": STRING, "key": STRING, "key_is_admin": BOOLEAN}}

REVOKED = {"type": "object", "required": ["app", "key"], "additionalProperties": False,
           "properties": {"app": STRING, "key": STRING}}


@routes.put("/api/v1/apps/{name}/grants/{key}", tags=["apps"], parameters=[APP_PARAM, KEY_PARAM],
            summary="Let a deployer key push to and read the app (admin; apps:grant)",
            responses={200: GRANTED})
async def grant_app(request):
    return await call(request, apps.grant, request.match_info["name"], request.match_info["key"])


@routes.delete("/api/v1/apps/{name}/grants/{key}", tags=["apps"],
               parameters=[APP_PARAM, KEY_PARAM],
               summary="Take a key's access to the app away (admin; apps:revoke)",
               responses={200: REVOKED})
async def revoke_app(request):
    return await call(request, apps.revoke, request.match_info["name"], request.match_info["key"])

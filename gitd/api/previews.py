"""/api/v1/apps/{name}/previews: the HTTP face of gitd.verbs.previews'
listing (the JSON of `previews APP --json`)."""

from __future__ import annotations

from gitd.api.routing import (
    APP_PARAM,
    BOOLEAN,
    INTEGER,
    STRING,
    TIME,
    Routes,
    call,
    nullable,
)
from gitd.verbs import previews

routes = Routes()

PREVIEW = {"type": "object", "additionalProperties": False,
           "required": ["name", "branch", "url", "commit", "release", "created_at", "updated_at",
                        "age_seconds", "expires_at"],
           "properties": {"name": STRING, "branch": STRING, "url": STRING,
                          "commit": nullable(STRING), "release": nullable(INTEGER),
                          "created_at": TIME, "updated_at": TIME, "age_seconds": INTEGER,
                          "expires_at": TIME}}

PREVIEWS = {"type": "object", "required": ["app", "enabled", "previews"],
            "additionalProperties": False,
            "properties": {"app": STRING, "enabled": BOOLEAN, "ttl_seconds": INTEGER,
                           "max": INTEGER, "exclude": {"type": "array", "items": STRING},
                           "env_keys": {"type": "array", "items": STRING}, "services": STRING,
                           "previews": {"type": "array", "items": PREVIEW}}}


@routes.get("/api/v1/apps/{name}/previews", tags=["previews"], parameters=[APP_PARAM],
            summary="The app's preview apps with URL, commit and age (previews --json)",
            responses={200: PREVIEWS})
async def list_previews(request):
    return await call(request, previews.list_previews, request.match_info["name"])

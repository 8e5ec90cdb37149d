"""/api/v1/apps/{name}/cron: the HTTP face of gitd.verbs.cron (the JSON of
`cron --json`)."""

from __future__ import annotations

from gitd.api.routing import APP_PARAM, INTEGER, STRING, TIME, Routes, call, nullable
from gitd.verbs import cron

routes = Routes()

RUN = {"type": ["object", "null"], "required": ["id", "job", "trigger", "status", "exit_code",
                                               "started_at", "finished_at", "duration"],
       "properties": {
           "id": INTEGER, "job": STRING, "release": nullable(INTEGER),
           "trigger": {"enum": ["schedule", "catch-up", "manual"]},
           "status": {"enum": ["running", "succeeded", "failed", "timed out", "skipped"]},
           "exit_code": nullable(INTEGER), "started_at": TIME, "finished_at": TIME,
           "duration": {"type": ["number", "null"]}}}

JOB = {"type": "object", "additionalProperties": False,
       "required": ["id", "schedule", "command", "service", "timeout", "last_run", "next_run_at"],
       "properties": {
           "id": STRING, "schedule": STRING, "command": STRING, "service": nullable(STRING),
           "timeout": {"type": "number", "description": "seconds; the job's or cron_timeout"},
           "last_run": RUN, "next_run_at": TIME}}


@routes.get("/api/v1/apps/{name}/cron", tags=["cron"], parameters=[APP_PARAM],
            summary="The cron jobs of the app's live release, with their last and next runs "
                    "(cron --json)", responses={200: {"type": "array", "items": JOB}})
async def list_jobs(request):
    return await call(request, cron.list_jobs, request.match_info["name"])

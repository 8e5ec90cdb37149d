"""/api/v1/apps/{name}/domains: the HTTP face of gitd.verbs.domains (the
JSON of `domains --json`, domains:add and domains:remove)."""

from __future__ import annotations

from gitd.api.routing import APP_PARAM, BOOLEAN, STRING, Routes, call, json_body
from gitd.verbs import domains

routes = Routes()

ROUTE = {"type": "object", "required": ["host", "path", "strip_prefix", "url"],
         "additionalProperties": False,
         "properties": {"host": STRING, "path": STRING, "strip_prefix": BOOLEAN, "url": STRING}}
ROUTES = {"type": "array", "items": ROUTE}
# HOST or HOST/PATH (validate.host_and_path says the rest)
LABEL = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
# bounded by repetition, not lookaheads (which fuzzers cannot generate from):
# a host of at most 253 characters, a path prefix of at most 100
DOMAIN = {"type": "string", "minLength": 4, "maxLength": 300,
          "pattern": f"^{LABEL}(\\.{LABEL}){{0,2}}\\.[a-z]{{2,61}}"
                     "(/[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,18}){0,4}$"}
DOMAINS = {"type": "array", "items": DOMAIN, "minItems": 1, "maxItems": 50}
ADD_BODY = {"type": "object", "required": ["domains"], "additionalProperties": False,
            "properties": {"domains": DOMAINS, "strip_prefix": {
                **BOOLEAN, "description": "the app sees paths without the prefix"}}}
REMOVE_BODY = {"type": "object", "required": ["domains"], "additionalProperties": False,
               "properties": {"domains": DOMAINS}}
CHANGED = {"type": "object", "required": ["app", "changed", "deployed", "domains"],
           "additionalProperties": False,
           "properties": {"app": STRING, "changed": BOOLEAN, "deployed": BOOLEAN,
                          "domains": ROUTES}}


@routes.get("/api/v1/apps/{name}/domains", tags=["domains"], parameters=[APP_PARAM],
            summary="The app's domains (domains --json)", responses={200: ROUTES})
async def list_domains(request):
    return await call(request, domains.list_domains, request.match_info["name"])


@routes.post("/api/v1/apps/{name}/domains", tags=["domains"], parameters=[APP_PARAM],
             body=ADD_BODY, responses={200: CHANGED},
             summary="Route domains (HOST or HOST/PATH) to the app too (admin; domains:add); "
                     "redeployed before the answer")
async def add_domains(request):
    body = await json_body(request, ADD_BODY)
    return await call(request, domains.add, request.match_info["name"], body["domains"],
                      strip_prefix=body.get("strip_prefix", False))


@routes.delete("/api/v1/apps/{name}/domains", tags=["domains"], parameters=[APP_PARAM],
               body=REMOVE_BODY, responses={200: CHANGED},
               summary="Stop routing domains to the app (admin; domains:remove); "
                       "redeployed before the answer")
async def remove_domains(request):
    body = await json_body(request, REMOVE_BODY)
    return await call(request, domains.remove, request.match_info["name"], body["domains"])

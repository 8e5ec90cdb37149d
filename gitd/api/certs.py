"""/api/v1/apps/{name}/certificates: the HTTP face of gitd.verbs.certs (the
JSON of `certs --json`; certs:add and certs:remove, admin)."""

from __future__ import annotations

from gitd.api.routing import APP_PARAM, BOOLEAN, STRING, Routes, call, json_body
from gitd.verbs import certs

routes = Routes()

ROW = {"type": "object", "required": ["domain", "source"],
       "properties": {"domain": {"type": "string"}, "source": {"type": "string"}}}
# what certs:add reads from stdin: the chain (leaf first) and its key, in PEM
ADD_BODY = {"type": "object", "required": ["bundle"], "additionalProperties": False,
            "properties": {"bundle": {**STRING, "minLength": 1, "maxLength": 512 * 1024,
                                      "description": "one PEM text: the certificate chain, leaf "
                                                     "first, and its private key (unencrypted)"}}}
ADDED = {"type": "object", "required": ["app", "hosts", "issuer", "expires", "served"],
         "additionalProperties": False,
         "properties": {"app": STRING, "hosts": {"type": "array", "items": STRING},
                        "issuer": STRING, "expires": STRING,
                        "served": {"type": "object", "additionalProperties": BOOLEAN,
                                   "description": "host -> whether Traefik serves it now"}}}
REMOVED = {"type": "object", "required": ["app", "removed"], "additionalProperties": False,
           "properties": {"app": STRING, "removed": BOOLEAN}}


@routes.get("/api/v1/apps/{name}/certificates", tags=["certificates"], parameters=[APP_PARAM],
            summary="A row per domain: certificate source, issuer, expiry, whether Traefik "
                    "serves it, the last ACME error (certs --json)",
            responses={200: {"type": "array", "items": ROW}})
async def list_certificates(request):
    return await call(request, certs.show, request.match_info["name"])


@routes.post("/api/v1/apps/{name}/certificates", tags=["certificates"], parameters=[APP_PARAM],
             body=ADD_BODY, responses={201: ADDED},
             summary="Install a custom certificate for the app's domains it covers; they stop "
                     "using ACME (admin; certs:add)")
async def add_certificate(request):
    body = await json_body(request, ADD_BODY)
    return await call(request, certs.add, request.match_info["name"], body["bundle"], status=201)


@routes.delete("/api/v1/apps/{name}/certificates", tags=["certificates"], parameters=[APP_PARAM],
               responses={200: REMOVED},
               summary="Remove the app's custom certificate: its domains go back to ACME "
                       "(admin; certs:remove)")
async def remove_certificate(request):
    return await call(request, certs.remove, request.match_info["name"])

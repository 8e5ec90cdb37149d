"""/api/v1/apps/{name}/certificates: the HTTP face of gitd.verbs.certs (the
JSON of `certs --json`)."""

from __future__ import annotations

from gitd.api.routing import APP_PARAM, Routes, call
from gitd.verbs import certs

routes = Routes()

ROW = {"type": "object", "required": ["domain", "source"],
       "properties": {"domain": {"type": "string"}, "source": {"type": "string"}}}


@routes.get("/api/v1/apps/{name}/certificates", tags=["certificates"], parameters=[APP_PARAM],
            summary="A row per domain: certificate source, issuer, expiry, whether Traefik "
                    "serves it, the last ACME error (certs --json)",
            responses={200: {"type": "array", "items": ROW}})
async def list_certificates(request):
    return await call(request, certs.show, request.match_info["name"])

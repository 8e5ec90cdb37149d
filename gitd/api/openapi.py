"""The OpenAPI 3.1 document, assembled from the operations the routes declare."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from gitd.api.routing import ERROR, EVENT_STREAM, Route

ERROR_REF = {"$ref": "#/components/schemas/Error"}
# the answers any route behind a token may give, besides its own
AUTH_ERRORS = {
    "400": "bad input: a name, a field or a parameter that is not valid",
    "401": "no token, or one unknown, revoked, expired or of a removed key",
    "403": "the token's key may not do this",
    "404": "no such app (or other resource), or not one the token's key may see",
    "409": "a name already taken, a deploy of the app still running, or what this server's "
           "state does not allow now (HTTPS off, no swarm, a service image it cannot get)",
    "429": "too many failed attempts to authenticate from this address",
    "507": "no space left on the filesystem holding gitd's data: the request could not finish",
}
BODY_ERRORS = {
    "413": "request body too large",
    "415": "request body not sent as application/json",
}
ERROR_HEADERS = {
    "401": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    "429": {"Retry-After": {"schema": {"type": "string"}, "required": True}},
}


def _gitd_version() -> str:
    try:
        return version("gitd")
    except PackageNotFoundError:
        return "0"


def _json(schema: dict | None, description: str) -> dict:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(route: Route) -> dict:
    declared = route.operation
    responses = {str(status): _json(schema, "success")
                 for status, schema in declared["responses"].items()}
    if declared["events"]:
        ok = responses["200"]
        ok["description"] = "success: JSON, or with `Accept: text/event-stream` a live stream"
        ok.setdefault("content", {})["text/event-stream"] = {"schema": EVENT_STREAM}
    errors = dict(AUTH_ERRORS) if route.auth else (
        {"400": AUTH_ERRORS["400"]} if declared["parameters"] or declared["body"] else {})
    if declared["body"]:
        errors.update(BODY_ERRORS)
    for status, description in errors.items():
        responses[status] = {**_json(ERROR_REF, description),
                             **({"headers": ERROR_HEADERS[status]} if status in ERROR_HEADERS else {})}
    operation = {"operationId": declared["operationId"], "summary": declared["summary"],
                 "responses": responses, "security": [{"bearer": []}] if route.auth else []}
    if declared["tags"]:
        operation["tags"] = declared["tags"]
    if declared["parameters"]:
        operation["parameters"] = declared["parameters"]
    if declared["body"]:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": declared["body"]}}}
    return operation


def document(routes: list[Route]) -> dict:
    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "gitd", "version": _gitd_version(),
                 "description": "The HTTP face of gitd: the same verbs, access rules and "
                                "validation as its SSH commands."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token from `ssh paas tokens:create`"}},
        },
    }

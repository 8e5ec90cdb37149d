"""What every route module uses: `Routes` to declare a route with its
OpenAPI operation, `call` to run a verb, `json_body` to read a request, and
the schema fragments the operations share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from aiohttp import web

from gitd.core.errors import RateLimited, TooLarge, UsageError
from gitd.verbs import Session

# verbs block (docker, sqlite, git): they run here, never on the event loop;
# the pool bounds how many run at once (more wait their turn)
VERB_THREADS = 16
_pool = ThreadPoolExecutor(max_workers=VERB_THREADS, thread_name_prefix="gitd-api")

# a live stream (server-sent events) waits for its next item on a thread of
# its own pool: on the verbs' pool a few dozen would queue every request
# (the token check too) behind their waits
FOLLOWERS = 32
FOLLOWERS_PER_KEY = 8
_follow_pool = ThreadPoolExecutor(max_workers=FOLLOWERS, thread_name_prefix="gitd-api-follow")
_END = object()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    operation: dict
    auth: bool = True


# a live answer's body as the OpenAPI document gives it (text/event-stream)
EVENT_STREAM = {"type": "string", "description": "server-sent events: `data:` lines, "
                                                 "`:` comments that keep the connection open"}


@dataclass
class Routes:
    """One route module's routes, in the order declared."""
    routes: list[Route] = field(default_factory=list)

    def route(self, method: str, path: str, *, summary: str, responses: dict,
              parameters: list | None = None, body: dict | None = None, auth: bool = True,
              tags: list[str] | None = None, events: bool = False):
        """Declare a route and its OpenAPI operation: `responses` maps a
        status to a response schema (None: no body), `body` is the JSON
        request body's schema; `events`: its 200 may also be a live
        text/event-stream (asked for with that Accept header). The error
        answers are added for every route."""
        def register(handler: Handler) -> Handler:
            operation = {"operationId": handler.__name__, "summary": summary,
                         "responses": responses, "parameters": parameters or [],
                         "body": body, "tags": tags or [], "events": events}
            self.routes.append(Route(method, path, handler, operation, auth))
            return handler
        return register

    def get(self, path: str, **kw):
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw):
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw):
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw):
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw):
        return self.route("DELETE", path, **kw)


def session(request: web.Request) -> Session:
    """The caller's session, set by the auth middleware."""
    return request["session"]


async def run_blocking(func: Callable, *args, **kwargs):
    """`func(*args, **kwargs)` on the verb pool, awaited."""
    return await asyncio.get_running_loop().run_in_executor(_pool, lambda: func(*args, **kwargs))


async def run_verb(request: web.Request, verb: Callable, *args, **kwargs):
    """`verb(session, *args, **kwargs)` on the verb pool; its data."""
    return await run_blocking(verb, session(request), *args, **kwargs)


async def call(request: web.Request, verb: Callable, *args, status: int = 200, **kwargs) -> web.Response:
    """Run a verb for the caller and answer its data as JSON."""
    return json_response(await run_verb(request, verb, *args, **kwargs), status=status)


class LiveStreams:
    """The live streams open now: at most FOLLOWERS, FOLLOWERS_PER_KEY of one
    key; past that a new one is 429."""

    def __init__(self):
        self.by_key: Counter[str] = Counter()

    @contextlib.contextmanager
    def slot(self, key_name: str):
        if self.by_key.total() >= FOLLOWERS or self.by_key[key_name] >= FOLLOWERS_PER_KEY:
            raise RateLimited(f"too many live logs open (at most {FOLLOWERS_PER_KEY} per key, "
                              f"{FOLLOWERS} in all): close one, or read the log without "
                              "Accept: text/event-stream", retry_after=5)
        self.by_key[key_name] += 1
        try:
            yield
        finally:
            self.by_key[key_name] -= 1
            if not self.by_key[key_name]:
                del self.by_key[key_name]


async def follow_blocking(iterator):
    """The items of a blocking iterator, each awaited from the followers'
    pool; closed when the stream ends or its client leaves."""
    pending = None
    try:
        while (item := await asyncio.wrap_future(
                pending := _follow_pool.submit(next, iterator, _END))) is not _END:
            yield item
    finally:
        # a cancelled wait leaves next() running: close once it returned
        # (closing a generator while it runs raises)
        _follow_pool.submit(_close_after, pending, iterator)


def _close_after(pending, iterator) -> None:
    if pending is not None:
        wait([pending])
    iterator.close()


def json_response(data, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, sort_keys=True, default=str), status=status,
                        content_type="application/json", headers=headers)


async def json_body(request: web.Request, schema: dict) -> dict:
    """The request's JSON object, checked against `schema` (the route's
    declared body): 415 for another content type, 400 for anything else
    that is not what the schema says, 413 past the body limit."""
    if request.content_type != "application/json":
        raise UnsupportedMedia()
    limit = request.app["gitd"].settings.api_header_timeout
    try:
        async with asyncio.timeout(limit):  # a body sent slowly holds no connection for long
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"request body is larger than {request.app['max_body']} bytes") from None
    except TimeoutError:
        raise UsageError(f"the request body did not arrive within {limit:g} s") from None
    return parse_json(raw, schema)


def query(request: web.Request, parameter: dict):
    """A query parameter declared with `query_param`, checked against its
    schema (integers and booleans from their text); None when absent."""
    raw = request.query.get(parameter["name"])
    if raw is None:
        return None
    schema = parameter["schema"]
    where = f"query parameter {parameter['name']}"
    if schema.get("type") == "integer":
        if not re.fullmatch(r"-?[0-9]{1,18}", raw):
            raise UsageError(f"{where}: expected a whole number")
        value = int(raw)
    elif schema.get("type") == "boolean":
        if raw not in ("true", "false", "1", "0"):
            raise UsageError(f"{where}: expected true or false")
        value = raw in ("true", "1")
    else:
        value = raw
    check(value, schema, where)
    return value


def parse_json(raw: bytes, schema: dict):
    """JSON as RFC 8259 has it (no NaN or Infinity), within Python's nesting
    limit, matching `schema`; anything else is a UsageError."""
    try:
        data = json.loads(raw, parse_constant=_no_constant) if raw else None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise UsageError("request body is not valid JSON") from None
    check(data, schema, "body")
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class UnsupportedMedia(UsageError):
    def __init__(self):
        super().__init__("send the request body as JSON (Content-Type: application/json)")


JSON_TYPES = {"object": dict, "string": str, "boolean": bool, "array": list, "integer": int,
              "number": (int, float)}


def check(value, schema: dict, where: str) -> None:
    """Check `value` against the small JSON Schema subset routes declare
    (object, string, boolean, integer, array; required, properties,
    additionalProperties, dependentRequired, pattern, min/maxLength, minimum/maximum, enum;
    NOT_YET)."""
    if schema.get("not") == {}:
        raise UsageError(f"{where}: not supported yet")
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]
        if value is None and "null" in kind:
            return
        kind = next((k for k in kind if k != "null"), None)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        value = int(value)  # 17.0 is an integer to JSON Schema
    ok = kind is None or isinstance(value, JSON_TYPES[kind]) and not (
        kind in ("integer", "number") and isinstance(value, bool))
    if not ok:
        raise UsageError(f"{where}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise UsageError(f"{where}: must be one of {', '.join(map(str, schema['enum']))}")
    if kind == "object":
        _check_object(value, schema, where)
    elif kind == "string":
        _check_string(value, schema, where)
    elif kind == "integer" and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        raise UsageError(f"{where}: out of range")
    elif kind == "array" and not schema.get("minItems", 0) <= len(value) <= schema.get(
            "maxItems", len(value)):
        raise UsageError(f"{where}: too few or too many items")
    elif kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            check(item, schema["items"], f"{where}[{i}]")


def _check_object(value: dict, schema: dict, where: str) -> None:
    properties = schema.get("properties", {})
    if not schema.get("minProperties", 0) <= len(value) <= schema.get("maxProperties", len(value)):
        raise UsageError(f"{where}: too few or too many fields")
    for name in schema.get("required", []):
        if name not in value:
            raise UsageError(f"{where}: {name!r} is required")
    for name, needed in schema.get("dependentRequired", {}).items():
        if name in value and not all(other in value for other in needed):
            raise UsageError(f"{where}: {name!r} goes with {', '.join(map(repr, needed))}")
    for name, item in value.items():
        if "propertyNames" in schema:
            check(name, schema["propertyNames"], f"{where}: field name {name[:40]!r}")
        if name in properties:
            check(item, properties[name], f"{where}.{name}")
        elif isinstance(schema.get("additionalProperties"), dict):
            check(item, schema["additionalProperties"], f"{where}.{name[:40]}")
        elif schema.get("additionalProperties", True) is False:
            raise UsageError(f"{where}: unknown field {name[:40]!r}")


def _check_string(value: str, schema: dict, where: str) -> None:
    if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
        raise UsageError(f"{where}: length out of range")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise UsageError(f"{where}: does not match {schema['pattern']}")


# schema fragments the route modules share

ERROR = {"type": "object", "required": ["error"], "additionalProperties": False,
         "properties": {"error": {"type": "string"}}}


def nullable(schema: dict) -> dict:
    return {**schema, "type": [schema["type"], "null"]}


STRING = {"type": "string"}
# a field a later version takes: refused (400) for now, and never generated
NOT_YET = {"not": {}, "description": "not supported yet: answered 400"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": ["string", "null"], "format": "date-time"}

# validate.app_name, as a pattern: a letter, then letters and digits with
# single dashes between them, 30 characters at most
APP_NAME = {"type": "string", "pattern": "^[a-z](-?[a-z0-9])*$", "minLength": 1, "maxLength": 30}


def path_param(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


APP_PARAM = path_param("name", APP_NAME, "the app's name")


def query_param(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


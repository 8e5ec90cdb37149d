"""The dashboard (issue #24): the third front-end over gitd.verbs, beside
SSH's commands and the HTTP API, served as HTML by the API's listener
under /dashboard/ (api_port, and api_host through gitd's Traefik).

- Log in with an API token (`tokens:create`), posted in a form body (never
  in a URL): it opens a server-side session (gitd/dashboard/sessions.py);
  the cookie holds only the session's random id: HttpOnly, SameSite=Strict,
  Secure when the page came over HTTPS, Path=/dashboard. Failed logins count
  on the API's brake (the same addresses, the same limit).
- A page calls verbs with a Session for the session's key: the same access
  rules as SSH and the API; what a deployer may not do is not shown, and
  refused by the verb if forced.
- Every form carries the session's CSRF token, checked (constant time) on
  every POST before anything else is read, and a POST whose Origin is
  another host's is refused (an app on a sibling host is the same site); bodies are bounded (MAX_FORM).
- Templates are jinja2 with autoescape on; the pages read with JavaScript
  off; the one script (static/dashboard.js) only streams a running deploy's
  log into the page (server-sent events, this module's own stream: a
  browser's EventSource cannot send a Bearer token).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

import jinja2
from aiohttp import web

from gitd.api import auth, status_of
from gitd.api.deployments import deployment_id
from gitd.api.routing import follow_blocking, run_blocking
from gitd.core import validate
from gitd.core.errors import GitdError, RateLimited, TooLarge, UsageError
from gitd.dashboard import sessions
from gitd.verbs import Session, config, deployments, overview, releases

PREFIX = "/dashboard"
COOKIE = "gitd_session"
LOGIN_COOKIE = "gitd_login"  # the login form's CSRF token (double submit): no session yet
MAX_FORM = 64 * 1024
REFRESH_SECONDS = 3
STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # not no-referrer: under it a browser's form posts say Origin "null",
    # and the Origin check (same_origin) needs them to name this host
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = jinja2.Environment(loader=jinja2.PackageLoader("gitd.dashboard", "templates"),
                               autoescape=True, trim_blocks=True, lstrip_blocks=True)



def short_state(state: str) -> str:
    """'stopped (ps:start to run it again; ...)' -> 'stopped'; the whole
    sentence goes in the title."""
    return state.split(" (", 1)[0].split(":", 1)[0]


templates.filters["short_state"] = short_state

_routes: list[tuple[str, str, object]] = []


def route(method: str, path: str):
    def register(handler):
        _routes.append((method, PREFIX + path, handler))
        return handler
    return register


def mount(app: web.Application) -> None:
    """Add the dashboard's routes to the API's application (before it starts).
    They are public to the API's token check: the session is checked here."""
    for method, path, handler in _routes:
        app.router.add_route(method, path, handler)
        app["public"].add(handler)


# pages, sessions and forms

def gitd_of(request: web.Request):
    return request.app["gitd"]


def over_https(request: web.Request) -> bool:
    if request.secure:
        return True
    return auth.from_traefik(request) and request.headers.get("X-Forwarded-Proto") == "https"


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
               max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=True,
                        samesite="Strict", secure=over_https(request))


def render(request: web.Request, template: str, status: int = 200, **context) -> web.Response:
    found = request.get("dashboard")
    html = templates.get_template(template).render(
        prefix=PREFIX, csrf=found.csrf if found else None,
        me=request["session"].key if "session" in request else None, **context)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers=SECURITY_HEADERS)


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def error_page(request: web.Request, exc: GitdError) -> web.Response:
    response = render(request, "error.html.j2", status=status_of(exc), message=exc.message)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def signed_in(request: web.Request) -> bool:
    """Sets request["session"] (a verbs Session) when the cookie's session stands."""
    gitd = gitd_of(request)
    found = await run_blocking(sessions.current, gitd.store, request.cookies.get(COOKIE))
    if found is None:
        return False
    request["dashboard"] = found
    request["session"] = Session(gitd, found.key)
    request["key_name"] = found.key.name
    return True


async def read_form(request: web.Request) -> dict[str, str]:
    """The url-encoded form, at most MAX_FORM bytes; a field sent twice is refused."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise UsageError("send the form as application/x-www-form-urlencoded")
    too_large = TooLarge(f"the form is larger than {MAX_FORM} bytes")
    if (request.content_length or 0) > MAX_FORM:
        raise too_large
    raw = b""
    while chunk := await request.content.read(MAX_FORM + 1 - len(raw)):  # may come in pieces
        raw += chunk
        if len(raw) > MAX_FORM:
            raise too_large
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise UsageError("the form could not be read") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise UsageError("a field of the form was sent twice")
    return form


def same_origin(request: web.Request) -> bool:
    """Whether a browser's POST came from a page of this host (its Origin).
    An app's page on a sibling host is the same site, so SameSite cookies
    go with its posts, and it may set a cookie for the parent domain: the
    Origin tells it apart. A client that sends none passes (the CSRF tokens
    still stand); "null" (an opaque origin) does not."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc.lower() == request.host.lower()


def foreign_form(request: web.Request) -> web.Response:
    return render(request, "error.html.j2", status=403,
                  message="the form came from another site's page: open the dashboard itself")


def page(handler):
    """A GET page behind a session: no session -> the login page."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not await signed_in(request):
            return redirect(f"{PREFIX}/login")
        try:
            return await handler(request)
        except GitdError as exc:
            return error_page(request, exc)
    wrapped.__name__ = handler.__name__
    return wrapped


def action(handler):
    """A POST behind a session whose form carries the session's CSRF token;
    `handler(request, form)` runs only then."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            return foreign_form(request)
        if not await signed_in(request):
            return render(request, "login.html.j2", status=401,
                          message="your session ended: log in again", login_csrf=None)
        try:
            form = await read_form(request)
            if not sessions.csrf_matches(request["dashboard"].csrf, form.get("csrf")):
                return render(request, "error.html.j2", status=403,
                              message="the form's security token is missing or stale: "
                                      "reload the page and try again")
            return await handler(request, form)
        except GitdError as exc:
            return error_page(request, exc)
    wrapped.__name__ = handler.__name__
    return wrapped


def app_url(name: str) -> str:
    return f"{PREFIX}/apps/{name}"


# login and logout

def login_form(request: web.Request, status: int = 200, message: str | None = None):
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html.j2", status=status, message=message, login_csrf=token)
    set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
    return response


@route("GET", "/login")
async def login_page(request):
    return login_form(request)


@route("POST", "/login")
async def login(request):
    if not same_origin(request):
        return foreign_form(request)
    client = auth.client_address(request)
    attempts: auth.FailedAttempts = request.app["failed_attempts"]
    wait = attempts.retry_after(client)
    if wait:
        return error_page(request, RateLimited(
            "too many failed attempts to log in; try again later", wait))
    try:
        form = await read_form(request)
    except GitdError as exc:
        return error_page(request, exc)
    if not sessions.csrf_matches(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")):
        return login_form(request, 403, "the form expired: try again")
    opened = await run_blocking(sessions.open_session, gitd_of(request).store,
                                form.get("token", "").strip())
    if opened is None:
        attempts.failed(client)
        return login_form(request, 401, "that token is unknown, revoked or expired")
    response = redirect(f"{PREFIX}/")
    set_cookie(request, response, COOKIE, opened.session_id,
               max_age=max(1, int(opened.expires_at - time.time())))
    response.del_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@route("POST", "/logout")
@action
async def logout(request, form):
    await run_blocking(sessions.close, gitd_of(request).store, request.cookies.get(COOKIE))
    response = redirect(f"{PREFIX}/login")
    response.del_cookie(COOKIE, path=PREFIX)
    return response


# pages

@route("GET", "")
async def bare(request):
    return redirect(f"{PREFIX}/")


@route("GET", "/")
@page
async def apps_page(request):
    apps = await run_blocking(overview.apps_overview, request["session"])
    refresh = REFRESH_SECONDS if any(a["deploying"] for a in apps) else None
    return render(request, "apps.html.j2", apps=apps, refresh=refresh)


@route("GET", "/apps/{name}")
@page
async def app_page(request):
    reveal = request.query.get("reveal") == "1"
    data = await run_blocking(overview.app_page, request["session"],
                              request.match_info["name"], reveal)
    return render(request, "app.html.j2", **data)


@route("POST", "/apps/{name}/releases/{version}/rollback")
@action
async def rollback(request, form):
    name = request.match_info["name"]
    version = validate.release_version(request.match_info["version"])
    await run_blocking(releases.rollback, request["session"], name, version)
    return redirect(app_url(name))


@route("POST", "/apps/{name}/config")
@action
async def config_set(request, form):
    name = request.match_info["name"]
    key = _config_key(form, "set")
    await run_blocking(config.set_vars, request["session"], name, {key: form.get("value", "")})
    return redirect(app_url(name))


@route("POST", "/apps/{name}/config/unset")
@action
async def config_unset(request, form):
    name = request.match_info["name"]
    await run_blocking(config.unset, request["session"], name, [_config_key(form, "unset")])
    return redirect(app_url(name))


def _config_key(form, doing: str) -> str:
    key = form.get("key", "").strip()
    if not key:
        raise UsageError(f"name the config var to {doing}")
    return key


@route("GET", "/deployments/{id}/log")
async def deployment_log(request):
    """A deployment's log as server-sent events while it runs (the API's
    stream, with the session's cookie instead of a token): `data:` one line
    each, then an `end` event. It ends when the session ends."""
    if not await signed_in(request):
        return web.Response(status=401, text="log in again", headers=SECURITY_HEADERS)
    try:
        wanted = deployment_id(request)
        lines = await run_blocking(deployments.follow, request["session"], wanted)
        with request.app["live_streams"].slot(request["key_name"]):
            return await _stream(request, wanted, lines)
    except GitdError as exc:
        return web.Response(status=status_of(exc), text=exc.message, headers=SECURITY_HEADERS)


async def _stream(request: web.Request, wanted: int, lines) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SECURITY_HEADERS,
                                           "Content-Type": "text/event-stream"})
    await response.prepare(request)
    checked = time.monotonic()
    async with contextlib.aclosing(follow_blocking(lines)) as chunks:
        async for chunk in chunks:
            if request.transport is None or request.transport.is_closing():
                return response
            if time.monotonic() - checked >= deployments.ACCESS_CHECK:
                checked = time.monotonic()
                if not await signed_in(request):
                    return response  # logged out, or its token revoked, meanwhile
            if chunk:
                await response.write("".join(f"data: {line}\n\n"
                                             for line in chunk.splitlines()).encode())
            else:
                await response.write(b": still running\n\n")
    ended = await run_blocking(deployments.get, request["session"], wanted)
    await response.write(f"event: end\ndata: {ended['status']}\n\n".encode())
    return response


def _static_files() -> dict[str, bytes]:
    folder = resources.files("gitd.dashboard") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


_STATIC_BODIES = _static_files()


@route("GET", "/static/{file}")
async def static(request):
    name = request.match_info["file"]
    if name not in STATIC:
        return web.Response(status=404, text="not found")
    return web.Response(body=_STATIC_BODIES[name], content_type=STATIC[name],
                        headers={"Cache-Control": "max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

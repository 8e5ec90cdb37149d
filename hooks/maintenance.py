"""Maintenance mode (issue #25): every request to an app's routes answers
503 with Retry-After and a small page, through Traefik's file provider.

Each app in maintenance has a route file, `maintenance-<app>.yml`, in the
dynamic dir: per path group of its routes (HTTP, and HTTPS when on) a
router at the top of that path's priority band, above each of the app's
deploys (router.priority) and still below a longer prefix of another app
on the same host. The routers' service has no servers: Traefik itself
answers 503, so the status never depends on the page server. Two
middlewares dress it: a Retry-After header, and Traefik's errors
middleware fetching the page from gitd's page server (gitd.pages), whose
address lives in a file of its own (PAGE_FILE), written when gitd starts.
Should the page server be away, the answer is still a 503 with
Retry-After (a bare body).

Switching is one file written or removed: Traefik swaps its routing table
whole, so requests in flight finish where they went and no request fails.
"""

from __future__ import annotations

import html
import re
import threading
import time

from gitd.core.errors import GitdError, UsageError
from hooks import router
from hooks.components import service_paths

FILE_PREFIX = "maintenance-"
PAGE_FILE = "gitd-maintenance-page.yml"
PAGE_SERVICE = "gitd-maintenance-page"
RETRY_AFTER_SECONDS = 120
# held while an app's setting and its route file change together (a switch,
# a sync): a sync reading the setting before a switch-off must not write
# the file back after it
switching = threading.RLock()
MAX_MESSAGE = 500  # characters
# refused in a message (one class for this check and the API's schema):
# control characters but tab and newline (terminal escapes where `maintenance`
# prints it) and bidirectional overrides; the check also refuses lone
# surrogates (not UTF-8: a JSON escape can carry one), which the schema
# cannot say in a pattern its fuzzers read
REFUSED_CHARACTERS = ("\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u200e\\u200f\\u202a-\\u202e"
                      "\\u2066-\\u2069")
MESSAGE_PATTERN = f"^[^{REFUSED_CHARACTERS}]*$"
DEFAULT_MESSAGE = "This app is down for maintenance. Please try again shortly."


def router_prefix(app: str) -> str:
    # "_" never appears in an app's name: no app's names can be another's
    return f"gitd-maintenance_{app}"


def route_file_name(app: str) -> str:
    return f"{FILE_PREFIX}{app}.yml"


def priority(path: str) -> int:
    """The top of `path`'s band: above every deploy of that prefix (held
    below it by router.priority), below any longer prefix."""
    return router.PRIORITY_BAND * len(path) - 1


def check_message(message: str | None) -> str:
    """The page's message: bounded, printable text (newlines kept)."""
    if message is None:
        return DEFAULT_MESSAGE
    odd = re.search(f"[{REFUSED_CHARACTERS}\\ud800-\\udfff]", message)
    if odd:
        raise UsageError(f"the maintenance message holds control characters ({odd.group()!r}): "
                         "plain text and newlines only")
    message = message.strip()
    if len(message) > MAX_MESSAGE:
        raise UsageError(f"the maintenance message is {len(message)} characters; "
                         f"at most {MAX_MESSAGE}")
    return message or DEFAULT_MESSAGE


def page_html(app: str, message: str) -> str:
    """The page: the message escaped, its lines kept apart."""
    lines = "<br>\n".join(html.escape(line) for line in message.split("\n"))
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<title>{html.escape(app)}: down for maintenance</title>\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;"
            "padding:0 1em;color:#222}</style></head>\n"
            f"<body><h1>Down for maintenance</h1>\n<p>{lines}</p></body></html>\n")


def route_config(app: str, app_routes, entrypoint: str = "web", tls_entrypoint: str = "") -> dict:
    """The app's maintenance routers as file-provider config ({} when it has
    no routes). `app_routes`: host names or HostRoutes."""
    name = router_prefix(app)
    retry_after, page = f"{name}_retry-after", f"{name}_page"
    routers = {}
    for index, (path, _, hosts) in enumerate(router.path_groups(router.as_routes(app_routes))):
        config = {"rule": router.path_rule(list(hosts), path), "entryPoints": [entrypoint],
                  "priority": priority(path), "service": name,
                  # outermost first: the header survives the page taking the body
                  "middlewares": [retry_after, page]}
        routers[f"{name}_p{index}"] = config
        if tls_entrypoint:
            routers[f"{name}_p{index}_tls"] = {**config, "entryPoints": [tls_entrypoint],
                                               "tls": {}}
    if not routers:
        return {}
    middlewares = {
        retry_after: {"headers": {"customResponseHeaders": {
            "Retry-After": str(RETRY_AFTER_SECONDS)}}},
        # the errors middleware keeps the 503 and takes the page's body and headers
        page: {"errors": {"status": ["503"], "service": PAGE_SERVICE, "query": f"/{app}"}},
    }
    # no servers: Traefik's own 503 (as router.fallback_config's); one per
    # app, as a name defined in two files of the provider is skipped with a warning
    services = {name: {"loadBalancer": {"servers": []}}}
    return {"http": {"routers": routers, "middlewares": middlewares, "services": services}}


def page_service_config(url: str) -> dict:
    return {"http": {"services": {PAGE_SERVICE: {"loadBalancer": {"servers": [{"url": url}]}}}}}


def router_names(config: dict) -> list[str]:
    return sorted((config.get("http") or {}).get("routers") or {})


def uses_file_provider(settings) -> bool:
    """Only a managed Traefik reads gitd's route files and reaches its page server."""
    return settings.traefik == "managed"


def require_managed_traefik(settings) -> None:
    if not uses_file_provider(settings):
        raise GitdError("maintenance mode needs the managed Traefik (setting traefik = "
                        "managed): an external Traefik does not read gitd's route files; "
                        "nothing changed")


def app_routes(store, app: str) -> list:
    """Every route the app answers: its own, and those of each app.json
    service of its live release (`/api` on each of them: a longer prefix,
    so a router of its own is needed to outrank it)."""
    own = store.routes(app)
    release = store.current_release(app)
    services = (release.components or {}).values() if release else ()
    return own + [route for service in services for route in service_paths(own, service)]


def app_config(settings, store, app: str) -> dict:
    return route_config(app, app_routes(store, app), settings.traefik_entrypoint,
                        router.HTTPS_ENTRYPOINT if settings.https else "")


def write(settings, app: str, config: dict) -> bool:
    """The app's route file holds `config`; True when it changed."""
    path = settings.dynamic_dir / route_file_name(app)
    text = router.route_file_text(config)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    router.write_route_file(path, text)
    return True


def remove(settings, app: str) -> None:
    (settings.dynamic_dir / route_file_name(app)).unlink(missing_ok=True)


def in_maintenance(app) -> bool:
    return bool((app.settings or {}).get("maintenance"))


def sync(settings, store) -> None:
    """Each app in maintenance has its route file, for its routes of now
    (a domain added or removed meanwhile); no other app has one."""
    if not uses_file_provider(settings) or not settings.dynamic_dir.is_dir():
        return
    with switching:
        wanted = set()
        for app in store.list_apps():
            if in_maintenance(app):
                wanted.add(route_file_name(app.name))
                write(settings, app.name, app_config(settings, store, app.name))
        for path in settings.dynamic_dir.glob(f"{FILE_PREFIX}*.yml"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)


def cover(settings, store, app: str, routes) -> None:
    """Before a deploy of an app in maintenance routes `routes` (its
    targets': a new app.json service's, a domain just added), the page
    covers them too, confirmed, so none answers from the app meanwhile
    (`sync` after the deploy keeps only the routes the app still has)."""
    if not uses_file_provider(settings):
        return
    with switching:
        if not in_maintenance(store.get_app(app)):
            return
        config = route_config(app, app_routes(store, app) + router.as_routes(routes),
                              settings.traefik_entrypoint,
                              router.HTTPS_ENTRYPOINT if settings.https else "")
        if write(settings, app, config):
            confirm(settings.api_url, router_names(config), live=True)


def _router_states(api_url: str, names: list[str]) -> dict[str, str | None]:
    """{router: its status in Traefik, None when Traefik has no such router}."""
    states = {}
    for name in names:
        states[name] = router.router_status(api_url, name, "file")
    return states


def confirm(api_url: str, names: list[str], live: bool, timeout: float = 15.0) -> float:
    """Wait until Traefik runs every router of `names` enabled (`live`), or
    none of them; the seconds it took."""
    start = time.monotonic()
    states: dict = {}
    while time.monotonic() < start + timeout:
        states = _router_states(api_url, names)
        if all((state == "enabled") if live else (state is None) for state in states.values()):
            return time.monotonic() - start
        time.sleep(0.1)
    raise GitdError(f"Traefik did not {'take up' if live else 'drop'} the maintenance routes "
                    f"within {timeout:g}s (it reports {states})")

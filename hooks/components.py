"""The repo's own services ("components" here, apart from the database
services of services:create): one push builds and deploys several.

They are declared in app.json's `services` object (issue #13):

    {"services": {
        "frontend": {"build": {"dir": "frontend"}, "port": 3000,
                     "routes": [{"path": "/"}]},
        "backend": {"build": {"flake_attr": "backendImage"}, "port": 8080,
                    "processes": {"web": "serve", "worker": "work"},
                    "healthchecks": {"path": "/health"},
                    "routes": [{"path": "/api", "strip_prefix": true}]}}}

Parsing is strict: an unknown key, a repeated key, a wrong type or an
out-of-range value fails the push with a message naming where. A repo whose
app.json has no `services` has no components and deploys as before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from gitd.core import validate
from gitd.core.validate import attr_name, build_dir
from gitd.core.errors import UsageError
from gitd.core.store import HostRoute
from hooks import checks

MAX_COMPONENTS = 16
MAX_ROUTES = 16
MAX_PROCESSES = 16
MAX_COMMAND = 4096
MAX_APP_JSON = 256 * 1024
# a DNS label (the network alias) that also makes an env name (<NAME>_URL)
COMPONENT_NAME = re.compile(r"[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,29}")
COMPONENT_KEYS = {"build", "port", "processes", "healthchecks", "routes"}
BUILD_KEYS = {"dir", "flake_attr"}
ROUTE_KEYS = {"path", "strip_prefix"}


@dataclass(frozen=True)
class ComponentRoute:
    path: str
    strip_prefix: bool = False


@dataclass(frozen=True)
class Component:
    name: str
    build_dir: str = ""  # "" with a flake_attr: the repo's root flake
    flake_attr: str = ""
    port: int = 5000
    processes: dict = field(default_factory=dict)  # type -> command; {} = the image's own + Procfile
    healthchecks: dict = field(default_factory=dict)  # checks.parse_values output
    routes: tuple[ComponentRoute, ...] = ()

    @property
    def env_name(self) -> str:
        return env_name(self.name)

    @property
    def url(self) -> str:
        return f"http://{self.name}:{self.port}"


def env_name(name: str) -> str:
    return name.upper().replace("-", "_") + "_URL"


def join_paths(outer: str, inner: str) -> str:
    """A service's route prefix under one of the app's routes."""
    if outer == "/":
        return inner
    if inner == "/":
        return outer
    return outer + inner


def service_paths(app_routes: list[HostRoute], service: dict) -> list[HostRoute]:
    """An app.json service's routes (as a release records them) on each of
    the app's routes."""
    return [HostRoute(r.host, join_paths(r.path, path), strip)
            for r in app_routes for path, strip in service.get("routes", [])]


def under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or lies below it, whole segments only."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def route_owner(routes_of_host: dict[str, str], path: str) -> str | None:
    """The app whose route on a host takes `path` (the longest prefix)."""
    owning = [p for p in routes_of_host if under(path, p)]
    return routes_of_host[max(owning, key=len)] if owning else None


def _refuse_repeats(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise UsageError(f"app.json repeats the key {str(key)[:40]!r}")
        seen[key] = value
    return seen


def parse(text: str | None) -> list[Component]:
    """The components app.json declares, in name order; [] without `services`."""
    if not text:
        return []
    if len(text) > MAX_APP_JSON:
        raise UsageError(f"app.json is larger than {MAX_APP_JSON // 1024} KiB")
    try:
        data = json.loads(text, object_pairs_hook=_refuse_repeats)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"app.json is not valid JSON: {str(exc)[:200]}")
    if not isinstance(data, dict) or "services" not in data:
        return []
    section = data["services"]
    if not isinstance(section, dict) or not section:
        raise UsageError("app.json services must be an object naming at least one service")
    if len(section) > MAX_COMPONENTS:
        raise UsageError(f"app.json declares {len(section)} services; at most {MAX_COMPONENTS}")
    components = [_component(name, body) for name, body in sorted(section.items())]
    _refuse_shared_paths(components)
    return components


def _component(name, body) -> Component:
    if not isinstance(name, str) or not COMPONENT_NAME.fullmatch(name):
        raise UsageError(f"app.json service name {_show(name)} must be lowercase letters, digits "
                         "and single dashes, a letter first, at most 30 characters")
    where = f"app.json services.{name}"
    if not isinstance(body, dict):
        raise UsageError(f"{where} must be an object")
    unknown = sorted(set(body) - COMPONENT_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {_show(unknown[0])} (known: {', '.join(sorted(COMPONENT_KEYS))})")
    if "build" not in body:
        raise UsageError(f"{where}: missing build ({{\"dir\": ...}} or {{\"flake_attr\": ...}})")
    directory, attr = _build(where, body["build"])
    port = validate.port(body.get("port", 5000), f"{where}.port")
    return Component(name=name, build_dir=directory, flake_attr=attr, port=port,
                     processes=_processes(where, body.get("processes", {})),
                     healthchecks=_healthchecks(where, body.get("healthchecks", {})),
                     routes=_routes(where, body.get("routes", [])))


def _build(where: str, build) -> tuple[str, str]:
    if not isinstance(build, dict) or len(build) != 1 or not set(build) <= BUILD_KEYS:
        raise UsageError(f"{where}.build must be {{\"dir\": \"SUBDIR\"}} or {{\"flake_attr\": \"NAME\"}}")
    ((key, value),) = build.items()
    if not isinstance(value, str):
        raise UsageError(f"{where}.build.{key} must be a string")
    if key == "flake_attr":
        return "", attr_name(value, f"{where}.build.flake_attr")
    directory = build_dir(value)
    if not directory:
        raise UsageError(f"{where}.build.dir must name a subdirectory, not the repository's root")
    return directory, ""


def _processes(where: str, processes) -> dict:
    if not isinstance(processes, dict) or len(processes) > MAX_PROCESSES:
        raise UsageError(f"{where}.processes must be an object of at most {MAX_PROCESSES} "
                         "process types and their commands")
    out = {}
    for kind, command in processes.items():
        if not isinstance(kind, str) or not validate.PROCESS_TYPE.fullmatch(kind):
            raise UsageError(f"{where}.processes: invalid process type {_show(kind)}")
        if (not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND
                or "\0" in command or "\n" in command):
            raise UsageError(f"{where}.processes.{kind} must be one line of command, "
                             f"at most {MAX_COMMAND} characters")
        out[kind] = command.strip()
    return out


def _healthchecks(where: str, values) -> dict:
    if not isinstance(values, dict):
        raise UsageError(f"{where}.healthchecks must be an object (path, timeout, attempts, wait)")
    try:
        return checks.parse_values(values)
    except UsageError as exc:
        raise UsageError(f"{where}.healthchecks: {exc}") from None


def _routes(where: str, routes) -> tuple[ComponentRoute, ...]:
    if not isinstance(routes, list) or len(routes) > MAX_ROUTES:
        raise UsageError(f"{where}.routes must be a list of at most {MAX_ROUTES} routes")
    out: list[ComponentRoute] = []
    for index, route in enumerate(routes):
        at = f"{where}.routes[{index}]"
        if not isinstance(route, dict) or "path" not in route or not set(route) <= ROUTE_KEYS:
            raise UsageError(f"{at} must be {{\"path\": \"/PREFIX\", \"strip_prefix\": true|false}}")
        path, strip = route["path"], route.get("strip_prefix", False)
        if not isinstance(path, str):
            raise UsageError(f"{at}.path must be a string")
        try:
            path = validate.path_prefix(path)
        except UsageError as exc:
            raise UsageError(f"{at}: {exc}") from None
        if not isinstance(strip, bool):
            raise UsageError(f"{at}.strip_prefix must be true or false")
        if strip and path == "/":
            raise UsageError(f"{at}: strip_prefix on \"/\" strips nothing")
        if any(r.path == path for r in out):
            raise UsageError(f"{at}: the path {path} is given twice")
        out.append(ComponentRoute(path, strip))
    return tuple(out)


def _refuse_shared_paths(components: list[Component]) -> None:
    owner: dict[str, str] = {}
    for component in components:
        for route in component.routes:
            if route.path in owner:
                raise UsageError(f"app.json: services {owner[route.path]} and {component.name} "
                                 f"both route {route.path}")
            owner[route.path] = component.name


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

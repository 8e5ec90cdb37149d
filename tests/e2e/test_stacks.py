"""Pushes without a Dockerfile, end to end: real git, ssh, gitd, Docker and
Traefik. The gitd here builds on the host network (a container on Docker's
bridge has no route out on this machine) from the stack images .ci/images
builds out of Debian's packages, mapped with [base_images]."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import docker.errors
import pytest

import buildpacks
from buildpacks.stacks import STAGE_LABEL
from tests.conftest import require
from tests.e2e import stack_samples
from tests.e2e.harness import commit, make_repo, new_gitd, unique_app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stacks_gitd(docker_client, base_image, tmp_path_factory):
    for image in stack_samples.BASE_IMAGES.values():
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            require(False, f"no {image} image: run `bash .ci/images/build`")
    server = new_gitd(tmp_path_factory.mktemp("stacks-gitd"))
    (server.data_dir / "gitd.toml").write_text(stack_samples.GITD_TOML)
    server.start()
    yield server
    server.stop()
    server.cleanup(docker_client)


@pytest.fixture
def new_app(stacks_gitd, docker_client):
    created: list[str] = []

    def make(prefix: str) -> str:
        app = unique_app(prefix)
        assert stacks_gitd.ssh("apps:create", app).returncode == 0
        assert stacks_gitd.ssh("checks:set", app, "drain=0").returncode == 0
        created.append(app)
        return app

    yield make
    for app in created:
        destroyed = stacks_gitd.ssh("apps:destroy", app, "--force")
        assert destroyed.returncode == 0, destroyed.stderr
        assert stacks_gitd.containers(docker_client, app) == []
        assert docker_client.images.list(name=f"gitd/{app}") == []


def pushed(gitd, repo, app) -> str:
    result = gitd.push(repo, app, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stderr.replace("remote: ", "")


def rejected(gitd, repo, app) -> str:
    result = gitd.push(repo, app, timeout=600)
    assert result.returncode != 0, result.stderr
    assert "[remote rejected] main -> main" in result.stderr
    return result.stderr.replace("remote: ", "")


def ssh_ok(gitd, *args) -> str:
    result = gitd.ssh(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def step_result(log: str, instruction: str) -> str:
    """The line the classic builder printed after the step running `instruction`."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for index, text in enumerate(lines):
        if re.match(r"Step \d+/\d+ : ", text) and text.endswith(instruction):
            return lines[index + 1]
    raise AssertionError(f"no step {instruction!r} in:\n{log}")


REASONS = {"python": "found requirements.txt", "node": "found package.json (npm, package-lock.json)",
           "go": "found go.mod", "rust": "found Cargo.toml", "ruby": "found Gemfile",
           "static": "found index.html"}


@pytest.mark.parametrize("stack", list(stack_samples.SAMPLES))
def test_each_stack_sample_is_built_without_a_dockerfile_and_answers(
        stacks_gitd, docker_client, new_app, tmp_path, stack):
    gitd = stacks_gitd
    app = new_app(stack)
    repo = make_repo(tmp_path / app, stack_samples.files(stack, f"hello from {stack}"))
    shown = ssh_ok(gitd, "buildpacks:show", app)  # before any push
    assert "buildpack:   no push yet" in shown
    log = pushed(gitd, repo, app)
    assert f"{stack} buildpack: {REASONS[stack]}" in log
    assert f"-----> Building the {stack} stack ({REASONS[stack]})" in log
    status, body = gitd.wait_for(gitd.host(app), f"hello from {stack}", timeout=60)
    assert status == 200, body
    if stack not in ("static", "rust"):  # (Rust's std cannot tell its uid)
        assert "uid=10001" in body  # the app runs as the template's non-root user
    container = gitd.containers(docker_client, app)[0]
    assert container.image.attrs["Config"]["User"] == ("10001:10001" if stack == "static" else "10001")
    if stack in ("python", "node", "ruby"):  # the code is in /app, the generated Dockerfile not
        listing = container.exec_run(["ls", "-a", "/app"]).output.decode()
        assert "app" in listing or "server.js" in listing, listing
        assert "Dockerfile" not in listing and ".dockerfile" not in listing, listing
    shown = ssh_ok(gitd, "buildpacks:show", app)
    assert f"buildpack:   {stack} ({REASONS[stack]})" in shown
    assert f"live:        v1 built with {stack}" in shown
    dockerfile = ssh_ok(gitd, "buildpacks:show", app, "--dockerfile")
    assert f"# Rendered by gitd's stacks buildpack: {stack}" in dockerfile
    assert "USER 10001" in dockerfile


@pytest.mark.parametrize("stack, install, downloads", [
    ("python", "RUN pip install -r /tmp/requirements.txt", ("Collecting ", "Downloading ")),
    ("node", "RUN npm ci --omit=dev", ("added 1 package",)),
])
def test_a_code_only_repush_installs_no_dependency_again(
        stacks_gitd, new_app, tmp_path, stack, install, downloads):
    gitd = stacks_gitd
    app = new_app(f"re{stack}")
    repo = make_repo(tmp_path / app, stack_samples.files(stack, "first"))
    first = pushed(gitd, repo, app)
    assert step_result(first, install) in ("---> Using cache",) or any(
        d in first for d in downloads)  # an earlier test may have cached the same manifests
    commit(repo, stack_samples.files(stack, "second"), "one line of code changes")
    second = pushed(gitd, repo, app)
    assert step_result(second, install) == "---> Using cache", second
    for download in downloads:
        assert download not in second
    assert gitd.wait_for(gitd.host(app), "second", timeout=60)[0] == 200
    # a changed dependency manifest does install again (a change no earlier
    # run made: the layer cache is the engine's, shared by every run)
    files = stack_samples.files(stack, "third")
    if stack == "python":
        files["requirements.txt"] += f"# {app}\n"
    else:
        files["package.json"] = files["package.json"].replace(
            '"version": "1.0.0"', f'"description": "{app}", "version": "1.0.0"', 1)
    commit(repo, files, "manifest changes")
    third = pushed(gitd, repo, app)
    assert step_result(third, install) != "---> Using cache"
    assert gitd.wait_for(gitd.host(app), "third", timeout=60)[0] == 200


def test_nothing_to_detect_lists_every_file_looked_for(stacks_gitd, new_app, tmp_path):
    gitd = stacks_gitd
    app = new_app("nothing")
    repo = make_repo(tmp_path / app, {"README.md": "docs only\n", "notes.txt": "x\n"})
    log = rejected(gitd, repo, app)
    for name in ("flake.nix", "Dockerfile", "requirements.txt", "pyproject.toml", "Pipfile",
                 "package.json", "go.mod", "Cargo.toml", "Gemfile", "index.html"):
        assert name in log
    assert buildpacks.nothing_found() in log
    shown = ssh_ok(gitd, "buildpacks:show", app)
    assert "buildpack:   no push yet" in shown  # the ref did not move


def test_no_web_command_fails_saying_what_to_add_and_the_old_release_keeps_serving(
        stacks_gitd, new_app, tmp_path):
    gitd = stacks_gitd
    app = new_app("noweb")
    repo = make_repo(tmp_path / app, stack_samples.files("ruby", "ruby v1"))
    pushed(gitd, repo, app)
    commit(repo, {"Procfile": None}, "Procfile removed")
    log = rejected(gitd, repo, app)
    assert "ruby: no web command: add a Procfile with a `web:` line, or a config.ru" in log
    assert gitd.wait_for(gitd.host(app), "ruby v1")[0] == 200


def test_buildpacks_set_forces_a_stack_and_show_prints_its_dockerfile(
        stacks_gitd, new_app, tmp_path):
    gitd = stacks_gitd
    app = new_app("forced")
    # index.html and a Python app: python is detected first, static is forced
    files = {**stack_samples.files("python", "python app"), "index.html": "<p>static site</p>\n"}
    repo = make_repo(tmp_path / app, files)
    data = json.loads(ssh_ok(gitd, "buildpacks:show", app, "--json"))
    assert (data["selected"], data["reason"]) == (None, "no push yet")
    refused = gitd.ssh("buildpacks:show", app, "--dockerfile")
    assert refused.returncode != 0 and "no push yet" in refused.stderr
    pushed(gitd, repo, app)
    assert gitd.wait_for(gitd.host(app), "python app")[0] == 200
    data = json.loads(ssh_ok(gitd, "buildpacks:show", app, "--json"))
    assert (data["selected"], data["reason"]) == ("python", "found requirements.txt")
    assert data["stack"]["web"].startswith("gunicorn --bind 0.0.0.0:${PORT:-5000} app:app")
    dockerfile = ssh_ok(gitd, "buildpacks:show", app, "--dockerfile")
    assert "FROM gitd-ci/stack-python:latest AS build" in dockerfile
    assert f'LABEL "gitd.build-stage"="{gitd.instance}/{app}"' in dockerfile  # as built
    assert "COPY requirements.txt /tmp/requirements.txt" in dockerfile

    for bad in ("unknownstack", "Python", "python;ls", "../static"):
        refused = gitd.ssh("buildpacks:set", app, bad)
        assert refused.returncode == 2 and "unknown buildpack" in refused.stderr, refused.stderr
    assert "set with buildpacks:set" not in ssh_ok(gitd, "buildpacks:show", app)

    ssh_ok(gitd, "buildpacks:set", app, "static")
    assert "static (set with buildpacks:set)" in ssh_ok(gitd, "buildpacks:show", app)
    assert "exec httpd -f -v -p ${PORT:-5000} -h /site -c /dev/null" in ssh_ok(gitd, "buildpacks:show", app,
                                                                "--dockerfile")
    commit(repo, {}, "serve the static site")
    log = pushed(gitd, repo, app)
    assert "static buildpack: set with buildpacks:set" in log
    assert gitd.wait_for(gitd.host(app), "static site")[0] == 200

    ssh_ok(gitd, "buildpacks:set", app, "go")  # no go.mod: the push says what go needs
    commit(repo, {}, "go?")
    assert "the go stack needs go.mod at the build root" in rejected(gitd, repo, app)
    assert gitd.wait_for(gitd.host(app), "static site")[0] == 200


def test_hostile_manifests_fail_the_push_cleanly(stacks_gitd, new_app, tmp_path):
    gitd = stacks_gitd
    app = new_app("hostile")
    repo = make_repo(tmp_path / app, {"package.json": "{not json", "server.js": ""})
    assert "package.json is not valid JSON" in rejected(gitd, repo, app)
    (repo / "package.json").unlink()
    (repo / "package.json").symlink_to("/etc/passwd")
    commit(repo, {}, "a symlink")
    # pointing outside: the export refuses it (#10) before the stack reads it
    assert "refusing symlink package.json -> /etc/passwd" in rejected(gitd, repo, app)
    (repo / "package.json").unlink()
    (repo / "package.json").symlink_to("server.js")
    commit(repo, {}, "a symlink inside the tree")
    assert "package.json is a symlink" in rejected(gitd, repo, app)
    commit(repo, {"package.json": None, "pyproject.toml": "[project]\ndependencies = "
                  '["six\\nRUN touch /pwned"]\n', "app.py": "app = Flask(__name__)\n"}, "inject")
    log = rejected(gitd, repo, app)
    assert "pyproject.toml [project]: unsupported dependency" in log
    assert "Step 1/" not in log  # nothing was built
    commit(repo, {"pyproject.toml": "x" * (2 * 1024 * 1024)}, "huge")
    assert "pyproject.toml is larger than 1024 KiB" in rejected(gitd, repo, app)
    commit(repo, {"pyproject.toml": None, "Cargo.toml":
                  '[package]\nname = "x"\n[[bin]]\nname = "a/../../etc"\n'}, "odd binary")
    assert "Cargo.toml: unsupported binary name" in rejected(gitd, repo, app)
    with gitd.db() as db:
        statuses = db.execute("SELECT status FROM releases WHERE app = ?", [app]).fetchall()
    assert {s for (s,) in statuses} == {"failed"}


def test_a_build_script_output_directory_is_served_as_a_static_site(stacks_gitd, new_app, tmp_path):
    gitd = stacks_gitd
    app = new_app("built")
    repo = make_repo(tmp_path / app, {
        "package.json": json.dumps({"name": "site", "version": "1.0.0",
                                    "scripts": {"build": "node build.js"}}) + "\n",
        "build.js": ("const fs = require('fs');\nfs.mkdirSync('dist', {recursive: true});\n"
                     "fs.writeFileSync('dist/index.html', '<p>built by npm run build</p>\\n');\n"),
    })
    log = pushed(gitd, repo, app)
    assert ("static buildpack: package.json has a build script and no start script" in log)
    assert gitd.wait_for(gitd.host(app), "built by npm run build", timeout=60)[0] == 200
    commit(repo, {"build.js": "// writes nothing\n"}, "a build that leaves no site")
    log = rejected(gitd, repo, app)
    assert "the build left no index.html in dist build out public" in log
    assert gitd.wait_for(gitd.host(app), "built by npm run build")[0] == 200


def test_pyproject_dependencies_are_installed_even_when_the_repo_ignores_dotfiles(
        stacks_gitd, new_app, tmp_path):
    gitd = stacks_gitd
    app = new_app("pyproj")
    files = stack_samples.files("python", "from pyproject")
    del files["requirements.txt"]
    files.update({
        "pyproject.toml": '[project]\nname = "sample"\nversion = "0.1.0"\n'
                          'dependencies = ["gunicorn==23.0.0", "six==1.17.0"]\n',
        "uv.lock": "version = 1\n",
        ".dockerignore": ".*\n*.md\n",
        "README.md": "not in the image\n",
    })
    repo = make_repo(tmp_path / app, files)
    log = pushed(gitd, repo, app)
    assert "python buildpack: found pyproject.toml" in log
    assert "uv.lock found: pip installs the ranges in pyproject.toml" in log
    assert "2 dependencies from pyproject.toml" in log
    assert gitd.wait_for(gitd.host(app), "from pyproject six=1.17.0", timeout=60)[0] == 200
    shown = ssh_ok(gitd, "buildpacks:show", app, "--dockerfile")
    assert "COPY .gitd-build/requirements.txt /tmp/requirements.txt" in shown


def raw_get(gitd, app: str, path: str) -> tuple[int, dict, str]:
    """(status, headers, body) of GET `path` through Traefik."""
    request = urllib.request.Request(f"http://127.0.0.1:{gitd.http_port}{path}",
                                     headers={"Host": gitd.host(app)})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode(errors="replace")


def test_a_static_site_serves_its_files_only_with_a_static_server(stacks_gitd, new_app, tmp_path):
    gitd = stacks_gitd
    app = new_app("site")
    repo = make_repo(tmp_path / app, {
        "index.html": "<p>the site</p>\n", "style.css": "p { margin: 0 }\n",
        ".env": "SECRET=hunter2\n", "notes/draft.txt": "a draft\n",
        "cgi-bin/run": "#!/bin/sh\necho 'Content-type: text/plain'\necho\necho ran as cgi\n",
        # busybox httpd obeys an httpd.conf in any served directory: an
        # interpreter for *.sh, a deny-all at the root
        "httpd.conf": "D:*\n", "sub/httpd.conf": "*.sh:/bin/sh\n",
        "sub/x.sh": "echo 'Content-type: text/plain'\necho\necho ran as script\n"})
    (repo / "cgi-bin" / "run").chmod(0o755)
    (repo / "link.txt").symlink_to(".env")
    commit(repo, {}, "an executable and a symlink")
    pushed(gitd, repo, app)
    assert gitd.wait_for(gitd.host(app), "the site", timeout=60)[0] == 200
    status, headers, body = raw_get(gitd, app, "/style.css")
    assert (status, headers.get("Content-type") or headers.get("Content-Type"),
            body) == (200, "text/css", "p { margin: 0 }\n")
    assert "SimpleHTTP" not in headers.get("Server", "")
    assert raw_get(gitd, app, "/notes/draft.txt")[0] == 200
    for path in ("/.env", "/link.txt", "/notes/", "/.gitd-build/Dockerfile"):
        status, _, body = raw_get(gitd, app, path)
        assert status == 404 and "hunter2" not in body and "Directory listing" not in body, (path, body)
    status, _, body = raw_get(gitd, app, "/cgi-bin/run")
    assert "ran as cgi" not in body, (status, body)
    status, _, body = raw_get(gitd, app, "/sub/x.sh")  # a file, not a script that ran
    assert status == 200 and body.startswith("echo"), (status, body)
    for path in ("/httpd.conf", "/sub/httpd.conf"):  # busybox httpd never serves the name
        status, _, body = raw_get(gitd, app, path)
        assert status in (403, 404) and "D:*" not in body and "*.sh" not in body, (path, body)


DJANGO_SETTINGS = (
    "from pathlib import Path\n"
    "BASE_DIR = Path(__file__).resolve().parent.parent\n"
    "SECRET_KEY = 'test only'\nDEBUG = False\nALLOWED_HOSTS = ['*']\n"
    "INSTALLED_APPS = ['django.contrib.contenttypes', 'django.contrib.auth',\n"
    "                  'django.contrib.staticfiles']\n"
    "MIDDLEWARE = []\nROOT_URLCONF = 'mysite.urls'\nUSE_TZ = True\n"
    "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3',\n"
    "                         'NAME': BASE_DIR / 'db.sqlite3'}}\n"  # SQLite in /app: Django's default
    "STATIC_URL = '/static/'\nSTATICFILES_DIRS = [BASE_DIR / 'assets']\n"
    "STATIC_ROOT = BASE_DIR / 'staticfiles'\n")


def django_project() -> dict:
    return {
        "requirements.txt": "Django==5.1.4\ngunicorn==23.0.0\n",
        "Procfile": "release: python manage.py migrate --noinput\n",
        "manage.py": ("import os\nimport sys\n\n"
                      "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
                      "from django.core.management import execute_from_command_line\n"
                      "execute_from_command_line(sys.argv)\n"),
        "mysite/__init__.py": "",
        "mysite/settings.py": DJANGO_SETTINGS,
        "mysite/urls.py": ("import os\nfrom django.http import HttpResponse\n"
                           "from django.urls import path\n\n\n"
                           "def index(request):\n"
                           "    return HttpResponse('django uid=%d\\n' % os.getuid())\n\n\n"
                           "urlpatterns = [path('', index)]\n"),
        "mysite/wsgi.py": ("import os\nfrom django.core.wsgi import get_wsgi_application\n\n"
                           "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
                           "application = get_wsgi_application()\n"),
        "assets/site.css": "body { color: teal }\n",
    }


def test_a_django_app_owns_its_directory_and_collects_static_files_at_build(
        stacks_gitd, new_app, tmp_path):
    gitd = stacks_gitd
    app = new_app("django")
    repo = make_repo(tmp_path / app, django_project())
    log = pushed(gitd, repo, app)
    assert "-----> python manage.py collectstatic --noinput" in log
    assert re.search(r"\d+ static files? copied to '/app/staticfiles'", log), log
    # the release phase writes Django's default SQLite file into /app
    assert "Running release command: python manage.py migrate --noinput" in log
    assert "Applying auth.0001_initial... OK" in log
    assert gitd.wait_for(gitd.host(app), "django uid=10001", timeout=60)[0] == 200
    # #20: a volume the stack's user (10001, no root) keeps its database on
    assert "storage at /data: owner 0:0 -> 10001:10001" in ssh_ok(
        gitd, "storage:mount", app, "data:/data")
    for argv in (["test", "-f", "/app/staticfiles/site.css"], ["touch", "/app/x"],
                 ["mkdir", "/app/uploads"], ["touch", "/data/db.sqlite3"]):
        result = gitd.ssh("run", app, "--", *argv)
        assert result.returncode == 0, (argv, result.stderr)
    # a collectstatic that fails (here: a STATIC_ROOT the app may not write)
    # fails the build, with Django's error; the live release keeps serving
    settings = DJANGO_SETTINGS.replace("BASE_DIR / 'staticfiles'", "'/srv/static'")
    commit(repo, {"mysite/settings.py": settings}, "static files outside /app")
    log = rejected(gitd, repo, app)
    assert "python manage.py collectstatic --noinput" in log and "Permission denied" in log, log
    assert gitd.wait_for(gitd.host(app), "django uid=10001")[0] == 200


def build_stage_image(log: str) -> str:
    """The id of the last image of a two-stage build's first stage."""
    lines = [ln.strip() for ln in log.splitlines()]
    froms = [i for i, ln in enumerate(lines) if re.match(r"Step \d+/\d+ : FROM ", ln)]
    assert len(froms) == 2, log
    ids = [m.group(1) for ln in lines[:froms[1]] if (m := re.fullmatch(r"---> ([0-9a-f]{12})", ln))]
    assert ids, log
    return ids[-1]


def test_apps_destroy_removes_the_build_stage_images(stacks_gitd, docker_client, tmp_path):
    gitd = stacks_gitd
    app = unique_app("stages")
    ssh_ok(gitd, "apps:create", app)
    repo = make_repo(tmp_path / app, stack_samples.files("python", "stages"))
    stage = docker_client.images.get(build_stage_image(pushed(gitd, repo, app)))
    assert stage.labels.get(STAGE_LABEL) == f"{gitd.instance}/{app}"
    ssh_ok(gitd, "apps:destroy", app, "--force")
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(stage.id)
    assert docker_client.images.list(filters={"label": f"{STAGE_LABEL}={gitd.instance}/{app}"}) == []

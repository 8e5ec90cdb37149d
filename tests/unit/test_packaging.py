"""The wheel and the sdist hold every file the code loads at run time.

The list is derived from the code, not kept by hand: every jinja2
environment and every `Path` a module keeps at its top level (such as
`Path(__file__).parent / "templates"`) names files the installed package
needs. The sdist and the wheel are built the way pip builds them (the wheel
from the unpacked sdist), offline."""

import ast
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePath

import jinja2
import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("gitd", "hooks", "buildpacks")


def modules():
    for package in PACKAGES:
        yield importlib.import_module(package)
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            if not info.name.endswith(".__main__"):  # runs the CLI
                yield importlib.import_module(info.name)


def environments() -> dict[str, jinja2.Environment]:
    """"module:attribute" -> every jinja2 environment the code keeps."""
    return {f"{m.__name__}:{name}": value for m in modules() for name, value in vars(m).items()
            if isinstance(value, jinja2.Environment)}


def loader_roots(loader) -> list[Path]:
    if isinstance(loader, jinja2.FileSystemLoader):
        return [Path(p) for p in loader.searchpath]
    if isinstance(loader, jinja2.PackageLoader):
        package = importlib.import_module(loader.package_name)
        return [Path(package.__file__).parent / loader.package_path]
    raise AssertionError(f"teach this test the files of {type(loader).__name__}")


def data_paths() -> set[Path]:
    """Files and directories outside Python modules that modules point at."""
    found = {root for env in environments().values() for root in loader_roots(env.loader)}
    for module in modules():
        for value in vars(module).values():
            if isinstance(value, PurePath) and Path(value).is_relative_to(REPO) \
                    and Path(value).exists():
                found.add(Path(value))
    return found


def loaded_files() -> set[str]:
    """Every data file the code loads, relative to the install root."""
    files = set()
    for path in data_paths():
        for file in ([path] if path.is_file() else path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".py":
                files.add(file.relative_to(REPO).as_posix())
    return files


def test_the_code_loads_templates_from_the_package_directories():
    files = loaded_files()
    assert "gitd/templates/traefik.yml.j2" in files
    assert "buildpacks/templates/stacks/python.Dockerfile.j2" in files
    assert all(f.split("/")[0] in PACKAGES for f in files), files


def test_every_template_the_code_names_is_there():
    """A template name in the code ("static.Dockerfile.j2") that no loader
    finds would only fail at run time."""
    listed = {name.rsplit("/", 1)[-1] for env in environments().values()
              for name in env.list_templates()}
    named = set()
    for package in PACKAGES:
        for source in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and node.value.endswith(".j2"):
                    named.add(node.value)
    assert named and named <= listed, named - listed


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    require(importlib.util.find_spec("build") is not None,
            "the test extras are not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("dist")
    source = tmp / "src"
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():  # a file deleted but not yet committed is gone
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                             str(tmp / "out"), str(source)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (tmp / "out").glob("*.whl")
    (sdist,) = (tmp / "out").glob("*.tar.gz")
    return wheel, sdist


def test_the_wheel_and_the_sdist_hold_every_file_the_code_loads(dists):
    wheel, sdist = dists
    expected = loaded_files()
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert expected - in_wheel == set()
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        in_sdist = {name.removeprefix(top + "/") for name in tar.getnames()}
    assert expected - in_sdist == set()


def test_the_installed_wheel_finds_every_template(dists, tmp_path):
    """The loaders, run from the unpacked wheel (not this checkout), find
    each template they list here."""
    wheel, _ = dists
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    wanted = {key: env.list_templates() for key, env in environments().items()}
    script = """
import importlib, json, sys
site, wanted = sys.argv[1], json.loads(sys.argv[2])
for key, names in wanted.items():
    module, attribute = key.split(":")
    module = importlib.import_module(module)
    assert module.__file__.startswith(site), module.__file__
    for name in names:
        getattr(module, attribute).get_template(name)
print("ok", sum(map(len, wanted.values())))
"""
    result = subprocess.run([sys.executable, "-c", script, str(site), json.dumps(wanted)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == f"ok {sum(map(len, wanted.values()))}\n"

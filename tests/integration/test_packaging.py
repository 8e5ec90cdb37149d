"""The wheel and the sdist hold every file the code loads at run time
(tests/fakes.py: loaded_files, derived from the code: every jinja2
environment and every `Path` a module keeps at its top level, such as
`Path(__file__).parent / "templates"`). They are built the way pip builds
them (the wheel from the unpacked sdist), offline."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import require
from tests.fakes import REPO, environments, loaded_files


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

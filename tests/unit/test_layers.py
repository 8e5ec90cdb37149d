"""The import contracts (pyproject.toml, [tool.importlinter]) hold, and the
daemon's layers name every module of gitd/ outside the core, so a new module
cannot slip past them."""

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import gitd

REPO = Path(__file__).resolve().parents[2]


def contract() -> dict:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return layers


def test_the_daemon_layers_name_every_daemon_module():
    layers = contract()["layers"]
    assert layers[-3:] == ["hooks", "buildpacks", "gitd.core"]
    named = {m.strip() for layer in layers[:-3] for m in layer.replace("|", ":").split(":")}
    present = {f"gitd.{info.name}" for info in pkgutil.iter_modules(gitd.__path__)} - {"gitd.core"}
    assert present - named == set(), "add these to a daemon layer in pyproject.toml"
    assert named - present == set(), "these are gone: take them out of pyproject.toml"


def test_imports_point_down():
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()", "--no-cache"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Layers point down KEPT" in result.stdout
    assert "The HTTP API calls verbs, not SSH commands KEPT" in result.stdout

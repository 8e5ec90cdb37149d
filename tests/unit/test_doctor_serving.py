"""doctor: the settings of the gitd serving the data dir, its ports, and the
images stacks and services need (fake engine)."""

import io
import json
import os
import socket
import threading

import docker.errors

from gitd import serving
from gitd.core.config import Settings
from gitd.doctor import Report, check_images, check_ports


def test_a_running_gitd_is_found_by_its_record_and_odd_records_are_ignored(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path)
    assert serving.running(settings) is None
    served = Settings(data_dir=tmp_path, ssh_port=2299, traefik="external", https_port=8443)
    serving.record(served, 2299)
    monkeypatch.setattr(serving, "_alive", lambda pid: pid == os.getpid())
    pid, found = serving.running(settings)
    assert pid == os.getpid()
    assert (found.ssh_port, found.traefik, found.https_port) == (2299, "external", 8443)
    for odd in ('{"pid": 1}', "not json", "[1]", '{"pid": "x"}',
                json.dumps({"pid": os.getpid(), "ssh_port": "22; rm -rf /", "traefik": 5})):
        (tmp_path / serving.FILE).write_text(odd)
        found = serving.running(settings)
        assert found is None or (found[1].ssh_port, found[1].traefik) == (2222, "managed")
    serving.record(served, 2299)
    serving.forget(settings)
    assert not (tmp_path / serving.FILE).exists()
    monkeypatch.undo()
    (tmp_path / serving.FILE).write_text(json.dumps({"pid": os.getpid()}))
    assert serving.running(settings) is None  # pytest is not a `gitd serve`


def test_a_port_gitd_serves_is_ok_and_one_something_else_holds_fails():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def greet(banner: bytes):
            conn, _ = listener.accept()
            conn.sendall(banner)
            conn.close()

        settings = Settings(ssh_host="127.0.0.1", ssh_port=port, traefik="external")
        for banner, expected in ((b"SSH-2.0-AsyncSSH_2.14\r\n", "ok   ssh port"),
                                 (b"HTTP/1.0 400 Bad\r\n", "FAIL ssh port")):
            threading.Thread(target=greet, args=(banner,), daemon=True).start()
            out = io.StringIO()
            check_ports(Report(out), settings, gitd_pid=4242)
            assert out.getvalue().startswith(expected), out.getvalue()
        assert "served by gitd (pid 4242): SSH-2.0-AsyncSSH_2.14" not in out.getvalue()


class Engine:
    def __init__(self, present, reachable):
        self.present, self.reachable, self.asked = present, reachable, []
        self.images, self.api = self, self

    def get(self, ref):
        if ref not in self.present:
            raise docker.errors.ImageNotFound(ref)

    def inspect_distribution(self, ref):
        self.asked.append(ref)
        if not self.reachable:
            raise docker.errors.APIError("dial tcp: lookup registry-1.docker.io: no such host")
        return {}


def test_missing_images_that_cannot_be_pulled(tmp_path):
    settings = Settings(data_dir=tmp_path, base_images={"python": "local/python:3"},
                        service_images={"postgres": "local/pg:{version}"})
    engine = Engine(present={"local/python:3", "redis:7-alpine"}, reachable=False)
    out = io.StringIO()
    report = Report(out)
    check_images(report, settings, engine)
    text = out.getvalue()
    assert "ok   base image (python): local/python:3 present" in text
    assert "ok   service image (redis): redis:7-alpine present" in text
    assert ("FAIL service image (postgres): local/pg:16 not in the engine, and it cannot be "
            "pulled (") in text  # named in [service_images]: a FAIL
    assert "warn base image (node): node:20-slim not in the engine, and it cannot be pulled " \
           "(docker.io is out of reach" in text  # a default, unused yet: a warning
    assert report.failures == 1
    assert len([r for r in engine.asked if "/" not in r]) == 1  # docker.io asked once

    out = io.StringIO()
    check_images(Report(out), settings, Engine(present=set(), reachable=True))
    assert "warn base image (node): node:20-slim not in the engine: it is pulled at first use" \
        in out.getvalue()


def test_the_doctors_own_flags_win_over_the_running_gitds_settings(tmp_path, monkeypatch):
    from gitd.doctor import run_doctor

    serving.record(Settings(data_dir=tmp_path, ssh_host="127.0.0.1", ssh_port=2299,
                            traefik="external"), 2299)
    monkeypatch.setattr(serving, "_alive", lambda pid: True)

    def no_docker():
        raise OSError("no engine here")

    for flags, port in (({}, 2299), ({"ssh_port": 2377}, 2377)):
        out = io.StringIO()
        run_doctor(Settings(data_dir=tmp_path), out=out, docker_client_factory=no_docker,
                   flags=flags)
        assert f"ssh port: 127.0.0.1:{port} " in out.getvalue(), out.getvalue()
        assert "http port" not in out.getvalue()  # traefik external, as gitd runs

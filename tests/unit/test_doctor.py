import io
import socket
import struct

import pytest

from gitd.core.config import Settings
from gitd.doctor import Report, check_data_dir, check_nix, check_ports, check_probe, \
    elf_interpreter, run_doctor


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def line_for(out: io.StringIO, check: str) -> str:
    return next(line for line in lines(out) if line[5:].startswith(check + ":"))


def fix_after(out: io.StringIO, check: str) -> str:
    all_lines = lines(out)
    following = all_lines[all_lines.index(line_for(out, check)) + 1]
    assert following.startswith("     fix: ")
    return following


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir(mode=0o700)
    (path / "gitd.db").write_bytes(b"")
    (path / "gitd.db").chmod(0o600)
    (path / "ssh_host_ed25519_key").write_text("secret")
    (path / "ssh_host_ed25519_key").chmod(0o600)
    return path


def test_missing_docker_engine_is_reported_with_its_fix(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    out = io.StringIO()
    status = run_doctor(Settings(data_dir=data_dir), out=out)
    assert status == 1
    engine_line = line_for(out, "engine")
    assert engine_line.startswith("FAIL engine: not reachable at unix://")
    assert "no-docker.sock" in engine_line
    assert "apt-get install docker.io && systemctl start docker" in fix_after(out, "engine")


def test_every_line_has_the_documented_shape(data_dir):
    class FakeDocker:
        def version(self):
            return {"Version": "99.0", "ApiVersion": "1.99"}

        def info(self):
            return {"DockerRootDir": str(data_dir)}

    out = io.StringIO()
    run_doctor(Settings(data_dir=data_dir), out=out, docker_client_factory=FakeDocker)
    assert "ok   engine: Docker 99.0 (API 1.99) at " in out.getvalue()
    assert line_for(out, "disk (docker)").startswith(("ok   ", "warn ", "FAIL "))
    for line in lines(out):
        assert line[:5] in ("ok   ", "warn ", "FAIL ", "     "), line


def test_good_data_dir_passes(data_dir):
    out = io.StringIO()
    report = Report(out)
    check_data_dir(report, Settings(data_dir=data_dir))
    assert report.failures == 0
    assert [line.split(":")[0] for line in lines(out)] == [
        "ok   data dir", "ok   state db", "ok   host key"]


def test_bad_modes_are_reported(data_dir):
    data_dir.chmod(0o777)
    (data_dir / "gitd.db").chmod(0o644)
    (data_dir / "ssh_host_ed25519_key").chmod(0o640)
    out = io.StringIO()
    report = Report(out)
    check_data_dir(report, Settings(data_dir=data_dir))
    assert report.failures == 3
    assert "world-writable" in line_for(out, "data dir")
    assert line_for(out, "state db").startswith("FAIL state db:")
    assert "mode 644" in line_for(out, "state db")
    assert "mode 640" in line_for(out, "host key")
    assert fix_after(out, "host key") == \
        f"     fix: chmod 600 {data_dir / 'ssh_host_ed25519_key'}"


def test_missing_data_dir_points_at_gitd_init(tmp_path):
    out = io.StringIO()
    report = Report(out)
    check_data_dir(report, Settings(data_dir=tmp_path / "nope"))
    assert report.failures == 1
    assert fix_after(out, "data dir") == f"     fix: gitd init --data-dir {tmp_path / 'nope'}"


def elf(interp: bytes | None, is64: bool = True) -> bytes:
    """A minimal ELF file: one PT_LOAD, plus a PT_INTERP when `interp`."""
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1]) + bytes(9)
    ehsize, phentsize = (64, 56) if is64 else (52, 32)
    phnum = 2 if interp else 1
    header = struct.pack("<HHIQQQIHHHHHH" if is64 else "<HHIIIIIHHHHHH",
                         2, 62, 1, 0, ehsize, 0, 0, ehsize, phentsize, phnum, 0, 0, 0)
    assert len(ident + header) == ehsize
    data_at = ehsize + phnum * phentsize

    def ph(p_type, offset, size):
        if is64:
            return struct.pack("<IIQQQQQQ", p_type, 4, offset, 0, 0, size, size, 1)
        return struct.pack("<IIIIIIII", p_type, offset, 0, 0, size, size, 4, 1)

    headers = ph(1, 0, data_at)
    if interp:
        headers = ph(3, data_at, len(interp) + 1) + headers
    return ident + header + headers + (interp + b"\0" if interp else b"")


@pytest.mark.parametrize("is64", [True, False])
def test_elf_interpreter(tmp_path, is64):
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    static.write_bytes(elf(None, is64))
    dynamic.write_bytes(elf(b"/lib/ld-linux.so.2", is64))
    assert elf_interpreter(static) is None
    assert elf_interpreter(dynamic) == "/lib/ld-linux.so.2"


def test_elf_interpreter_rejects_other_files(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ValueError):
        elf_interpreter(script)


def test_dynamic_probe_fails_and_static_probe_passes(tmp_path):
    dynamic = tmp_path / "busybox"
    dynamic.write_bytes(elf(b"/lib64/ld-linux-x86-64.so.2"))
    out = io.StringIO()
    check_probe(Report(out), Settings(probe_binary=str(dynamic)))
    assert line_for(out, "probe").startswith(f"FAIL probe: {dynamic} is dynamically linked")
    assert fix_after(out, "probe") == "     fix: apt-get install busybox-static"

    dynamic.write_bytes(elf(None))
    out = io.StringIO()
    check_probe(Report(out), Settings(probe_binary=str(dynamic)))
    assert line_for(out, "probe") == f"ok   probe: {dynamic} (static)"


def test_missing_nix_fails_only_when_an_app_needs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    out = io.StringIO()
    report = Report(out)
    check_nix(report, nix_needed=False)
    check_nix(report, nix_needed=True)
    assert report.failures == 1
    assert lines(out)[0].startswith("warn nix: nix not found")
    assert lines(out)[2].startswith("FAIL nix: nix not found, and an app builds with Nix")


def test_port_in_use_is_a_warning():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        out = io.StringIO()
        report = Report(out)
        check_ports(report, Settings(ssh_host="127.0.0.1", ssh_port=port, traefik="external"))
    assert report.failures == 0
    assert lines(out)[0] == f"warn ssh port: 127.0.0.1:{port} in use (is gitd running?)"



def test_certificates_expiring_soon_and_acme_errors_are_warned(tmp_path):
    import json

    from gitd.core import certs
    from gitd.doctor import check_certificates
    from gitd.core.store import Store
    from tests.e2e.tls_helpers import MiniCA

    settings = Settings(data_dir=tmp_path, https_port=443, acme_email="ops@example.com")
    store = Store(settings.db_path)
    store.create_app("web")
    store.add_domains("web", ["a.test", "b.test"])
    cert, key = MiniCA().leaf(["a.test"], days=5)
    certs.install_custom(settings, "web", certs.check_bundle(cert + key, ["a.test"]))
    settings.traefik_dir.mkdir()
    settings.traefik_log.write_text(json.dumps({
        "level": "error", "time": "2030-01-01T00:00:00Z", "domains": ["b.test"],
        "error": "acme: error: 400 :: urn:ietf:params:acme:error:dns :: no such host"}) + "\n")
    out = io.StringIO()
    check_certificates(Report(out), settings)
    text = out.getvalue()
    assert "warn certificates: web: a.test: certificate expires in 4 day(s)" in text
    assert "warn certificates: web: b.test: HTTP-01 challenge failed (dns): no such host" in text
    assert "fix: see `certs APP`" in text

    out = io.StringIO()
    check_certificates(Report(out), Settings(data_dir=tmp_path / "empty", https_port=443))
    assert out.getvalue() == ""  # not initialised: data dir check speaks for it


# scheduler = swarm

class SwarmDocker:
    """An engine's answers for the swarm checks: `docker info` and `docker node ls`."""

    def __init__(self, swarm: dict, nodes: list[dict]):
        self.swarm, self.node_list = swarm, nodes
        self.api = self  # client.api.nodes() is the low-level call hooks/nodes.py makes

    def version(self):
        return {"Version": "20.10.24", "ApiVersion": "1.41"}

    def info(self):
        return {"Swarm": self.swarm}

    def nodes(self):
        return self.node_list


def swarm_doctor(tmp_path, swarm, nodes=(), scheduler="swarm"):
    out = io.StringIO()
    run_doctor(Settings(data_dir=tmp_path, scheduler=scheduler), out=out,
               docker_client_factory=lambda: SwarmDocker(swarm, list(nodes)))
    return out


MANAGER = {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "n1",
           "NodeAddr": "10.0.0.5", "Managers": 1,
           "RemoteManagers": [{"NodeID": "n1", "Addr": "10.0.0.5:2377"}]}


def node(node_id, name, state="ready", availability="active"):
    return {"ID": node_id, "Description": {"Hostname": name},
            "Spec": {"Role": "worker", "Availability": availability},
            "Status": {"State": state}}


def test_swarm_checks_only_with_the_swarm_scheduler(tmp_path):
    out = swarm_doctor(tmp_path, {"LocalNodeState": "inactive"}, scheduler="docker")
    assert "swarm manager" not in out.getvalue() and "swarm nodes" not in out.getvalue()


def test_an_engine_outside_a_swarm_fails_with_swarm_init(tmp_path):
    out = swarm_doctor(tmp_path, {"LocalNodeState": "inactive"})
    assert line_for(out, "swarm manager") == \
        "FAIL swarm manager: this Docker engine is not in a swarm"
    assert fix_after(out, "swarm manager") == \
        "     fix: docker swarm init --advertise-addr <this host's address>"
    assert "swarm nodes" not in out.getvalue()


def test_a_worker_fails_and_says_run_gitd_on_a_manager(tmp_path):
    out = swarm_doctor(tmp_path, {"LocalNodeState": "active", "ControlAvailable": False})
    assert "swarm worker, not a manager" in line_for(out, "swarm manager")
    assert "run gitd on a manager" in fix_after(out, "swarm manager")


def test_a_manager_with_all_nodes_ready_passes(tmp_path):
    out = swarm_doctor(tmp_path, MANAGER, [node("n1", "vm"), node("n2", "w1")])
    assert line_for(out, "swarm manager").startswith(
        "ok   swarm manager: this engine manages the swarm (advertised on 10.0.0.5:2377")
    assert line_for(out, "swarm nodes") == "ok   swarm nodes: 2 of 2 ready"


def test_even_managers_are_mentioned(tmp_path):
    out = swarm_doctor(tmp_path, dict(MANAGER, Managers=2), [node("n1", "vm")])
    assert "2 managers: an odd number keeps a quorum" in line_for(out, "swarm manager")


def test_nodes_down_are_named_and_warned(tmp_path):
    out = swarm_doctor(tmp_path, MANAGER, [node("n1", "vm"), node("n2", "w2", state="down"),
                                           node("n3", "w1", state="unknown"),
                                           node("n4", "w3", availability="drain")])
    assert line_for(out, "swarm nodes") == ("warn swarm nodes: 2 of 4 ready; not ready: w1, w2; "
                                            "taking no new tasks: w3 (drain)")
    assert "systemctl start docker" in fix_after(out, "swarm nodes")


def test_no_node_able_to_run_tasks_fails(tmp_path):
    out = swarm_doctor(tmp_path, MANAGER, [node("n1", "vm", availability="drain"),
                                           node("n2", "w1", state="down")])
    assert line_for(out, "swarm nodes").startswith("FAIL swarm nodes: 1 of 2 ready")
    assert "no node can run tasks" in line_for(out, "swarm nodes")
    out = swarm_doctor(tmp_path, MANAGER, [node("n1", "vm", availability="pause")])
    assert fix_after(out, "swarm nodes") == "     fix: nodes:activate NODE"

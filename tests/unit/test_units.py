import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.core.store import Store
from gitd.units import install_units, notify, render_units
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]


def systemd_analyze() -> str:
    require(shutil.which("systemd-analyze") is not None,
            "systemd-analyze is not installed (apt-get install systemd)")
    return shutil.which("systemd-analyze")


def verify(*units: Path) -> subprocess.CompletedProcess:
    # --man=no --generators=no: works without systemd as PID 1 (containers, CI)
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", "--generators=no", *map(str, units)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_TARGET": "console"},
    )


@pytest.fixture
def executables(tmp_path):
    """Real executables for ExecStart: verify refuses missing binaries."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("gitd", "traefik"):
        shutil.copy("/bin/true", bindir / name)
    return str(bindir / "gitd"), str(bindir / "traefik")


@pytest.mark.parametrize("user", ["root", "gitd"])
def test_installed_units_pass_systemd_analyze_verify(tmp_path, executables, user):
    settings = Settings(data_dir=tmp_path / "data", instance="abc123")
    gitd_bin, traefik_bin = executables
    written = install_units(settings, dest=tmp_path / "units", gitd_bin=gitd_bin,
                            traefik_bin=traefik_bin, user=user)
    units = tmp_path / "units"
    config = tmp_path / "data" / "traefik" / "traefik.yml"
    assert written == [units / "gitd.service", units / "traefik.service", config]
    assert "Label(`gitd.instance`, `abc123`)" in config.read_text()
    assert "(external mode)" in config.read_text()

    result = verify(units / "gitd.service", units / "traefik.service")
    # unknown keys and bad values are only warnings (exit 0): demand silence
    assert (result.returncode, result.stderr) == (0, "")

    gitd_unit = (units / "gitd.service").read_text()
    assert f"ExecStart={gitd_bin} serve --data-dir {tmp_path}/data --traefik external" \
        in gitd_unit
    assert "Type=notify" in gitd_unit
    assert f"ReadWritePaths={tmp_path}/data " in gitd_unit
    assert ("SupplementaryGroups=docker" in gitd_unit) == (user != "root")
    traefik_unit = (units / "traefik.service").read_text()
    assert f"ExecStart={traefik_bin} --configFile={config}\n" in traefik_unit


def test_verify_does_catch_mistakes(tmp_path, executables):
    """Guards the test above: this systemd-analyze reports what we care about."""
    unit = tmp_path / "broken.service"
    unit.write_text(f"[Service]\nType=notify\nExecStart={executables[0]}\nProtectSystm=strict\n")
    assert "Unknown key 'ProtectSystm'" in verify(unit).stderr
    unit.write_text("[Service]\nExecStart=/nonexistent/gitd serve\n")
    assert verify(unit).returncode != 0


def test_stop_timeout_outlasts_the_shutdown_grace():
    unit = render_units(Settings(shutdown_grace=200.5), "/bin/gitd", "/bin/traefik")["gitd.service"]
    assert "TimeoutStopSec=231\n" in unit


def test_the_shipped_examples_are_up_to_date():
    rendered = render_units(Settings(), "/usr/local/bin/gitd", "/usr/local/bin/traefik")
    for name, text in rendered.items():
        assert (REPO / "systemd" / name).read_text() == text, \
            f"systemd/{name} is stale: re-render it with gitd.units.render_units"


def test_install_reads_the_instance_from_the_state_db(tmp_path, executables):
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(GitdError, match="run gitd init first"):
        install_units(settings, tmp_path / "units", *executables)
    instance = Store(settings.db_path).instance
    install_units(settings, tmp_path / "units", *executables)
    assert f"Label(`gitd.instance`, `{instance}`)" in \
        (tmp_path / "traefik" / "traefik.yml").read_text()


def test_paths_with_spaces_are_refused(tmp_path):
    with pytest.raises(GitdError, match="spaces"):
        render_units(Settings(data_dir=tmp_path / "my data"), "/bin/gitd", "/bin/traefik")


def test_notify_sends_the_state_to_a_unix_datagram_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1") is True
        assert receiver.recv(256) == b"READY=1"


def test_notify_speaks_abstract_sockets(monkeypatch):
    name = f"gitd-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1") is True
        assert receiver.recv(256) == b"STOPPING=1"


def test_notify_without_systemd_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify("READY=1") is False


def test_https_units_let_traefik_keep_its_certificates(tmp_path, executables):
    settings = Settings(data_dir=tmp_path / "data", instance="abc123", https_port=443,
                        acme_email="ops@example.com", acme_ca_certificates="/etc/gitd/ca.pem")
    install_units(settings, dest=tmp_path / "units", gitd_bin=executables[0],
                  traefik_bin=executables[1], user="gitd")
    units = tmp_path / "units"
    result = verify(units / "gitd.service", units / "traefik.service")
    assert (result.returncode, result.stderr) == (0, "")
    traefik_unit = (units / "traefik.service").read_text()
    assert f"ReadWritePaths={tmp_path}/data/tls {tmp_path}/data/traefik\n" in traefik_unit
    assert f"EnvironmentFile=-{tmp_path}/data/traefik.env\n" in traefik_unit
    assert "Environment=LEGO_CA_CERTIFICATES=/etc/gitd/ca.pem\n" in traefik_unit
    config = (tmp_path / "data" / "traefik" / "traefik.yml").read_text()
    assert f'filePath: "{tmp_path}/data/traefik/traefik.log"' in config
    for sub in ("tls", "tls/dynamic", "tls/custom"):
        assert (tmp_path / "data" / sub).stat().st_mode & 0o777 == 0o700


def units_for_engine(tmp_path, executables, url: str) -> Path:
    """Units installed (as root) for the engine at `url`, checked by systemd-analyze."""
    settings = Settings(data_dir=tmp_path / "data", instance="abc123", engine_url=url)
    install_units(settings, tmp_path / "units", *executables, user="root")
    units = tmp_path / "units"
    result = verify(units / "gitd.service", units / "traefik.service")
    assert (result.returncode, result.stderr) == (0, "")
    return units


@pytest.mark.parametrize("url", ["unix:///run/podman/podman.sock",
                                 "unix:///var/run/podman/podman.sock"])
def test_units_for_podman_wait_for_its_socket_and_name_it(tmp_path, executables, url):
    units = units_for_engine(tmp_path, executables, url)
    gitd_unit = (units / "gitd.service").read_text()
    assert "Requires=podman.socket\n" in gitd_unit
    assert "docker.service" not in gitd_unit and "SupplementaryGroups=docker" not in gitd_unit
    assert f"Environment=GITD_ENGINE_URL={url}\n" in gitd_unit
    traefik_unit = (units / "traefik.service").read_text()
    assert "Wants=network-online.target podman.socket\n" in traefik_unit
    assert "docker.service" not in traefik_unit
    assert "SupplementaryGroups=docker" not in traefik_unit
    config = (tmp_path / "data" / "traefik" / "traefik.yml").read_text()
    assert f'endpoint: "{url}"' in config


@pytest.mark.parametrize("url", ["tcp://10.0.0.5:2375", "unix:///run/user/1000/podman/podman.sock",
                                 "unix:///srv/engine.sock"])
def test_units_for_an_engine_no_system_unit_serves_require_none(tmp_path, executables, url):
    units = units_for_engine(tmp_path, executables, url)
    for unit in ("gitd.service", "traefik.service"):
        text = (units / unit).read_text()
        assert "docker.service" not in text and "podman.socket" not in text, text
        assert "Requires=" not in text


@pytest.mark.parametrize("url", ["unix:///run/podman/podman.sock", "unix:///srv/engine.sock"])
def test_a_user_other_than_root_is_refused_where_no_group_reaches_the_engine(tmp_path,
                                                                              executables, url):
    settings = Settings(data_dir=tmp_path / "data", instance="abc123", engine_url=url)
    with pytest.raises(GitdError, match="run gitd as root"):
        install_units(settings, tmp_path / "units", *executables, user="gitd")
    assert not (tmp_path / "units").exists() or not any((tmp_path / "units").iterdir())
    tcp = Settings(data_dir=tmp_path / "data", instance="abc123", engine_url="tcp://10.0.0.5:2375")
    install_units(tcp, tmp_path / "tcp-units", *executables, user="gitd")  # no socket to reach

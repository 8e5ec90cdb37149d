import io

import pytest

from gitd.core.config import Settings
from gitd.doctor import Report, check_registry
from gitd.core.errors import GitdError
from gitd.registry import ManagedRegistry, render_config
from hooks.registry import ping, push_image, registry_host, remove_image
from tests.e2e.harness import free_port


def test_registry_host_is_the_setting_or_the_managed_one_on_loopback():
    assert registry_host(Settings(registry_port=5123)) == "127.0.0.1:5123"
    assert registry_host(Settings(registry="reg.example.com:443")) == "reg.example.com:443"


def test_config_serves_loopback_only_from_the_data_dir_with_deletes(tmp_path):
    config = render_config(Settings(data_dir=tmp_path, registry_port=5123, instance="i1"))
    assert 'addr: "127.0.0.1:5123"' in config
    assert f'rootdirectory: "{tmp_path}/registry/storage"' in config
    assert "delete:\n    enabled: true" in config
    assert "\nauth:" not in config


def test_ping_of_nothing_is_false():
    assert ping(f"127.0.0.1:{free_port()}", timeout=1.0) is False


def test_remove_image_never_raises(tmp_path):
    settings = Settings(data_dir=tmp_path, registry_port=free_port())
    assert remove_image(settings, "hello", "v1", timeout=1.0) is False  # nothing listens
    assert remove_image(settings, "../etc", "v1") is False
    assert remove_image(settings, "hello", "v1/../../x") is False


@pytest.mark.parametrize("app, tag", [("Bad_Name", "v1"), ("../x", "v1"), ("ok", ""),
                                      ("ok", "v1/../x"), ("ok", "-v1"), ("ok", "v" * 129)])
def test_push_image_refuses_odd_names_before_touching_docker(app, tag):
    with pytest.raises(GitdError):
        push_image(None, "127.0.0.1:5000", "some-image", app, tag)


def test_missing_binary_names_the_package_and_the_setting(tmp_path):
    settings = Settings(data_dir=tmp_path, registry_bin="no-such-registry-binary")
    with pytest.raises(GitdError) as exc:
        ManagedRegistry(settings).start()
    assert "apt-get install docker-registry, or set registry = host:port" in exc.value.message


def test_managed_registry_needs_a_real_port(tmp_path):
    with pytest.raises(GitdError, match="registry_port"):
        ManagedRegistry(Settings(data_dir=tmp_path, registry_port=0)).prepare()


def doctor_lines(settings: Settings) -> tuple[int, list[str]]:
    out = io.StringIO()
    report = Report(out)
    check_registry(report, settings)
    return report.failures, out.getvalue().splitlines()


def test_doctor_checks_the_registry_only_on_the_swarm_scheduler(tmp_path):
    assert doctor_lines(Settings(data_dir=tmp_path)) == (0, [])


def test_doctor_fails_an_external_registry_that_does_not_answer(tmp_path):
    host = f"127.0.0.1:{free_port()}"
    failures, lines = doctor_lines(Settings(data_dir=tmp_path, scheduler="swarm", registry=host))
    assert failures == 1
    assert lines[0] == f"FAIL registry: nothing answers at {host}/v2/"
    assert lines[1].startswith("     fix: ")


def test_doctor_fails_a_missing_registry_binary_with_its_fix(tmp_path):
    failures, lines = doctor_lines(Settings(data_dir=tmp_path, scheduler="swarm",
                                            registry_bin="no-such-registry-binary"))
    assert failures == 1
    assert lines[0].startswith("FAIL registry: 'no-such-registry-binary' not found")
    assert lines[1] == "     fix: apt-get install docker-registry, or set registry = host:port"

import re
from pathlib import Path

import pytest

from gitd.core.config import load_settings
from gitd.core.errors import GitdError


def test_layers_defaults_file_env_flags(tmp_path):
    (tmp_path / "gitd.toml").write_text('domain = "file.example"\nhttp_port = 81\nssh-port = 2201\n')
    env = {"GITD_HTTP_PORT": "82"}
    s = load_settings(tmp_path, flags={"ssh_port": 2202, "domain": None}, environ=env)
    assert s.domain == "file.example"  # file beats default, a flag left unset changes nothing
    assert s.http_port == 82  # env beats file
    assert s.ssh_port == 2202  # flag beats file
    assert s.traefik == "managed"
    assert s.data_dir == Path(tmp_path).absolute()


def test_data_dir_from_env(tmp_path):
    s = load_settings(environ={"GITD_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path


@pytest.mark.parametrize("text,msg", [
    ('nonsense = 1\n', "unknown setting"),
    ('http_port = "eighty"\n', "not a valid int"),
    ('traefik = "sometimes"\n', "managed"),
    ('http_port = 70000\n', "not a port"),
    ('domain = \n', "gitd.toml"),
])
def test_bad_settings_are_named(tmp_path, text, msg):
    (tmp_path / "gitd.toml").write_text(text)
    with pytest.raises(GitdError, match=msg):
        load_settings(tmp_path, environ={})


def test_app_url_omits_port_80(tmp_path):
    s = load_settings(tmp_path, flags={"domain": "example.com"}, environ={})
    assert s.app_url("hello") == "http://hello.example.com"
    s = load_settings(tmp_path, flags={"http_port": 8080}, environ={})
    assert s.app_url("hello") == "http://hello.localhost:8080"


@pytest.mark.parametrize("flags, message", [
    ({"scheduler": "k8s"}, "setting scheduler must be one of docker, swarm"),
    ({"scheduler": "Swarm"}, "setting scheduler must be one of docker, swarm"),
    ({"registry": "http://reg.example:5000"}, "is not host[:port]"),
    ({"registry": "reg example"}, "is not host[:port]"),
    ({"registry": "reg.example:5000/path"}, "is not host[:port]"),
    ({"registry": "-reg.example"}, "is not host[:port]"),
    ({"registry_port": "99999"}, "is not a port"),
    ({"registry_port": "-1"}, "is not a port"),
])
def test_swarm_settings_refuse_odd_values(tmp_path, flags, message):
    with pytest.raises(GitdError, match=re.escape(message)):
        load_settings(tmp_path, flags=flags, environ={})


def test_swarm_settings_accept_a_registry_host():
    settings = load_settings("/nonexistent", flags={"scheduler": "swarm",
                                                    "registry": "reg.example:5000"}, environ={})
    assert (settings.scheduler, settings.registry) == ("swarm", "reg.example:5000")

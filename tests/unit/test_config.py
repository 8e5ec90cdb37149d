from pathlib import Path

import pytest

from gitd.config import load_settings
from gitd.errors import GitdError


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

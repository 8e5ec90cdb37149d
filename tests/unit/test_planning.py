"""What a deploy runs, as plain data: specs, labels, checks, Procfile."""

import pytest

from gitd.core.config import Settings
from gitd.core.errors import BuildError, UsageError
from hooks import checks, procfile, router
from hooks.checks import HealthCheck
from hooks.specs import Target, container_specs


def target(**changes):
    values = dict(app="hello", version=3, seq=7, image="sha256:abc", config={"A": "1"},
                  port=5000, formation={"web": 2, "worker": 1},
                  commands={"web": None, "worker": ["/bin/sh", "-c", "python worker.py"]},
                  hosts=["hello.example.com", "www.example.com"], check=HealthCheck())
    values.update(changes)
    return Target(**values)


def test_specs_for_each_process_and_index():
    settings = Settings(instance="abcd1234")
    specs = container_specs(target(), settings, probe="/bin/busybox")
    assert [s["name"] for s in specs] == [
        "gitd-abcd1234.hello.web.1.s7", "gitd-abcd1234.hello.web.2.s7",
        "gitd-abcd1234.hello.worker.1.s7"]
    web, _, worker = specs
    assert web["environment"] == {"A": "1", "PORT": "5000", "GITD_APP": "hello",
                                  "GITD_RELEASE": "v3", "DYNO": "web.1"}
    assert web["ports"] == {"5000/tcp": ("127.0.0.1", None)}
    assert web["restart_policy"] == {"Name": "unless-stopped"}
    assert web["init"] is True
    assert web["command"] is None
    assert web["labels"]["traefik.http.routers.hello-s7.rule"] == \
        "Host(`hello.example.com`) || Host(`www.example.com`)"
    assert web["mounts"][0]["read_only"] is True
    assert web["healthcheck"]["test"][:3] == ["CMD", checks.PROBE_PATH, "sh"]
    assert worker["command"] == ["/bin/sh", "-c", "python worker.py"]
    assert "ports" not in worker and "healthcheck" not in worker
    assert worker["labels"]["traefik.enable"] == "false"
    assert all(s["labels"]["gitd.instance"] == "abcd1234" for s in specs)


def test_web_without_probe_is_refused_unless_checks_are_disabled():
    settings = Settings(instance="x")
    with pytest.raises(Exception, match="busybox"):
        container_specs(target(formation={"web": 1}), settings, probe=None)
    specs = container_specs(target(formation={"web": 1}, check=HealthCheck(disabled=True)),
                            settings, probe=None)
    assert "healthcheck" not in specs[0]


def test_router_names_rise_with_each_deploy():
    a = router.labels("hello", 1, ["h.example"], 5000)
    b = router.labels("hello", 2, ["h.example"], 8080)
    assert set(a).isdisjoint(set(b) - {"traefik.enable"})
    assert int(b["traefik.http.routers.hello-s2.priority"]) > int(a["traefik.http.routers.hello-s1.priority"])
    assert router.labels("hello", 3, [], 5000) == {"traefik.enable": "false"}


def test_probe_script_accepts_below_500_only():
    script = checks.probe_script(HealthCheck(path="/health", timeout=2), 8080)
    assert "GET /health HTTP/1.0" in script and "127.0.0.1 8080" in script
    assert '"HTTP/"*" "[1-4][0-9][0-9]*) echo 1 > /dev/shm/.gitd-probe 2>/dev/null; exit 0' in script


def test_checks_layer_app_json_under_settings():
    app_json = '{"healthchecks": {"path": "/up", "timeout": 3, "attempts": 2}}'
    check = checks.resolve({"checks": {"timeout": 9.0}}, app_json, default_wait=60)
    assert (check.path, check.timeout, check.attempts, check.wait) == ("/up", 9.0, 2, 60)
    dokku = '{"healthchecks": {"web": [{"path": "/ready", "wait": 10}]}}'
    assert checks.resolve({}, dokku, 60).path == "/ready"
    assert checks.resolve({"checks_disabled": True}, None, 60).disabled


@pytest.mark.parametrize("values", [{"path": "health"}, {"path": "/a b"}, {"timeout": "x"},
                                    {"attempts": "0"}, {"color": "red"}])
def test_bad_check_values(values):
    with pytest.raises(UsageError):
        checks.parse_values(values)


def test_procfile():
    text = "# comment\nweb: httpd -f -p $PORT\nworker:python w.py --x=1\n\nrelease: ./migrate\n"
    assert procfile.parse(text) == {"web": "httpd -f -p $PORT", "worker": "python w.py --x=1",
                                    "release": "./migrate"}
    with pytest.raises(BuildError, match="line 1"):
        procfile.parse("not a process line")
    with pytest.raises(BuildError, match="twice"):
        procfile.parse("web: a\nweb: b\n")


def test_procfile_commands_use_a_shell_except_in_nix_closures():
    from hooks.specs import process_argv

    assert process_argv("python w.py --x 'a b'", "dockerfile") == ["/bin/sh", "-c", "python w.py --x 'a b'"]
    assert process_argv("worker --x 'a b'", "nix") == ["worker", "--x", "a b"]
    assert process_argv(None, "nix") is None

"""The engine gitd talks to (issue #28): one URL, one client factory, and
what differs between Docker and Podman told by one probe."""

import io
import shutil
import subprocess

import pytest

from gitd.core.config import Settings, load_settings
from gitd.core.errors import GitdError
from gitd.doctor import run_doctor
from gitd.traefik import render_static_config
from hooks import engine
from tests.unit.conftest import NO_DOCKER

# what Debian's podman 4.3 (`podman system service`, no systemd) and
# dockerd 20.10 answer on this machine, cut to what is read
PODMAN_VERSION = {"Version": "4.3.1", "ApiVersion": "1.41",
                  "Components": [{"Name": "Podman Engine", "Version": "4.3.1"},
                                 {"Name": "Conmon", "Version": "conmon version 2.1.6"}]}
PODMAN_INFO = {"CgroupDriver": "cgroupfs", "ServerVersion": "4.3.1"}
DOCKER_VERSION = {"Version": "20.10.24", "ApiVersion": "1.41",
                  "Components": [{"Name": "Engine", "Version": "20.10.24"},
                                 {"Name": "containerd", "Version": "1.6.20"}]}
DOCKER_INFO = {"CgroupDriver": "cgroupfs", "Swarm": {}}


def test_the_engine_url_is_the_setting_then_docker_host_then_dockers_socket(monkeypatch):
    assert engine.endpoint("unix:///run/podman/podman.sock") == "unix:///run/podman/podman.sock"
    assert engine.endpoint("") == NO_DOCKER  # DOCKER_HOST, as the unit tests set it
    monkeypatch.delenv("DOCKER_HOST")
    assert engine.endpoint("") == "unix:///var/run/docker.sock"


def test_the_setting_and_the_flag_reach_the_settings(tmp_path):
    (tmp_path / "gitd.toml").write_text('engine_url = "unix:///run/podman/podman.sock"\n')
    assert load_settings(tmp_path, environ={}).engine_url == "unix:///run/podman/podman.sock"
    flagged = load_settings(tmp_path, flags={"engine_url": "tcp://127.0.0.1:2375"}, environ={})
    assert flagged.engine_url == "tcp://127.0.0.1:2375"


@pytest.mark.parametrize("hostile", [
    "unix://relative/podman.sock", "/run/podman/podman.sock", "http://127.0.0.1:2375",
    'unix:///run/x.sock"\n  insecure: true', "unix:///run/../etc/shadow", "tcp://host",
    "unix:///" + "a" * 300, "unix:///run/podman sock", "ssh://root@host",
    "tcp://127.0.0.1:0", "tcp://127.0.0.1:99999", "unix:///run/x.sock\x00",
])
def test_an_engine_url_gitd_cannot_use_is_refused_by_name(tmp_path, hostile):
    with pytest.raises(GitdError, match="setting engine_url"):
        load_settings(tmp_path, flags={"engine_url": hostile}, environ={})


def test_a_refused_engine_url_never_echoes_its_credentials(tmp_path):
    with pytest.raises(GitdError) as raised:
        load_settings(tmp_path, flags={"engine_url": "tcp://admin:s3cret@10.0.0.5:2375"},
                      environ={})
    assert "s3cret" not in raised.value.message and "***@10.0.0.5" in raised.value.message


def test_the_client_is_made_for_the_url_not_the_environment(tmp_path):
    with pytest.raises(GitdError) as raised:
        engine.connect(f"unix://{tmp_path}/podman.sock")
    assert f"unix://{tmp_path}/podman.sock" in raised.value.message


def test_traefiks_docker_provider_watches_the_same_engine(tmp_path):
    settings = Settings(data_dir=tmp_path, engine_url="unix:///run/podman/podman.sock")
    text = render_static_config(settings, mode="external")
    assert 'endpoint: "unix:///run/podman/podman.sock"' in text
    # gitd's own Traefik reads route files only (hooks.docker_routes)
    managed = render_static_config(settings)
    assert "docker:" not in managed and "endpoint:" not in managed and "file:" in managed


def test_podman_without_systemd_runs_no_health_checks_and_has_no_swarm():
    able = engine.capabilities(PODMAN_VERSION, PODMAN_INFO)
    assert (able.name, able.runs_health_checks, able.swarm) == ("Podman", False, False)
    assert able.title == "Podman 4.3.1 (API 1.41)"
    on_systemd = engine.capabilities(PODMAN_VERSION, {**PODMAN_INFO, "CgroupDriver": "systemd"})
    assert on_systemd.runs_health_checks


def test_docker_runs_its_own_health_checks():
    able = engine.capabilities(DOCKER_VERSION, DOCKER_INFO)
    assert (able.name, able.runs_health_checks, able.swarm) == ("Docker", True, True)
    assert able.title == "Docker 20.10.24 (API 1.41)"


class Podman:
    def __init__(self, version=PODMAN_VERSION, info=PODMAN_INFO):
        self._version, self._info = version, info

    def version(self):
        return self._version

    def info(self):
        return self._info


def test_doctor_names_podman_and_says_gitd_runs_its_health_checks(tmp_path):
    out = io.StringIO()
    run_doctor(Settings(data_dir=tmp_path / "data", engine_url="unix:///run/podman/podman.sock"),
               out=out, docker_client_factory=Podman)
    text = out.getvalue()
    assert "ok   engine: Podman 4.3.1 (API 1.41) at unix:///run/podman/podman.sock" in text
    assert "engine health checks: Podman runs none here" in text


def test_doctor_fails_the_swarm_scheduler_on_podman(tmp_path):
    out = io.StringIO()
    status = run_doctor(Settings(data_dir=tmp_path / "data", scheduler="swarm"), out=out,
                        docker_client_factory=Podman)
    assert status == 1
    assert "FAIL engine: scheduler = swarm needs Docker's swarm mode; Podman has none" \
        in out.getvalue()


# gitd running the health checks Podman's systemd timers would

SECOND = 1_000_000_000


class CheckingApi:
    base_url = "http+docker://localhost"

    def __init__(self, containers: dict):
        self.checks = {cid: c for cid, c in containers.items()}
        self.asked: list[str] = []
        self.filters = None

    def containers(self, filters=None, **_):
        self.filters = filters
        return [{"Id": cid} for cid in self.checks]

    def inspect_container(self, cid):
        return {"Config": {"Healthcheck": self.checks[cid]}}

    def _get(self, url):
        self.asked.append(url)
        return url

    def _result(self, response):
        return response


class Client:
    def __init__(self, api):
        self.api = api


def test_gitd_runs_each_containers_check_at_its_own_interval():
    api = CheckingApi({"web": {"Test": ["CMD", "probe"], "Interval": 2 * SECOND},
                       "db": {"Test": ["CMD-SHELL", "pg_isready"]},  # the default: 30 s
                       "plain": None,
                       "off": {"Test": ["NONE"]}})
    now = [100.0]
    checks = engine.HealthChecks(engine.Engine(Client(api), "inst1"), clock=lambda: now[0])
    checks.tick()
    assert api.filters == {"label": ["gitd.instance=inst1"], "status": "running"}
    url = "http+docker://localhost/v4.0.0/libpod/containers/{}/healthcheck"
    assert sorted(api.asked) == sorted([url.format("web"), url.format("db")])
    api.asked.clear()
    now[0] += 1
    checks.tick()
    assert api.asked == []
    now[0] += 1.5
    checks.tick()
    assert api.asked == [url.format("web")]
    api.asked.clear()
    now[0] += 30
    checks.tick()
    assert sorted(api.asked) == sorted([url.format("web"), url.format("db")])


def test_a_container_gone_is_forgotten_and_one_new_is_checked_at_once():
    api = CheckingApi({"old": {"Test": ["CMD", "probe"], "Interval": 60 * SECOND}})
    now = [0.0]
    checks = engine.HealthChecks(engine.Engine(Client(api), "inst1"), clock=lambda: now[0])
    checks.tick()
    api.checks = {"new": {"Test": ["CMD", "probe"], "Interval": 60 * SECOND}}
    api.asked.clear()
    now[0] += 1
    checks.tick()
    assert api.asked == ["http+docker://localhost/v4.0.0/libpod/containers/new/healthcheck"]
    assert set(checks._due) == {"new"}


# Podman 4.3 splits a ["CMD", ...] health check's arguments at whitespace

def probe_spec(script: str, environment=None) -> dict:
    return {"image": "x", "environment": environment or {"PORT": "5000"},
            "healthcheck": {"test": ["CMD", "/gitd-probe", "sh", "-c", script],
                            "interval": SECOND, "retries": 3}}


def test_a_scripted_check_moves_its_script_into_the_environment():
    script = 'r=$(echo "HTTP/1.0 200 OK"); case "$r" in "HTTP/"*" "2*) exit 0;; esac; exit 1'
    spec = engine.unsplittable_check(probe_spec(script))
    test = spec["healthcheck"]["test"]
    assert not any(c.isspace() for arg in test for c in arg)
    assert test[:4] == ["CMD", "/gitd-probe", "sh", "-c"]
    assert spec["environment"] == {"PORT": "5000", "GITD_HEALTHCHECK_SCRIPT": script}
    assert spec["healthcheck"]["interval"] == SECOND
    # the rewritten check runs the same script in a real sh
    for expected, body in ((0, script), (1, script.replace("200 OK", "500 Oops"))):
        ran = subprocess.run([shutil.which("sh"), "-c", test[-1]], timeout=10,
                             env={"GITD_HEALTHCHECK_SCRIPT": body, "PATH": "/usr/bin:/bin"})
        assert ran.returncode == expected


def test_a_list_environment_is_kept_and_other_checks_are_left_alone():
    spec = engine.unsplittable_check(probe_spec("exit 0", environment=["A=1", "B=x=y"]))
    assert spec["environment"] == {"A": "1", "B": "x=y", "GITD_HEALTHCHECK_SCRIPT": "exit 0"}
    plain = {"healthcheck": {"test": ["CMD", "pg_isready", "-U", "app"]}}
    assert engine.unsplittable_check(plain) is plain
    shell = {"healthcheck": {"test": ["CMD-SHELL", "pg_isready -U app"]}}
    assert engine.unsplittable_check(shell) is shell
    assert engine.unsplittable_check({"image": "x"}) == {"image": "x"}


@pytest.mark.parametrize("test", [
    ["CMD", "probe", "--path", "/a b"],  # not an `sh -c SCRIPT`
    ["CMD", "/gitd probe", "sh", "-c", "exit 0"],  # spaces before the script
])
def test_a_spaced_check_that_cannot_be_moved_is_refused(test):
    with pytest.raises(GitdError, match="splits a health check's arguments"):
        engine.unsplittable_check({"healthcheck": {"test": test}})


class CreatingClient:
    def __init__(self, version, info):
        self._version, self._info = version, info
        self.created = []
        self.containers = self

    def version(self):
        return self._version

    def info(self):
        return self._info

    def create(self, mounts=(), **spec):
        self.created.append(spec)
        return spec


@pytest.mark.parametrize("version,info,moved", [(PODMAN_VERSION, PODMAN_INFO, True),
                                                (DOCKER_VERSION, DOCKER_INFO, False)])
def test_the_engine_moves_the_script_only_where_arguments_split(version, info, moved):
    client = CreatingClient(version, info)
    engine.Engine(client, "inst1").create(probe_spec("exit 0"))
    assert ("GITD_HEALTHCHECK_SCRIPT" in client.created[0]["environment"]) is moved


class Volume:
    def __init__(self, name, labels):
        self.name, self.attrs = name, {"Name": name, "Labels": labels}


class OrVolumes:
    """Podman 4.3's volume listing: a volume with ANY of the labels asked for."""

    def __init__(self, volumes):
        self.all = volumes
        self.volumes = self

    def list(self, filters):
        wanted = [tuple(f.split("=", 1)) for f in filters["label"]]
        return [v for v in self.all if any(v.attrs["Labels"].get(k) == val for k, val in wanted)]


def test_an_apps_volumes_are_its_own_even_where_the_engine_answers_any_label():
    client = OrVolumes([Volume("mine", {"gitd.instance": "i1", "gitd.app": "a"}),
                        Volume("service", {"gitd.instance": "i1", "gitd.service": "db"}),
                        Volume("other", {"gitd.instance": "i1", "gitd.app": "b"}),
                        Volume("another-gitd", {"gitd.instance": "i2", "gitd.app": "a"})])
    listed = engine.Engine(client, "i1").volumes(**{"gitd.app": "a"})
    assert [v.name for v in listed] == ["mine"]
    assert [v.name for v in engine.Engine(client, "i1").volumes()] == ["mine", "service", "other"]


def test_a_label_left_open_does_not_narrow_the_volumes():
    client = OrVolumes([Volume("mine", {"gitd.instance": "i1", "gitd.app": "a"})])
    assert [v.name for v in engine.Engine(client, "i1").volumes(**{"gitd.app": None})] == ["mine"]


@pytest.mark.parametrize("reported,short", [
    ("docker.io/gitd/hello:v3", "gitd/hello:v3"), ("localhost/gitd-test/busybox:latest",
                                                   "gitd-test/busybox:latest"),
    ("gitd/hello:v3", "gitd/hello:v3"), ("registry.example.com/gitd/hello:v3",
                                         "registry.example.com/gitd/hello:v3"),
    ("docker.io.evil.com/gitd/hello:v3", "docker.io.evil.com/gitd/hello:v3"),
])
def test_image_names_as_docker_reports_them(reported, short):
    assert engine.short_name(reported) == short

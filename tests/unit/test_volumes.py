"""Storage the app can write (hooks.volumes): the image's USER, the volume
task's spec, what a deploy does with its report, and `nocopy` mounts."""

from __future__ import annotations

import os

import pytest

from gitd.core.config import Settings
from gitd.core.errors import DeployError
from hooks import checks, swarm, volumes
from hooks.checks import HealthCheck
from hooks.deploy import Deployer
from hooks.specs import Target, container_specs, release_task_spec
from hooks.volumes import RunAs, image_user
from tests.fakes import Progress

VOLUME = {"type": "volume", "source": "gitd-x.shop.data", "target": "/data"}


def target(**changes):
    values = dict(app="shop", version=2, seq=5, image="sha256:web", config={}, port=5000,
                  formation={"web": 1}, commands={"web": None}, hosts=["shop.example.com"],
                  check=HealthCheck(), mounts=[VOLUME])
    values.update(changes)
    return Target(**values)


@pytest.mark.parametrize("config_user, expected", [
    ("", RunAs("0")), (None, RunAs("0")), ("10001", RunAs("10001")), ("app", RunAs("app")),
    ("app:staff", RunAs("app", "staff")), ("1000:1000", RunAs("1000", "1000")),
    ("010001", RunAs("10001")), ("www-data", RunAs("www-data")),
])
def test_the_image_user_is_read_as_docker_reads_it(config_user, expected):
    assert image_user(config_user) == expected


@pytest.mark.parametrize("hostile", [
    "app:", ":1000", "a b", "$(reboot)", "app:x:y", "-rf", "../etc", "x" * 40, "app\nroot",
    "'; chown 0 /;'",
])
def test_hostile_image_users_fail_the_deploy_cleanly(hostile):
    with pytest.raises(DeployError, match="is not a user"):
        image_user(hostile)


def test_the_volume_task_runs_busybox_as_root_with_the_volumes_at_the_apps_paths():
    base = {"image": "sha256:web", "name": "gitd-x.shop.volumes.1.s5",
            "labels": {"gitd.app": "shop", "gitd.role": "release-task"}}
    bind = {"type": "bind", "source": "/srv/shop", "target": "/srv"}
    spec = volumes.owner_task_spec(base, RunAs("app", "staff"), [VOLUME], "/bin/busybox")
    assert spec["user"] == "0:0" and spec["network_mode"] == "none"
    assert spec["entrypoint"][:3] == [checks.PROBE_PATH, "sh", "-c"]
    assert spec["command"] == ["/data"]  # paths as arguments: never in the script
    assert spec["environment"] == {"GITD_USER": "app", "GITD_GROUP": "staff", "GITD_CHOWN": "1"}
    assert spec["mounts"] == [checks.probe_mount("/bin/busybox"),
                              {"type": "volume", "source": VOLUME["source"], "target": "/data"}]
    assert spec["labels"]["traefik.enable"] == "false"
    assert spec["healthcheck"] == {"test": ["NONE"]}  # the image's own check would run as root
    assert bind not in spec["mounts"]
    told = volumes.owner_task_spec(base, RunAs("0"), [VOLUME], "/bin/busybox", chown=False)
    assert told["command"] == [] and len(told["mounts"]) == 1
    assert told["environment"]["GITD_CHOWN"] == "0"
    assert "chown" in volumes.OWNER_SCRIPT and "-R" not in volumes.OWNER_SCRIPT
    assert "chmod" not in volumes.OWNER_SCRIPT  # never made writable by anyone else


def test_app_containers_mount_volumes_without_copy_up_and_binds_as_they_are():
    bind = {"type": "bind", "source": "/srv/shop", "target": "/srv"}
    t = target(mounts=[VOLUME, bind], release_command=["/bin/sh", "-c", "migrate"])
    settings = Settings(instance="x")
    for spec in container_specs(t, settings, "/bin/busybox") + [release_task_spec(t, settings)]:
        storage = [m for m in spec["mounts"] if m["target"] in ("/data", "/srv")]
        assert storage == [dict(VOLUME, no_copy=True), bind]
    [web] = container_specs(t, settings, "/bin/busybox")
    swarm_mounts = swarm.mounts(web)
    assert {"Type": "volume", "Source": VOLUME["source"], "Target": "/data", "ReadOnly": False,
            "VolumeOptions": {"NoCopy": True}} in swarm_mounts
    assert all("VolumeOptions" not in m for m in swarm_mounts if m["Type"] == "bind")


def test_a_swarm_task_keeps_the_entrypoint_and_user_of_its_spec():
    spec = {"labels": {"gitd.app": "shop"}, "entrypoint": ["/.gitd/busybox", "sh"],
            "command": ["/data"], "user": "0:0", "mounts": [VOLUME]}
    container = swarm.job_spec(dict(spec, name="gitd-x.shop.volumes.1.s5",
                                    healthcheck={"test": ["NONE"]}),
                               "reg/shop@sha256:1")["task_template"]["ContainerSpec"]
    assert (container["Command"], container["Args"], container["User"]) == (
        ["/.gitd/busybox", "sh"], ["/data"], "0:0")
    assert container["Healthcheck"] == {"Test": ["NONE"]}


@pytest.mark.parametrize("lines, owner, changed, error", [
    (["owner 10001:10001", "chowned 0:0 0 /data"], "10001:10001", [("/data", "0:0", 0)], ""),
    (["owner 0:0"], "0:0", [], ""),
    (["error: user app is not in the image's /etc/passwd"], "", [],
     "user app is not in the image's /etc/passwd"),
    (["chowned 5:5 12 /a dir/with space", "owner 1:1"], "1:1", [("/a dir/with space", "5:5", 12)], ""),
])
def test_the_task_report(lines, owner, changed, error):
    report = volumes.TaskReport.parse(lines)
    assert (report.owner, report.changed, report.error) == (owner, changed, error)


class FakeEngine:
    def __init__(self, users):
        self.users = users

    def image_attrs(self, image):
        return {"Config": {"User": self.users[image]}}


class FakeScheduler:
    """Runs no container: answers the volume task as the script would."""

    def __init__(self, owners, status=0, lines=None):
        self.owners = owners  # image -> uid:gid
        self.status = status
        self.lines = lines
        self.tasks = []

    def run_task(self, spec, on_line, timeout):
        self.tasks.append(spec)
        for line in self.lines if self.lines is not None else [f"owner {self.owners[spec['image']]}"] + [
                f"chowned 0:0 3 {path}" for path in spec["command"]]:
            on_line(line)
        return self.status, False


def deployer(tmp_path, users, scheduler):
    probe = tmp_path / "busybox"
    probe.write_text("")
    return Deployer(FakeEngine(users), Settings(instance="x", probe_binary=str(probe)),
                    scheduler=scheduler)


def test_a_deploy_gives_its_volumes_to_the_image_user_first(tmp_path):
    scheduler = FakeScheduler({"sha256:web": "10001:10001"})
    progress = Progress()
    deployer(tmp_path, {"sha256:web": "10001"}, scheduler)._prepare_storage([target()], progress)
    [task] = scheduler.tasks
    assert task["environment"]["GITD_USER"] == "10001" and task["command"] == ["/data"]
    assert task["name"] == "gitd-x.shop.volumes.1.s5"
    assert progress.lines == ["storage at /data: owner 0:0 -> 10001:10001 (the image's USER 10001)"]
    assert progress.warnings == ["storage at /data: the 3 entries already there keep their owners"]
    # nothing mounted: no task at all
    scheduler.tasks.clear()
    deployer(tmp_path, {}, scheduler)._prepare_storage([target(mounts=[])], progress)
    assert scheduler.tasks == []


def test_a_user_the_image_does_not_know_fails_the_deploy_with_the_reason(tmp_path):
    scheduler = FakeScheduler({}, status=3,
                              lines=["error: user ghost is not in the image's /etc/passwd"])
    with pytest.raises(DeployError, match="user ghost is not in the image's /etc/passwd"):
        deployer(tmp_path, {"sha256:web": "ghost"}, scheduler)._prepare_storage(
            [target()], Progress())


def test_services_sharing_storage_must_not_run_as_two_users(tmp_path):
    web, worker = target(), target(image="sha256:worker", component="worker")
    scheduler = FakeScheduler({"sha256:web": "10001:10001", "sha256:worker": "2000:2000"})
    with pytest.raises(DeployError, match="different users .*10001:10001.* only one of them"):
        deployer(tmp_path, {"sha256:web": "10001", "sha256:worker": "app"},
                 scheduler)._prepare_storage([web, worker], Progress())
    assert all(task["command"] == [] for task in scheduler.tasks)  # nothing was chowned
    # root and one user: that user owns it (root can write anyway)
    scheduler = FakeScheduler({"sha256:web": "0:0", "sha256:worker": "2000:2000"})
    deployer(tmp_path, {"sha256:web": "", "sha256:worker": "app"},
             scheduler)._prepare_storage([web, worker], Progress())
    assert scheduler.tasks[-1]["image"] == "sha256:worker" and scheduler.tasks[-1]["command"] == ["/data"]


def test_host_directories_are_never_chowned_but_a_foreign_owner_is_said(tmp_path):
    host = tmp_path / "srv"
    host.mkdir()
    bind = {"type": "bind", "source": str(host), "target": "/srv"}
    scheduler = FakeScheduler({"sha256:web": "10001:10001"})
    progress = Progress()
    deployer(tmp_path, {"sha256:web": "10001"}, scheduler)._prepare_storage(
        [target(mounts=[bind])], progress)
    [task] = scheduler.tasks
    assert task["command"] == [] and all(m["target"] != "/srv" for m in task["mounts"])
    assert os.stat(host).st_uid != 10001
    assert any(f"host directory {host} (at /srv) belongs to uid" in w for w in progress.warnings)


def test_storage_needs_the_probe(tmp_path):
    d = Deployer(FakeEngine({"sha256:web": ""}), Settings(instance="x", probe_binary="/nonexistent"),
                 scheduler=FakeScheduler({}))
    with pytest.raises(DeployError, match="no static busybox"):
        d._prepare_storage([target()], Progress())

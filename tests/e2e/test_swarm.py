"""gitd on a single-node Docker Swarm (issue #16): the same push, config,
scale, rollback and zero-downtime swap, with apps run as swarm services,
images pulled from gitd's registry and routes written for Traefik's file
provider."""

import json

import pytest

from tests.e2e.harness import Load, commit, make_repo, unique_app

pytestmark = pytest.mark.e2e

ENV_APP = (
    "FROM gitd-test/busybox:latest\n"
    "RUN mkdir -p /www\n"
    # the page says the release and a config value, written when the task starts
    'CMD ["sh", "-c", "echo \\"$GITD_RELEASE $GREETING\\" > /www/index.html; '
    'exec httpd -f -p $PORT -h /www"]\n')


def replicas(service) -> int:
    return service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"]


def route_files(gitd, app: str) -> list:
    dynamic = gitd.data_dir / "tls" / "dynamic"
    return sorted(p.name for p in dynamic.glob(f"route-{app}-s*.yml"))


def test_push_config_scale_rollback_on_the_swarm(swarm_gitd, swarm, tmp_path):
    gitd, client = swarm_gitd, swarm
    app = unique_app("sw")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / "app", {"Dockerfile": ENV_APP})

    first = gitd.push(repo, app)
    assert first.returncode == 0, first.stderr
    assert gitd.get(gitd.host(app)) == (200, "v1 \n")
    [service] = gitd.services(client, app)
    image = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.startswith("127.0.0.1:") and f"/gitd/{app}@sha256:" in image  # pinned by digest
    assert service.attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    [routes] = route_files(gitd, app)
    servers = json.loads((gitd.data_dir / "tls" / "dynamic" / routes).read_text())[
        "http"]["services"]
    assert [s["url"].startswith("http://127.0.0.1:") for v in servers.values()
            for s in v["loadBalancer"]["servers"]] == [True]

    # config:set and a push: a new deploy each, with no failed request
    with Load(gitd, gitd.host(app)) as load:
        assert gitd.ssh("config:set", app, "GREETING=hello").returncode == 0
        commit(repo, {"README": "two"}, "v3")
        pushed = gitd.push(repo, app)
        assert pushed.returncode == 0, pushed.stderr
    assert load.failures == [] and load.ok > 0
    assert gitd.get(gitd.host(app)) == (200, "v3 hello\n")
    assert "Retiring v2 in the background" in pushed.stderr, pushed.stderr

    # scale: one service, two replicas, both routed
    scaled = gitd.ssh("ps:scale", app, "web=2")
    assert scaled.returncode == 0, scaled.stderr
    live = [s for s in gitd.wait_services(client, app)]
    assert [replicas(s) for s in live] == [2]
    [routes] = route_files(gitd, app)
    config = json.loads((gitd.data_dir / "tls" / "dynamic" / routes).read_text())
    [servers] = [v["loadBalancer"]["servers"] for v in config["http"]["services"].values()]
    assert len(servers) == 2

    # rollback to v2: its image again, from the registry
    back = gitd.ssh("releases:rollback", app, "v2")
    assert back.returncode == 0, back.stderr
    status, body = gitd.get(gitd.host(app))
    assert status == 200 and body.endswith(" hello\n")
    [service] = gitd.wait_services(client, app)
    assert service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == image


def test_a_failing_health_check_leaves_the_old_release_serving(swarm_gitd, swarm, tmp_path):
    gitd, client = swarm_gitd, swarm
    app = unique_app("swf")
    assert gitd.ssh("apps:create", app).returncode == 0
    repo = make_repo(tmp_path / "app", {"Dockerfile": ENV_APP})
    assert gitd.push(repo, app).returncode == 0
    before = {s.id for s in gitd.services(client, app)}
    commit(repo, {"Dockerfile": ENV_APP.replace("$PORT", "1")}, "listens on the wrong port")
    assert gitd.ssh("checks:set", app, "wait=4").returncode == 0
    broken = gitd.push(repo, app)
    assert broken.returncode != 0
    assert "failed on the swarm" in broken.stderr or "not ready on the swarm" in broken.stderr
    assert gitd.get(gitd.host(app)) == (200, "v1 \n")
    assert {s.id for s in gitd.services(client, app)} == before
    assert len(route_files(gitd, app)) == 1

"""Services (Postgres, Redis) and app storage on a single-node swarm (issue
#16): a service is a swarm service pinned to the node holding its volume,
on an overlay network where a linked app's *tasks* reach it by the host
name in their URL; backups, restores and upgrades exec into its task's
container on this node; storage volumes pin an app to their node."""

from __future__ import annotations

import json
import shlex
import socket
from pathlib import Path
from urllib.parse import urlparse

import docker.errors
import pytest
from docker.types import EndpointSpec

from tests.conftest import require
from tests.e2e.conftest import BASE_IMAGE, start_swarm_gitd
from tests.e2e.harness import commit, git, make_repo, new_gitd, unique_app
from tests.e2e.helpers import fails, ok
from tests.e2e.services_helpers import (IMAGES_ENV, PG_IMAGE, PG_VERSION, REDIS_IMAGE, client_app,
                                         deploy, info, ok_bytes, rows, sql, storage_app,
                                         tag_versioned)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def paas(swarm, base_image, tmp_path_factory):
    """A gitd on the swarm scheduler whose services use the local images."""
    for image in (PG_IMAGE, REDIS_IMAGE):
        try:
            swarm.images.get(image)
            found = True
        except docker.errors.ImageNotFound:
            found = False
        require(found, f"image {image} is missing (bash .ci/images/build)")
    tag_versioned(swarm)
    server = new_gitd(tmp_path_factory.mktemp("swarm-services"))
    start_swarm_gitd(server, IMAGES_ENV)
    yield server
    server.stop()
    server.cleanup(swarm)


@pytest.fixture(scope="module")
def hostname(swarm) -> str:
    """This machine's node name in the swarm."""
    node_id = swarm.info()["Swarm"]["NodeID"]
    return swarm.nodes.get(node_id).attrs["Description"]["Hostname"]


def db_page_app(version: str) -> dict:
    """busybox httpd (from the service's image, for psql) serving its
    version, and /cgi-bin/notes: what the app's own task reads from the
    database through its DATABASE_URL."""
    script = ("#!/bin/busybox sh\n"
              'echo "Content-Type: text/plain"\necho\n'
              "psql \"$DATABASE_URL\" -qAtc 'SELECT note FROM notes ORDER BY id' 2>&1\n")
    return {
        "notes.cgi": script,
        "Dockerfile": (
            f"FROM {BASE_IMAGE}:latest AS bb\n"
            f"FROM {PG_IMAGE}\n"
            "COPY --from=bb /bin/busybox /bin/busybox\n"
            f"RUN mkdir -p /www/cgi-bin && echo '{version}' > /www/index.html\n"
            "COPY notes.cgi /www/cgi-bin/notes\n"
            "RUN chmod 755 /www/cgi-bin/notes\n"
            'CMD ["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p $PORT -h /www"]\n')}


def page_notes(gitd, app: str) -> list[str]:
    status, body = gitd.get(gitd.host(app), "/cgi-bin/notes", timeout=20)
    assert status == 200, body
    return body.split()


def swarm_services(client, instance: str, service: str) -> list:
    labels = [f"gitd.instance={instance}", f"gitd.service={service}"]
    return client.services.list(filters={"label": labels})


def leftovers(client, instance: str, service: str) -> dict:
    """What Docker still holds of a service: swarm services, containers, volumes, networks."""
    labels = {"label": [f"gitd.instance={instance}", f"gitd.service={service}"]}
    return {"services": swarm_services(client, instance, service),
            "containers": client.containers.list(all=True, filters=labels),
            "volumes": client.volumes.list(filters=labels),
            "networks": client.networks.list(filters=labels)}


def assert_gone(client, instance: str, service: str) -> None:
    left = leftovers(client, instance, service)
    assert all(not v for v in left.values()), left


def spec_of(service) -> dict:
    return service.attrs["Spec"]


def test_postgres_pinned_reached_by_the_app_backed_up_restored_and_upgraded(
        paas, swarm, hostname, tmp_path):
    db, app = unique_app("sdb"), unique_app("sshop")
    created = ok(paas, "services:create", "postgres", db, "--version", PG_VERSION)
    assert f"on node {hostname}" in created.stdout and "this manager's node" in created.stdout
    data = info(paas, db)
    assert data["node"] == data["pinned_node"] == hostname and data["health"] == "healthy"
    shown = ok(paas, "services:info", db).stdout
    assert f"node:       {hostname} (this manager)" in shown, shown

    [service] = swarm_services(swarm, paas.instance, db)
    spec = spec_of(service)
    template = spec["TaskTemplate"]
    assert template["Placement"]["Constraints"] == [f"node.hostname=={hostname}"]
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert spec["Mode"]["Replicated"]["Replicas"] == 1
    assert template["RestartPolicy"]["Condition"] == "any"
    image = template["ContainerSpec"]["Image"]
    assert image.startswith("127.0.0.1:") and "/gitd/service-postgres@sha256:" in image
    [net] = template["Networks"]
    assert net["Aliases"] == [data["host"]]
    network = swarm.networks.get(data["network"])
    assert network.attrs["Driver"] == "overlay" and network.attrs["Attachable"] is True

    deploy(paas, tmp_path, app, db_page_app("v1"))
    linked = ok(paas, "services:link", db, app)
    assert "as DATABASE_URL" in linked.stdout
    url = ok(paas, "config:get", app, "DATABASE_URL").stdout.strip()
    assert urlparse(url).hostname == data["host"]
    sql(paas, app, "CREATE TABLE notes (id serial PRIMARY KEY, note text); "
                   "INSERT INTO notes (note) VALUES ('first')")
    # the app's own swarm task reads it over the overlay network
    assert page_notes(paas, app) == ["first"]
    assert "ready to accept connections" in ok(paas, "services:logs", db, "-n", "50").stdout
    assert "first" in ok(paas, "services:connect", db, input="SELECT note FROM notes;\n").stdout

    # backup, another row, restore: the first state is back
    dump = ok_bytes(paas, "services:backup", db)
    assert dump[:5] == b"PGDMP"
    sql(paas, app, "INSERT INTO notes (note) VALUES ('second')")
    assert page_notes(paas, app) == ["first", "second"]
    restored = paas.ssh("services:restore", db, input=dump)
    assert restored.returncode == 0, restored.stderr
    assert page_notes(paas, app) == ["first"]
    refused = paas.ssh("services:restore", db, input=dump[: len(dump) // 2])
    assert refused.returncode != 0 and "untouched" in refused.stderr, refused.stderr
    assert page_notes(paas, app) == ["first"]

    # an upgrade: a new swarm service on a fresh volume, the same host name
    upgraded = ok(paas, "services:upgrade", db, "--version", "15")
    assert f"{db} runs postgres 15." in upgraded.stdout
    after = info(paas, db)
    assert after["version"] == "15" and after["volume"] == f"{data['volume']}-g2"
    assert after["node"] == hostname and after["health"] == "healthy"
    [service] = swarm_services(swarm, paas.instance, db)
    assert spec_of(service)["Name"].endswith("-g2")
    assert page_notes(paas, app) == ["first"]
    assert rows(paas, app) == ["first"]
    assert [v.name for v in swarm.volumes.list(
        filters={"label": [f"gitd.service={db}"]})] == [after["volume"]]

    fails(paas, "services:destroy", db, "--force", match="unlink it first")
    ok(paas, "services:unlink", db, app)
    gone = ok(paas, "services:destroy", db, "--force")
    final = Path(gone.stdout.split("final backup kept at ")[1].split()[0])
    assert final.read_bytes()[:5] == b"PGDMP"
    assert_gone(swarm, paas.instance, db)
    ok(paas, "apps:destroy", app, "--force")
    assert paas.services(swarm, app) == []
    assert swarm.networks.list(filters={"label": [f"gitd.app={app}"]}) == []


def test_node_flag_pins_and_bad_nodes_are_refused_with_nothing_made(paas, swarm, hostname):
    db = unique_app("pdb")
    for bad, match in (("nosuchnode", f"its nodes: {hostname}"),
                       ("x;rm", "invalid node name"), ("-rf", "expected one argument"),
                       ("a" * 80, "invalid node name"), ("../x", "invalid node name")):
        fails(paas, "services:create", "postgres", db, "--node", bad, match=match)
        assert db not in [s["name"] for s in json.loads(
            ok(paas, "services:list", "--json").stdout)]
        assert_gone(swarm, paas.instance, db)

    created = ok(paas, "services:create", "postgres", db, "--node", hostname,
                 "--version", PG_VERSION)
    assert f"on node {hostname}" in created.stdout and "this manager's node" not in created.stdout
    data = info(paas, db)
    assert data["pinned_node"] == data["node"] == hostname and data["health"] == "healthy"
    [listed] = [s for s in json.loads(ok(paas, "services:list", "--json").stdout)
                if s["name"] == db]
    assert listed["node"] == hostname
    assert "NODE" in ok(paas, "services:list").stdout
    [service] = swarm_services(swarm, paas.instance, db)
    assert spec_of(service)["TaskTemplate"]["Placement"]["Constraints"] == [
        f"node.hostname=={hostname}"]
    ok(paas, "services:destroy", db, "--force")
    assert_gone(swarm, paas.instance, db)


def test_redis_restore_restarts_its_task_and_expose_stays_on_loopback(paas, swarm, tmp_path):
    cache, app = unique_app("scache"), unique_app("sr")
    ok(paas, "services:create", "redis", cache)
    deploy(paas, tmp_path, app, {"Dockerfile": (
        f"FROM {BASE_IMAGE}:latest AS bb\nFROM {REDIS_IMAGE}\n"
        "COPY --from=bb /bin/busybox /bin/busybox\n"
        "RUN mkdir -p /www && echo r1 > /www/index.html\n"
        'CMD ["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p $PORT -h /www"]\n')})
    ok(paas, "services:link", cache, app)

    def cli(*words):
        script = f'redis-cli --no-auth-warning -u "$REDIS_URL" {" ".join(words)}'
        result = paas.ssh("run", app, "--", "sh", "-c", shlex.quote(script))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert cli("SET", "greeting", "hello") == "OK"
    dump = ok_bytes(paas, "services:backup", cache)
    assert dump[:5] == b"REDIS"
    assert cli("SET", "greeting", "changed") == "OK"
    before = {c.id for c in swarm.containers.list(filters={"label": [f"gitd.service={cache}"]})}
    restored = paas.ssh("services:restore", cache, input=dump)
    assert restored.returncode == 0, restored.stderr
    assert cli("GET", "greeting") == "hello"
    running = {c.id for c in swarm.containers.list(filters={"label": [f"gitd.service={cache}"]})}
    assert running and not running & before  # the swarm started a new task on the volume
    refused = paas.ssh("services:restore", cache, input=b"REDIS0010 but not really")
    assert refused.returncode != 0 and "refused" in refused.stderr, refused.stderr
    assert cli("GET", "greeting") == "hello"

    # expose: a relay on this manager publishes the port on 127.0.0.1 only
    ok(paas, "services:expose", cache)
    address = info(paas, cache)["exposed"]
    assert address and address.startswith("127.0.0.1:"), address
    relay = swarm.containers.get(f"gitd-{paas.instance}-svc-{cache}-expose")
    bindings = relay.attrs["HostConfig"]["PortBindings"]["6379/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    host, port = address.split(":")
    password = urlparse(ok(paas, "config:get", app, "REDIS_URL").stdout.strip()).password
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"AUTH {password}\r\nGET greeting\r\n".encode())
        answer = b""
        while b"hello" not in answer:
            chunk = conn.recv(100)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"+OK") and b"hello" in answer, answer

    # gitd restarts: the task and the relay keep running; a staged service
    # that an upgrade cut short is removed
    tasks = {c.id for c in swarm.containers.list(
        filters={"label": [f"gitd.service={cache}", "gitd.role=swarm-task"]})}
    [live] = swarm_services(swarm, paas.instance, cache)
    staged = swarm.services.create(
        f"{BASE_IMAGE}:latest", ["/bin/busybox", "sleep", "600"],
        name=f"{live.name}-g2-upgrade", endpoint_spec=EndpointSpec(mode="dnsrr"),
        stop_grace_period=1_000_000_000,  # sleep as PID 1 ignores SIGTERM
        labels={"gitd.instance": paas.instance, "gitd.service": cache})
    # ... and a task container whose service is gone (a run's job, which
    # Docker 20.10 leaves behind) too
    orphan = swarm.containers.run(
        f"{BASE_IMAGE}:latest", ["/bin/busybox", "sleep", "600"], detach=True,
        labels={"gitd.instance": paas.instance, "gitd.app": app, "gitd.role": "swarm-task",
                "com.docker.swarm.service.id": "gone0000000000000000000000"})
    paas.stop()
    start_swarm_gitd(paas, IMAGES_ENV)
    assert [s.id for s in swarm_services(swarm, paas.instance, cache)] == [live.id]
    with pytest.raises(docker.errors.NotFound):
        swarm.services.get(staged.id)
    with pytest.raises(docker.errors.NotFound):
        swarm.containers.get(orphan.id)
    assert {c.id for c in swarm.containers.list(
        filters={"label": [f"gitd.service={cache}", "gitd.role=swarm-task"]})} == tasks
    assert swarm.containers.get(relay.id).status == "running"
    assert info(paas, cache)["exposed"] == address
    ok(paas, "services:expose", cache, "--off")
    assert info(paas, cache)["exposed"] is None

    ok(paas, "apps:destroy", app, "--force")
    ok(paas, "services:destroy", cache, "--force")
    assert_gone(swarm, paas.instance, cache)


def test_a_named_volume_pins_the_app_and_survives_a_redeploy(paas, swarm, hostname, tmp_path):
    app = unique_app("sfiles")
    repo = deploy(paas, tmp_path, app, storage_app("v1"))
    mounted = ok(paas, "storage:mount", app, "data:/data")
    assert f"runs on node {hostname}" in mounted.stdout
    ok(paas, "run", app, "--", "sh", "-c",
       "'echo kept > /data/notes.txt; echo ok > /data/index.html'")
    assert paas.get(paas.host(app), "/notes.txt") == (200, "kept\n")
    [service] = paas.wait_services(swarm, app)
    assert spec_of(service)["TaskTemplate"]["Placement"]["Constraints"] == [
        f"node.hostname=={hostname}"]
    commit(repo, storage_app("v3"), "v3")
    pushed = paas.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr
    assert paas.get(paas.host(app), "/notes.txt") == (200, "kept\n")
    [service] = paas.wait_services(swarm, app)
    assert spec_of(service)["Labels"]["gitd.release"] == "3"
    assert spec_of(service)["TaskTemplate"]["Placement"]["Constraints"] == [
        f"node.hostname=={hostname}"]
    listed = json.loads(ok(paas, "storage:list", app, "--json").stdout)
    assert listed == [{"source": "data", "target": "/data", "type": "volume", "node": hostname}]
    assert "removed 1 storage volume(s)" in ok(paas, "apps:destroy", app, "--force").stdout
    assert paas.services(swarm, app) == []
    assert swarm.volumes.list(filters={"label": [f"gitd.app={app}"]}) == []
    assert swarm.networks.list(filters={"label": [f"gitd.app={app}"]}) == []


def test_node_is_refused_under_the_docker_scheduler(gitd):
    name = unique_app("nd")
    result = gitd.ssh("services:create", "redis", name, "--node", "somewhere")
    assert result.returncode != 0 and 'scheduler = "docker"' in result.stderr, result.stderr
    listed = gitd.ssh("services:list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert name not in [s["name"] for s in json.loads(listed.stdout)]


def test_a_network_of_the_service_name_is_refused_and_left_as_it_was(paas, swarm):
    """A bridge network left by scheduler = "docker" is neither joined nor removed."""
    db = unique_app("bdb")
    name = f"gitd-{paas.instance}-svc-{db}"
    bridge = swarm.networks.create(name, driver="bridge", labels={
        "gitd.instance": paas.instance, "gitd.service": db})
    try:
        fails(paas, "services:create", "postgres", db, "--version", PG_VERSION,
              match=f"network {name} already exists and no service owns it")
        assert db not in [s["name"] for s in json.loads(
            ok(paas, "services:list", "--json").stdout)]
        left = leftovers(swarm, paas.instance, db)
        assert [n.id for n in left.pop("networks")] == [bridge.id]
        assert all(not v for v in left.values()), left
    finally:
        bridge.remove()
    assert_gone(swarm, paas.instance, db)


def test_a_preview_on_the_swarm_gets_its_own_redis_and_goes_with_its_branch(paas, swarm,
                                                                            tmp_path):
    """Previews on the swarm scheduler: a branch push makes the preview's
    services (its own Redis, seeded by postdeploy), it answers through
    Traefik, and the branch's deletion removes its services and Redis."""
    app, cache = unique_app("swpv"), unique_app("swcache")
    ok(paas, "services:create", "redis", cache)
    ok(paas, "apps:create", app)
    ok(paas, "services:link", cache, app)
    rules = {"previews": {"services": "fresh"},
             "scripts": {"postdeploy": 'redis-cli --no-auth-warning -u "$REDIS_URL" SET seeded yes'}}
    repo = make_repo(tmp_path / "app", {**client_app("prod", REDIS_IMAGE),
                                        "app.json": json.dumps(rules)})
    pushed = paas.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr

    git(repo, "checkout", "-q", "-b", "seed")
    commit(repo, client_app("preview", REDIS_IMAGE), "preview")
    pushed = paas.push(repo, app, "seed")
    assert pushed.returncode == 0, pushed.stderr
    preview = f"{app}--seed"
    assert paas.wait_for(paas.host(preview), "preview")[0] == 200
    assert paas.get(paas.host(app)) == (200, "prod\n")
    assert paas.services(swarm, preview), "the preview runs no swarm service"

    def get(target: str, key: str) -> str:
        script = f'redis-cli --no-auth-warning -u "$REDIS_URL" GET {key}'
        return ok(paas, "run", target, "--", "sh", "-c", shlex.quote(script)).stdout.strip()

    assert get(preview, "seeded") == "yes"
    assert get(app, "seeded") == ""  # the parent's redis is not the preview's
    (own,) = json.loads(ok(paas, "apps:info", preview, "--json").stdout)["services"]
    assert own != cache

    gone = paas.push(repo, app, ":seed")
    assert gone.returncode == 0, gone.stderr
    assert [s["name"] for s in json.loads(ok(paas, "services:list", "--json").stdout)
            if s["name"] in (own, cache)] == [cache]
    assert paas.services(swarm, preview) == []
    assert_gone(swarm, paas.instance, own)

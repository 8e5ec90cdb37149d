"""gitd on a swarm of three Docker-in-Docker nodes the test owns (issue #27):
gitd and Traefik on the manager, tasks on every node, images pulled from a
registry at the manager's address, drains and a lost worker under HTTP load,
Redis pinned to one worker reached over the overlay from an app's task on
the other, and a lost leader among three managers.

The cluster is built once for the module (tests/e2e/cluster.py) and removed
at its end whatever happens; the tests run in order, each leaving it as the
next expects (all three nodes active), the killed worker's last. The
three-manager test builds and removes a cluster of its own."""

import time

import docker
import pytest

from tests.conftest import require
from tests.e2e.cluster import CLUSTER_IMAGE, DIST, build_cluster, wait_until
from tests.e2e.conftest import BASE_IMAGE
from tests.e2e.harness import Load, commit, make_repo, unique_app
from tests.e2e.services_helpers import REDIS_IMAGE

pytestmark = pytest.mark.e2e

# at most this many requests fail after a worker is killed (the README
# states it): those in flight on the node when it died, one per client of
# the load at most. Measured here: 0 of 1,017; before Traefik was told to
# give up on a connection after 1 s, 8 of 875 (hung until the swarm declared
# the node down, ~25 s).
KILLED_WORKER_FAILURES = 4

HOSTNAME_APP = (
    f"FROM {BASE_IMAGE}:latest\n"
    "RUN mkdir -p /www\n"
    # the page names the task's container (its hostname: the short container id)
    'CMD ["sh", "-c", "hostname > /www/index.html; exec httpd -f -p $PORT -h /www"]\n')

# /cgi-bin/redis?WORDS: the task's hostname, then `redis-cli WORDS` run by the
# task against its linked Redis (REDIS_URL); redis-cli from the Redis image
REDIS_CLIENT_APP = {
    "Dockerfile": (
        f"FROM {BASE_IMAGE}:latest AS bb\n"
        f"FROM {REDIS_IMAGE}\n"
        "COPY --from=bb /bin/busybox /bin/busybox\n"
        "COPY redis.cgi /www/cgi-bin/redis\n"
        "RUN chmod 755 /www/cgi-bin/redis && hostname > /www/index.html\n"
        'CMD ["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p $PORT -h /www"]\n'),
    "redis.cgi": (
        "#!/bin/sh\n"
        "printf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
        "hostname\n"
        'redis-cli -u "$REDIS_URL" --no-auth-warning $(echo "$QUERY_STRING" | tr + " ") 2>&1\n'),
}


@pytest.fixture(scope="module")
def cluster(docker_client, base_image, tmp_path_factory):
    try:
        docker_client.images.get(CLUSTER_IMAGE)
    except docker.errors.ImageNotFound:
        require(False, f"{CLUSTER_IMAGE} is not built")
    require(any(DIST.glob("gitd-*.whl")) and (DIST / "wheels").is_dir(),
            f"no wheels of gitd and its dependencies in {DIST}")
    built = build_cluster(docker_client, tmp_path_factory.mktemp("cluster"),
                          images=(f"{BASE_IMAGE}:latest",),
                          settings=f'[service_images]\nredis = "{REDIS_IMAGE}"\n')
    try:
        yield built
    finally:
        built.remove()


def ok(result):
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


def answering(gitd, app: str, wanted: set[str], timeout: float = 60.0) -> set[str]:
    """The bodies seen through Traefik until all of `wanted` answered."""
    seen = set()

    def all_seen():
        status, body = gitd.get(gitd.host(app))
        if status == 200:
            seen.add(body.strip())
        return wanted <= seen

    wait_until(all_seen, f"answers from {sorted(wanted - seen)}", timeout=timeout, pause=0.05)
    return seen


@pytest.fixture(scope="module")
def spread_app(cluster, tmp_path_factory):
    """An app pushed once and scaled to 6 tasks over the three nodes."""
    gitd = cluster.gitd
    app = unique_app("cl")
    ok(gitd.ssh("apps:create", app))
    repo = make_repo(tmp_path_factory.mktemp("spread") / "app", {"Dockerfile": HOSTNAME_APP})
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr + cluster.gitd_log()[-3000:]
    ok(gitd.ssh("ps:scale", app, "web=6"))
    return {"app": app, "push": pushed}


def test_a_push_builds_once_every_node_pulls_and_six_tasks_spread(cluster, spread_app):
    gitd, app = cluster.gitd, spread_app["app"]
    tasks = wait_until(lambda: (t := cluster.tasks(app)) and len(t) == 6 and t,
                       "6 running tasks")
    assert {t["node"] for t in tasks} == {n.name for n in cluster.nodes}, \
        [(t["node"], t["Slot"]) for t in tasks]
    image = tasks[0]["Spec"]["ContainerSpec"]["Image"]
    assert image.startswith(f"{cluster.registry}/gitd/{app}@sha256:"), image

    # built once, on the manager; each worker has only what it pulled from the registry
    assert cluster.manager.sh(f"docker image ls -q gitd/{app}").strip()
    for worker in cluster.workers:
        assert worker.sh(f"docker image ls -q gitd/{app}").strip() == ""
        pulled = worker.docker_json(f"image ls --digests {cluster.registry}/gitd/{app}")
        assert [p["Digest"] for p in pulled] == [image.split("@")[1]], pulled

    # every task answers through Traefik on the manager
    assert answering(gitd, app, container_ids(tasks)) == container_ids(tasks)


def on_nodes(tasks: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["node"]] = counts.get(task["node"], 0) + 1
    return counts


def container_ids(tasks: list[dict]) -> set[str]:
    return {t["Status"]["ContainerStatus"]["ContainerID"][:12] for t in tasks}


def test_a_drain_under_load_moves_the_tasks_with_no_failed_request(cluster, spread_app):
    gitd, app = cluster.gitd, spread_app["app"]
    worker = cluster.workers[0]
    before = cluster.tasks(app)
    assert on_nodes(before).get(worker.name), on_nodes(before)

    def moved():
        tasks = cluster.tasks(app)
        return len(tasks) == 6 and worker.name not in on_nodes(tasks) and tasks

    with Load(gitd, gitd.host(app)) as load:
        out = ok(gitd.ssh("nodes:drain", worker.name))
        tasks = wait_until(moved, f"6 tasks off {worker.name}", timeout=120)
        answering(gitd, app, container_ids(tasks))
    assert f"-----> {worker.name}: drain (was active)" in out, out
    assert load.failures == [] and load.ok > 100, (load.failures, load.ok)

    # activated, it takes tasks again at the next restart (under load too)
    with Load(gitd, gitd.host(app)) as load:
        ok(gitd.ssh("nodes:activate", worker.name))
        ok(gitd.ssh("ps:restart", app))
        tasks = wait_until(lambda: (t := cluster.tasks(app)) and worker.name in on_nodes(t)
                           and len(t) == 6 and t, f"tasks on {worker.name} again", timeout=120)
        answering(gitd, app, container_ids(tasks))
    assert load.failures == [] and load.ok > 0, (load.failures, load.ok)
    assert set(on_nodes(tasks)) == {n.name for n in cluster.nodes}, on_nodes(tasks)


def test_an_app_on_worker1_reaches_redis_pinned_on_worker2_which_keeps_its_data(
        cluster, tmp_path_factory):
    """Overlay traffic between nodes and a pinned volume: Redis pinned with
    --node to worker 2, linked to an app with a task on worker 1; a key the
    worker-1 task writes outlives a redeploy, a gitd restart and Redis's own
    restart (its task restarted on worker 2, from the volume there)."""
    gitd, worker1, worker2 = cluster.gitd, cluster.workers[0], cluster.workers[1]
    cluster.load_image(cluster.manager, REDIS_IMAGE)
    app, service = unique_app("ov"), unique_app("rd")
    ok(gitd.ssh("apps:create", app))
    repo = make_repo(tmp_path_factory.mktemp("overlay") / "app", REDIS_CLIENT_APP)
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr + cluster.gitd_log()[-3000:]
    created = ok(gitd.ssh("services:create", "redis", service, "--node", worker2.name))
    assert f"on node {worker2.name}" in created, created
    ok(gitd.ssh("services:link", service, app))
    ok(gitd.ssh("ps:scale", app, "web=3"))

    def redis_on_worker2():
        tasks = cluster.tasks_of_service(service)
        return len(tasks) == 1 and tasks[0]["node"] == worker2.name and tasks[0]
    redis_task = wait_until(redis_on_worker2, f"{service} running on {worker2.name}")
    volumes = worker2.sh("docker volume ls -q").split()
    assert any(service in v for v in volumes), volumes
    assert not any(service in v for n in (cluster.manager, worker1)
                   for v in n.sh("docker volume ls -q").split())

    wait_until(lambda: worker1.name in on_nodes(cluster.tasks(app)),
               f"a task of {app} on {worker1.name}", timeout=120)

    def from_worker1(words: str, wanted: str, timeout: float = 120) -> str:
        """`redis-cli WORDS` as answered by the app's task on worker 1 (the
        request sent through Traefik until that task answers it)."""
        def answered():
            tasks = [t for t in cluster.tasks(app) if t["node"] == worker1.name]
            mine = container_ids(tasks)
            status, body = gitd.get(gitd.host(app), f"/cgi-bin/redis?{words}")
            lines = body.split()
            return (status == 200 and lines and lines[0] in mine and wanted in lines[1:]
                    and body)
        return wait_until(answered, f"`{words}` answered {wanted} on {worker1.name}",
                          timeout=timeout, pause=0.1)

    from_worker1("PING", "PONG")
    from_worker1("SET+overlay+across-nodes", "OK")
    from_worker1("GET+overlay", "across-nodes")

    commit(repo, {"README": "v2"}, "v2")
    pushed = gitd.push(repo, app)
    assert pushed.returncode == 0, pushed.stderr + cluster.gitd_log()[-3000:]
    cluster.stop_gitd()
    cluster.start_gitd()
    from_worker1("GET+overlay", "across-nodes")

    # Redis itself restarted: the key comes back from dump.rdb on worker 2's volume
    from_worker1("SAVE", "OK")
    redis_id = redis_task["Status"]["ContainerStatus"]["ContainerID"]
    worker2.sh(f"docker kill {redis_id}")
    restarted = wait_until(lambda: (t := redis_on_worker2()) and t["ID"] != redis_task["ID"] and t,
                           f"{service} restarted on {worker2.name}", timeout=120)
    assert restarted["node"] == worker2.name
    from_worker1("GET+overlay", "across-nodes")

    # removed as docs/scale-out.md says: gitd takes no final backup off its
    # node (refused, nothing changed), so its task is stopped by hand first
    ok(gitd.ssh("services:unlink", service, app))
    ok(gitd.ssh("apps:destroy", app, "--force"))
    refused = gitd.ssh("services:destroy", service, "--force")
    assert refused.returncode != 0 and f"runs on node {worker2.name}" in refused.stderr, refused
    assert redis_on_worker2()["ID"] == restarted["ID"]
    swarm_service = cluster.manager.sh(
        f"docker service ls -q --filter label=gitd.service={service}").split()
    cluster.manager.sh(f"docker service scale --detach {' '.join(swarm_service)}=0")
    wait_until(lambda: not cluster.tasks_of_service(service), f"{service} stopped")
    ok(gitd.ssh("services:destroy", service, "--force"))
    volume = next(v for v in volumes if service in v)
    wait_until(lambda: worker2.sh(f"docker volume rm {volume}", check=False).strip() == volume,
               f"{volume} removed on {worker2.name}")


def test_a_worker_killed_hard_its_tasks_are_rescheduled_and_routes_follow(cluster, spread_app):
    gitd, app = cluster.gitd, spread_app["app"]
    worker = cluster.workers[1]
    assert on_nodes(cluster.tasks(app)).get(worker.name), on_nodes(cluster.tasks(app))

    def rescheduled():
        tasks = cluster.tasks(app)
        return len(tasks) == 6 and worker.name not in on_nodes(tasks) and tasks

    with Load(gitd, gitd.host(app)) as load:
        time.sleep(2)
        killed = time.monotonic()
        worker.container.kill()
        tasks = wait_until(rescheduled, f"6 tasks off the dead {worker.name}", timeout=180)
        moved = time.monotonic() - killed
        answering(gitd, app, container_ids(tasks))
        followed = time.monotonic() - killed
        time.sleep(2)
        after = time.monotonic()
    failed = load.failed_between(killed)
    print(f"\nworker killed: {len(failed)} failed of {load.count} requests; tasks rescheduled "
          f"after {moved:.1f} s, all answering after {followed:.1f} s; failures {failed[:5]}")
    assert load.failed_between(0, killed) == [] and load.failed_between(after) == []
    assert len(failed) <= KILLED_WORKER_FAILURES, failed


def test_three_managers_the_leader_lost_gitd_on_another_keeps_deploying(
        docker_client, base_image, tmp_path_factory):
    """Last and on a cluster of its own: three managers, the swarm made on
    the second (its leader), gitd on the first."""
    require(any(DIST.glob("gitd-*.whl")), f"no wheel of gitd in {DIST}")
    cluster = build_cluster(docker_client, tmp_path_factory.mktemp("managers"), managers=3,
                            workers=0, images=(f"{BASE_IMAGE}:latest",), leader=1)
    try:
        gitd, leader = cluster.gitd, cluster.nodes[1]
        assert cluster.leader() == leader.name
        app = unique_app("ha")
        ok(gitd.ssh("apps:create", app))
        repo = make_repo(tmp_path_factory.mktemp("ha") / "app", {"Dockerfile": HOSTNAME_APP})
        assert gitd.push(repo, app).returncode == 0

        leader.container.stop(timeout=0)
        elected = wait_until(lambda: (name := cluster.leader()) and name != leader.name and name,
                             "another leader", timeout=120)
        assert elected in {n.name for n in cluster.nodes if n is not leader}

        commit(repo, {"README": "after the leader"}, "v2")
        pushed = gitd.push(repo, app)
        assert pushed.returncode == 0, pushed.stderr + cluster.gitd_log()[-3000:]
        tasks = wait_until(lambda: len(t := cluster.tasks(app)) == 1 and t,
                           "the new release running alone (v1 retired)", timeout=120)
        assert leader.name not in on_nodes(tasks)
        assert answering(gitd, app, container_ids(tasks)) >= container_ids(tasks)
    finally:
        cluster.remove()

"""gitd on a swarm of three Docker-in-Docker nodes the test owns (issue #27):
gitd and Traefik on the manager, tasks on every node, images pulled from a
registry at the manager's address, drains and a lost worker under HTTP load,
and a lost leader among three managers.

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


@pytest.fixture(scope="module")
def cluster(docker_client, base_image, tmp_path_factory):
    try:
        docker_client.images.get(CLUSTER_IMAGE)
    except docker.errors.ImageNotFound:
        require(False, f"{CLUSTER_IMAGE} is not built")
    require(any(DIST.glob("gitd-*.whl")) and (DIST / "wheels").is_dir(),
            f"no wheels of gitd and its dependencies in {DIST}")
    built = build_cluster(docker_client, tmp_path_factory.mktemp("cluster"),
                          images=(f"{BASE_IMAGE}:latest",))
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

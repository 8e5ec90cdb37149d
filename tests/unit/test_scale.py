"""What one more app costs (issue #21): apps:list does the same work for
50 apps as for 3; a listing of containers inspects them side by side; what
a push or a poll asks of the engine and the store does not grow with the
number of apps."""

import time

import docker.errors
import pytest

from gitd import commands
from gitd.core.config import Settings
from gitd.core.store import Store
from hooks.docker_routes import FileRoutes
from hooks.engine import Engine, Listed
from tests import fakes
from tests.fakes import Bridge, FakeGitd


@pytest.fixture
def crowd(tmp_path):
    store = Store(tmp_path / "gitd.db")
    store.add_key("admin", "SHA256:admin", "ssh-ed25519 AAAA admin", True)
    store.add_key("dev", "SHA256:dev", "ssh-ed25519 AAAA dev", False)
    return FakeGitd(store, Settings(data_dir=tmp_path, instance="t1234567"))


def _apps_list(fake, key):
    """(output, writes to the session, SQL statements run)"""
    statements = []
    fake.store.db.conn.set_trace_callback(statements.append)
    try:
        ctx = commands.Context(fake, fake.store.get_key(key), Bridge())
        statements.clear()
        assert commands.dispatch(ctx, ["apps:list"]) == 0
    finally:
        fake.store.db.conn.set_trace_callback(None)
    return "".join(ctx.bridge.stdout), len(ctx.bridge.stdout), len(statements)


@pytest.mark.parametrize("key", ["admin", "dev"])
def test_apps_list_costs_the_same_for_50_apps_as_for_3(crowd, key):
    costs = []
    for count in (3, 50):
        for n in range(len(costs) and 3, count):
            crowd.store.create_app(f"app-{n:03}")
            if n % 2:
                crowd.store.grant(f"app-{n:03}", "dev")
        out, writes, queries = _apps_list(crowd, key)
        shown = [line.split()[0] for line in out.splitlines()]
        expected = [f"app-{n:03}" for n in range(count) if key == "admin" or n % 2]
        assert shown == expected
        assert out.endswith("(not deployed)\n")
        costs.append((writes, queries))
    assert costs[0] == costs[1] and costs[0][0] == 1, costs


class SlowEngineClient:
    """Docker answering each inspection after `delay` (a container lock held
    by a start or stop elsewhere); `gone` were removed after the listing."""

    def __init__(self, ids, gone=(), delay=0.2, removing=()):
        self.ids, self.gone, self.delay, self.removing = ids, set(gone), delay, set(removing)
        self.filters = None
        self.api = type("Api", (), {"containers": self._list})()
        self.containers = type("Containers", (), {"get": self._get, "list": self._sdk_list})()

    def _list(self, all, filters):  # noqa: A002 - the SDK's name
        self.filters = filters
        return [{"Id": i} for i in self.ids]

    def _sdk_list(self, all, filters, ignore_removed):  # noqa: A002 - as the SDK does it
        found = []
        for row in self._list(all, filters):
            try:
                found.append(self._get(row["Id"]))
            except docker.errors.NotFound:
                pass
        return found

    def _get(self, container_id):
        time.sleep(self.delay)
        if container_id in self.gone:
            raise docker.errors.NotFound("gone")
        if container_id in self.removing:  # as Podman answers, while it removes one
            raise docker.errors.APIError("500 Server Error", explanation=(
                f"container {container_id} does not exist in database: no such container"))
        return f"container {container_id}"


def test_listing_containers_inspects_them_side_by_side():
    ids = [f"c{n}" for n in range(16)]
    client = SlowEngineClient(ids, gone={"c3"})
    engine = Engine(client, "t1234567")
    started = time.monotonic()
    listed = engine.containers("hello", **{"gitd.process": "web"})
    took = time.monotonic() - started
    assert listed == [f"container {i}" for i in ids if i != "c3"]  # in Docker's order
    assert client.filters == {"label": ["gitd.instance=t1234567", "gitd.app=hello",
                                        "gitd.process=web"]}
    assert took < 16 * 0.2 / 2, took  # one after another: 3.2 s; side by side: 0.4 s
    assert Engine(SlowEngineClient([], delay=0), "t1234567").containers() == []


def test_a_container_podman_is_removing_is_gone_not_an_error():
    """Podman answers an inspection of a container it is removing with a 500
    (a deploy listed the app's containers while the last one's retirement
    removed one: the push failed with an internal error)."""
    client = SlowEngineClient(["c1", "c2", "c3"], removing={"c2"}, delay=0)
    engine = Engine(client, "t1234567")
    assert engine.containers("hello") == ["container c1", "container c3"]
    assert engine.container("c2") is None

    def broken(container_id):
        raise docker.errors.APIError("500 Server Error", explanation="database is locked")
    client.containers.get = broken
    with pytest.raises(docker.errors.APIError):  # any other failure still says so
        engine.container("c1")


class ListingOnly(fakes.Engine):
    """An engine that lists (filtering by labels, as Docker does) and
    refuses to inspect every container."""

    def containers(self, app=None, **labels):
        raise AssertionError("every container inspected")

    def listed(self, app=None, **labels):
        wanted = {"gitd.app": app, **labels}
        return [Listed(c.name, c.name, c.labels, c.status, None) for c in self.live
                if all(v is None or c.labels.get(k) == v for k, v in wanted.items())]


def test_whether_a_deploy_still_runs_is_asked_of_the_listing(tmp_path):
    app_container = fakes.app_container
    engine = ListingOnly([app_container("shop", 3, 2), app_container("shop", 2, 1, status="exited"),
                          *(app_container(f"app{n}", 3, 2) for n in range(40))])
    routes = FileRoutes(engine, Settings(data_dir=tmp_path, instance="t"))
    assert routes.web_running("shop", 3)
    assert not routes.web_running("shop", 2)  # exited
    assert not routes.web_running("shop", 4)  # none
    assert not routes.web_running("shop_api", 3)  # another component's route


def test_a_deploys_503_routes_of_every_app_take_the_same_queries_at_any_app_count(tmp_path):
    """Each deploy rewrites every app's 503 routes (hooks.router.fallback_config):
    a query per app made a push at 300 apps ~0.17 s slower than at 1."""
    import json

    def queries_to_sync(apps: int, root) -> tuple[int, dict]:
        root.mkdir()
        gitd = fakes.daemon_mid_deploy(root, [])
        for n in range(apps):
            name = f"app{n}"
            gitd.store.create_app(name)
            release = gitd.store.new_release(name, status="succeeded", procfile={})
            gitd.store.set_live(name, release.version, gitd.store.take_seq(name))
            gitd.store.add_domains(name, [f"{name}.test"])
        statements = []
        gitd.store.db.conn.set_trace_callback(statements.append)
        gitd.pipeline.sync_fallbacks()
        gitd.store.db.conn.set_trace_callback(None)
        written = json.loads((gitd.settings.dynamic_dir / "fallback.yml").read_text())
        return len(statements), written["http"]["routers"]

    few, routers_few = queries_to_sync(3, tmp_path / "few")
    many, routers_many = queries_to_sync(30, tmp_path / "many")
    assert few == many
    assert "gitd-fallback-app0" in routers_few and len(routers_many) == 30
    assert "app29.test" in routers_many["gitd-fallback-app29"]["rule"]

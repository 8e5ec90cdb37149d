"""Many apps on one box (issue #21): what a push or a poll asks of the engine
does not grow with the number of apps."""

from __future__ import annotations

from gitd.core.config import Settings
from hooks.bridges import LabelRoutes
from hooks.engine import Listed
from tests.fakes import Engine, app_container


class ListingOnly(Engine):
    """An engine that lists (filtering by labels, as Docker does) and
    refuses to inspect every container."""

    def containers(self, app=None, **labels):
        raise AssertionError("every container inspected")

    def listed(self, app=None, **labels):
        wanted = {"gitd.app": app, **labels}
        return [Listed(c.name, c.name, c.labels, c.status, None) for c in self.live
                if all(v is None or c.labels.get(k) == v for k, v in wanted.items())]


def test_a_bridge_hand_over_asks_whether_the_deploy_runs_from_the_listing(tmp_path):
    engine = ListingOnly([app_container("shop", 3, 2), app_container("shop", 2, 1, status="exited"),
                          *(app_container(f"app{n}", 3, 2) for n in range(40))])
    routes = LabelRoutes(engine, Settings(data_dir=tmp_path, instance="t"))
    assert routes.web_running("shop", 3)
    assert not routes.web_running("shop", 2)  # exited
    assert not routes.web_running("shop", 4)  # none
    assert not routes.web_running("shop_api", 3)  # another component's route


def test_a_deploys_503_routes_of_every_app_take_the_same_queries_at_any_app_count(tmp_path):
    """Each deploy rewrites every app's 503 routes (hooks.router.fallback_config):
    a query per app made a push at 300 apps ~0.17 s slower than at 1."""
    import json

    from tests.fakes import daemon_mid_deploy

    def queries_to_sync(apps: int, root) -> tuple[int, dict]:
        root.mkdir()
        gitd = daemon_mid_deploy(root, [])
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

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

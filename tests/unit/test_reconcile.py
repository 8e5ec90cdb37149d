"""Reconcile after a crash: a deploy whose containers were healthy is
finished, one whose containers were not is undone (store + a recording engine)."""

import time

from gitd.core.config import Settings
from gitd.service import Gitd
from gitd.core.store import Store


class Container:
    def __init__(self, app, seq, release, process="web", health="healthy", status="running"):
        self.name = f"gitd-t.{app}.{process}.1.s{seq}"
        self.labels = {"gitd.app": app, "gitd.seq": str(seq), "gitd.release": str(release),
                       "gitd.process": process, "gitd.role": "service", "gitd.instance": "t"}
        self.status = status
        self.attrs = {"State": {"Status": status, "Health": {"Status": health}}}

    def start(self):
        self.status = "running"


class Engine:
    def __init__(self, containers):
        self.live, self.removed, self.images_removed = list(containers), [], []

    def containers(self, app=None, **labels):
        return [c for c in self.live if app in (None, c.labels["gitd.app"])]

    def remove(self, container, timeout=0):
        self.live.remove(container)
        self.removed.append((container.name, timeout))

    def remove_image(self, tag):
        self.images_removed.append(tag)


def daemon(tmp_path, containers):
    store = Store(tmp_path / "gitd.db")
    store.create_app("hello")
    v1 = store.new_release("hello", status="succeeded", procfile={})
    store.set_live("hello", v1.version, store.take_seq("hello"))  # seq 1
    store.new_release("hello", status="deploying", procfile={})  # v2, interrupted
    store.take_seq("hello")  # seq 2
    gitd = Gitd(Settings(data_dir=tmp_path, instance="t", drain_seconds=0), store)
    gitd._engine = Engine(containers)
    return gitd


def test_a_deploy_killed_with_healthy_containers_is_finished(tmp_path):
    old, new = Container("hello", 1, 1), Container("hello", 2, 2)
    gitd = daemon(tmp_path, [old, new])
    gitd.reconcile()
    assert gitd.wait_adoptions(10) and gitd.retirements.wait(10)  # old containers retire in the background
    app = gitd.store.get_app("hello")
    assert (app.current_release, app.live_seq) == (2, 2)
    assert gitd.store.get_release("hello", 2).status == "succeeded"
    assert gitd._engine.live == [new]
    assert gitd._engine.removed == [(old.name, gitd.settings.stop_timeout)]  # drained, then stopped
    assert gitd._engine.images_removed == []


def test_a_deploy_killed_before_its_containers_were_healthy_is_undone(tmp_path, monkeypatch):
    import gitd.service

    # a container still starting is waited for (bounded) before it is judged
    monkeypatch.setattr(gitd.service, "HEALTH_SETTLE_SECONDS", 0.3)
    old, new = Container("hello", 1, 1), Container("hello", 2, 2, health="starting")
    gitd = daemon(tmp_path, [old, new])
    started = time.monotonic()
    gitd.reconcile()
    assert time.monotonic() - started >= 0.3
    assert gitd.wait_adoptions(10) and gitd.retirements.wait(10)  # old containers retire in the background
    app = gitd.store.get_app("hello")
    assert (app.current_release, app.live_seq) == (1, 1)
    assert gitd.store.get_release("hello", 2).status == "failed"
    assert gitd._engine.live == [old]
    assert gitd._engine.removed == [(new.name, 0)]  # at once: before it can become healthy
    assert gitd._engine.images_removed == ["gitd/hello:v2"]


def test_an_incomplete_formation_is_not_finished(tmp_path):
    old, new = Container("hello", 1, 1), Container("hello", 2, 2)
    gitd = daemon(tmp_path, [old, new])
    gitd.store.set_scale("hello", {"web": 2})
    gitd.reconcile()
    assert gitd.wait_adoptions(10) and gitd.retirements.wait(10)  # old containers retire in the background
    assert gitd.store.get_app("hello").live_seq == 1
    assert gitd._engine.live == [old]


def test_an_interrupted_deploy_of_app_json_services_is_finished_only_when_every_service_is_there(tmp_path):
    old = Container("hello", 1, 1)
    front, back = Container("hello", 2, 2), Container("hello", 2, 2)
    for container, name in ((front, "frontend"), (back, "backend")):
        container.labels["gitd.component"] = name
        container.name = container.name.replace(".web.", f".{name}_web.")
    gitd = daemon(tmp_path, [old, front])
    gitd.store.update_release("hello", 2, components={"frontend": {"procfile": {}},
                                                      "backend": {"procfile": {}}})
    app = gitd.store.get_app("hello")
    assert not gitd._complete_and_healthy(app, 2, [front])
    assert gitd._complete_and_healthy(app, 2, [front, back])


def test_routes_of_app_json_services_drift_when_https_changes(tmp_path):
    from gitd.core.store import HostRoute
    from hooks import router

    web = Container("hello", 1, 1)
    web.labels["gitd.component"] = "backend"
    gitd = daemon(tmp_path, [web])
    gitd.store.add_domains("hello", ["hello.test"])
    gitd.store.update_release("hello", 1, components={"backend": {"routes": [["/api", True]]}})
    web.labels.update(router.labels("hello_backend", 1, [HostRoute("hello.test", "/api", True)], 8080))
    app = gitd.store.get_app("hello")
    assert not gitd.routes_drifted(app)
    gitd.store.add_domains("hello", ["www.test"])  # the service's routes now cover a second host
    assert gitd.routes_drifted(app)


def test_deployments_cut_short_end_at_start_as_their_release_did(tmp_path, monkeypatch):
    import gitd.service

    monkeypatch.setattr(gitd.service, "HEALTH_SETTLE_SECONDS", 0.3)
    for health, expected in (("healthy", "succeeded"), ("starting", "failed")):
        root = tmp_path / health
        root.mkdir()
        daemon_ = daemon(root, [Container("hello", 1, 1), Container("hello", 2, 2, health=health)])
        store = daemon_.store
        deploying = store.new_deployment("hello", "push", release=2)
        store.update_deployment(deploying.id, status="deploying")
        queued = store.new_deployment("hello", "api")
        daemon_.reconcile()
        assert daemon_.wait_adoptions(10) and daemon_.retirements.wait(10)
        assert store.get_deployment(deploying.id).status == expected
        assert store.get_deployment(queued.id).status == "cancelled"
        assert "interrupted" in store.get_deployment(queued.id).error

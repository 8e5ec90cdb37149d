"""Reconcile after a crash: a deploy whose containers were healthy is
finished, one whose containers were not is undone (store + a recording engine)."""

import time

from hooks.recovery import complete_and_healthy
from tests.fakes import app_container, daemon_mid_deploy


def test_a_deploy_killed_with_healthy_containers_is_finished(tmp_path):
    old, new = app_container("hello", 1, 1), app_container("hello", 2, 2)
    gitd = daemon_mid_deploy(tmp_path, [old, new])
    gitd.reconcile()
    assert gitd.wait_adoptions(10) and gitd.retirements.wait(10)  # old containers retire in the background
    app = gitd.store.get_app("hello")
    assert (app.current_release, app.live_seq) == (2, 2)
    assert gitd.store.get_release("hello", 2).status == "succeeded"
    assert gitd._engine.live == [new]
    assert gitd._engine.removed == [(old.name, gitd.settings.stop_timeout)]  # drained, then stopped
    assert gitd._engine.images_removed == []


def test_a_deploy_killed_before_its_containers_were_healthy_is_undone(tmp_path, monkeypatch):
    import hooks.recovery

    # a container still starting is waited for (bounded) before it is judged
    monkeypatch.setattr(hooks.recovery, "HEALTH_SETTLE_SECONDS", 0.3)
    old, new = app_container("hello", 1, 1), app_container("hello", 2, 2, health="starting")
    gitd = daemon_mid_deploy(tmp_path, [old, new])
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


def test_a_deploy_killed_before_dockers_first_check_is_judged_by_gitds(tmp_path, monkeypatch):
    """Docker checks a bridged deploy only health_interval after its start:
    at start gitd runs the check itself, as the deploy did."""
    import hooks.recovery

    monkeypatch.setattr(hooks.recovery, "HEALTH_SETTLE_SECONDS", 5)
    old = app_container("hello", 1, 1)
    new = app_container("hello", 2, 2, health="starting")
    new.attrs["Config"] = {"Healthcheck": {"Test": ["CMD", "/.gitd/busybox", "sh"]}}
    gitd = daemon_mid_deploy(tmp_path, [old, new])
    ran = []
    gitd._engine.exec = lambda container, argv: ran.append((container.name, argv)) or (0, b"ok")
    started = time.monotonic()
    gitd.reconcile()
    assert time.monotonic() - started < 3  # judged at once, not after the settle time
    assert ran == [(new.name, ["/.gitd/busybox", "sh"])]
    assert gitd.wait_adoptions(10) and gitd.retirements.wait(10)
    assert gitd.store.get_app("hello").live_seq == 2 and gitd._engine.live == [new]


def test_a_container_failing_gitds_check_at_start_is_still_starting(tmp_path, monkeypatch):
    import hooks.recovery

    monkeypatch.setattr(hooks.recovery, "HEALTH_SETTLE_SECONDS", 0.3)
    old, new = app_container("hello", 1, 1), app_container("hello", 2, 2, health="starting")
    new.attrs["Config"] = {"Healthcheck": {"Test": ["CMD", "/.gitd/busybox", "sh"]}}
    gitd = daemon_mid_deploy(tmp_path, [old, new])
    gitd._engine.exec = lambda container, argv: (1, b"GET / -> no answer on port 5000")
    gitd.reconcile()
    assert gitd.wait_adoptions(10) and gitd.retirements.wait(10)
    assert gitd.store.get_app("hello").live_seq == 1 and gitd._engine.live == [old]


def test_an_incomplete_formation_is_not_finished(tmp_path):
    old, new = app_container("hello", 1, 1), app_container("hello", 2, 2)
    gitd = daemon_mid_deploy(tmp_path, [old, new])
    gitd.store.set_scale("hello", {"web": 2})
    gitd.reconcile()
    assert gitd.wait_adoptions(10) and gitd.retirements.wait(10)  # old containers retire in the background
    assert gitd.store.get_app("hello").live_seq == 1
    assert gitd._engine.live == [old]


def test_an_interrupted_deploy_of_app_json_services_is_finished_only_when_every_service_is_there(tmp_path):
    old = app_container("hello", 1, 1)
    front, back = app_container("hello", 2, 2), app_container("hello", 2, 2)
    for container, name in ((front, "frontend"), (back, "backend")):
        container.labels["gitd.component"] = name
        container.name = container.name.replace(".web.", f".{name}_web.")
    gitd = daemon_mid_deploy(tmp_path, [old, front])
    gitd.store.update_release("hello", 2, components={"frontend": {"procfile": {}},
                                                      "backend": {"procfile": {}}})
    app, release = gitd.store.get_app("hello"), gitd.store.get_release("hello", 2)
    assert not complete_and_healthy(release, app.scale, [front])
    assert complete_and_healthy(release, app.scale, [front, back])


def test_routes_of_app_json_services_drift_when_https_changes(tmp_path):
    from gitd.core.store import HostRoute
    from hooks import router

    web = app_container("hello", 1, 1)
    web.labels["gitd.component"] = "backend"
    gitd = daemon_mid_deploy(tmp_path, [web])
    gitd.store.add_domains("hello", ["hello.test"])
    gitd.store.update_release("hello", 1, components={"backend": {"routes": [["/api", True]],
                                                                  "port": 8080, "image_id": "sha256:b"}})
    web.labels.update(router.labels("hello_backend", 1, [HostRoute("hello.test", "/api", True)], 8080))
    app = gitd.store.get_app("hello")
    assert not gitd.recovery.routes_drifted(app)
    gitd.store.add_domains("hello", ["www.test"])  # the service's routes now cover a second host
    assert gitd.recovery.routes_drifted(app)


def test_deployments_cut_short_end_at_start_as_their_release_did(tmp_path, monkeypatch):
    import hooks.recovery

    monkeypatch.setattr(hooks.recovery, "HEALTH_SETTLE_SECONDS", 0.3)
    for health, expected in (("healthy", "succeeded"), ("starting", "failed")):
        root = tmp_path / health
        root.mkdir()
        daemon_ = daemon_mid_deploy(root, [app_container("hello", 1, 1),
                                           app_container("hello", 2, 2, health=health)])
        store = daemon_.store
        deploying = store.new_deployment("hello", "push", release=2)
        store.update_deployment(deploying.id, status="deploying")
        queued = store.new_deployment("hello", "api")
        daemon_.reconcile()
        assert daemon_.wait_adoptions(10) and daemon_.retirements.wait(10)
        assert store.get_deployment(deploying.id).status == expected
        assert store.get_deployment(queued.id).status == "cancelled"
        assert "interrupted" in store.get_deployment(queued.id).error


def test_the_deploy_and_recovery_share_one_formation_rule():
    from hooks.pipeline import formation, process_types

    types = process_types({"web": "serve", "worker": "work", "release": "migrate"})
    assert types == ["web", "worker"]
    assert formation(types, {}) == {"web": 1}
    assert formation(types, {"web": 0, "worker": 2, "clock": 1}) == {"worker": 2}
    assert formation(types, {"api.worker": 3, "worker": 1}, "api") == {"web": 1, "worker": 3}


def test_an_adopted_deploy_is_confirmed_routed_on_the_ports_its_release_recorded(tmp_path,
                                                                                monkeypatch):
    """Each app.json service's route, on the port the release recorded (no
    label is read back for it), before the old containers retire."""
    from hooks import router

    front, back = app_container("hello", 2, 2), app_container("hello", 2, 2)
    front.labels["gitd.component"], back.labels["gitd.component"] = "frontend", "backend"
    gitd = daemon_mid_deploy(tmp_path, [front, back])
    gitd.settings = gitd.recovery.settings = type(gitd.settings)(
        data_dir=tmp_path, instance="t", drain_seconds=0, traefik_api_url="http://127.0.0.1:1")
    gitd.store.add_domains("hello", ["hello.test"])
    gitd.store.update_release("hello", 2, components={
        "frontend": {"routes": [["/", False]], "port": 3000, "image_id": "sha256:f"},
        "backend": {"routes": [["/api", True]], "port": 8080, "image_id": "sha256:b"}})
    gitd._engine.host_port = lambda container, port: {3000: 41000, 8080: 42000}[port]
    confirmed = []
    monkeypatch.setattr(router, "confirm_routed", lambda api, key, seq, urls, timeout, provider:
                        confirmed.append((key, seq, urls, provider)))
    assert gitd.recovery._routed_in_traefik("hello", 2, [front, back])
    # in the files a managed Traefik reads
    assert sorted(confirmed) == [("hello_backend", 2, {"http://127.0.0.1:42000"}, ("file",)),
                                 ("hello_frontend", 2, {"http://127.0.0.1:41000"}, ("file",))]


def test_at_start_every_live_deploy_without_a_route_file_gets_one(tmp_path):
    """A managed Traefik reads route files only: a live deploy an older
    gitd's docker provider had taken over gets a file to its healthy web
    containers before Traefik starts. Not for a leftover, not for an
    unhealthy container; a file there already is brought to the ports its
    containers have now."""
    import json

    from hooks import router
    from hooks.specs import route_key_of

    live, leftover = app_container("hello", 1, 1), app_container("hello", 2, 2, health="unhealthy")
    other, sick = app_container("other", 1, 1), app_container("sick", 1, 1, health="unhealthy")
    kept = app_container("kept", 1, 1)
    containers = (live, leftover, other, sick, kept)
    for port, container in enumerate(containers, 41001):
        container.attrs["NetworkSettings"] = {"Ports": {"5000/tcp": [{"HostIp": "127.0.0.1",
                                                                      "HostPort": str(port)}]}}
        container.labels[router.port_label(route_key_of(container.labels),
                                           int(container.labels["gitd.seq"]))] = "5000"
    gitd = daemon_mid_deploy(tmp_path, list(containers))
    for name in ("other", "sick", "kept"):
        gitd.store.create_app(name)
        release = gitd.store.new_release(name, status="succeeded", procfile={})
        gitd.store.set_live(name, release.version, gitd.store.take_seq(name))
    for name in ("hello", "other", "sick", "kept"):
        gitd.store.add_domains(name, [f"{name}.test"])
    # a file there already, from before the engine restarted its container elsewhere
    gitd.settings.dynamic_dir.mkdir(parents=True, exist_ok=True)
    (gitd.settings.dynamic_dir / "bridge-kept-s1.yml").write_text(router.route_file_text(
        router.file_routes("kept", 1, router.as_routes(["kept.test"]), ["http://127.0.0.1:41999"])))
    gitd.reconcile()
    staged = {p.name: json.loads(p.read_text())
              for p in gitd.settings.dynamic_dir.glob("bridge-*.yml")}
    assert sorted(staged) == ["bridge-hello-s1.yml", "bridge-kept-s1.yml", "bridge-other-s1.yml"]
    assert [s["url"] for s in staged["bridge-kept-s1.yml"]["http"]["services"]["kept-s1"][
        "loadBalancer"]["servers"]] == ["http://127.0.0.1:41005"]  # where it runs now
    http = staged["bridge-hello-s1.yml"]["http"]  # the live container's port, not the leftover's
    assert [s["url"] for v in http["services"].values() for s in v["loadBalancer"]["servers"]] == [
        "http://127.0.0.1:41001"]
    assert any("hello.test" in r["rule"] for r in http["routers"].values())


def test_no_file_route_is_staged_for_a_traefik_gitd_does_not_run(tmp_path):
    live = app_container("hello", 1, 1)
    live.attrs["NetworkSettings"] = {"Ports": {"5000/tcp": [{"HostPort": "41001"}]}}
    gitd = daemon_mid_deploy(tmp_path, [live])
    gitd.settings = gitd.recovery.settings = type(gitd.settings)(
        data_dir=tmp_path, instance="t", drain_seconds=0, traefik="external")
    gitd.reconcile()
    assert not list(gitd.settings.dynamic_dir.glob("bridge-*.yml"))


def test_each_starting_container_is_checked_once_at_start_though_every_look_is_afresh(
        tmp_path, monkeypatch):
    """Docker says `starting` at every look (its first check is far off): a
    container gitd's check passed is not checked again, and a broken one
    does not hold the others."""
    import copy

    import hooks.recovery

    monkeypatch.setattr(hooks.recovery, "HEALTH_SETTLE_SECONDS", 1.0)
    old = app_container("hello", 1, 1)
    good = [app_container(f"a{i}", 2, 2, health="starting") for i in range(3)]
    broken = app_container("b", 2, 2, health="starting")
    for container in good + [broken]:
        container.attrs["Config"] = {"Healthcheck": {"Test": ["CMD", "/.gitd/busybox", "sh"]}}
    gitd = daemon_mid_deploy(tmp_path, [old, *good, broken])
    engine = gitd._engine
    listed = engine.containers
    engine.containers = lambda *a, **k: [copy.deepcopy(c) for c in listed(*a, **k)]
    remove = engine.remove
    engine.remove = lambda c, timeout=0: remove(
        next(x for x in engine.live if x.name == c.name), timeout)
    ran = []
    engine.exec = lambda container, argv: ran.append(container.name) or (
        (1, b"GET / -> no answer on port 5000") if container.name == broken.name else (0, b"ok"))
    gitd.reconcile()
    assert sorted(set(ran)) == sorted(c.name for c in good + [broken])
    assert all(ran.count(c.name) == 1 for c in good)  # once each
    assert ran.count(broken.name) > 1  # tried again until the settle time ends

"""The swarm scheduler's plans: container specs -> swarm services, route files."""

import pytest

from gitd.errors import GitdError
from gitd.store import HostRoute
from hooks import router, swarm
from hooks.checks import HealthCheck
from hooks.deploy import Target, container_specs
from gitd.config import Settings


def settings_for():
    return Settings(instance="abcd1234")


def _target(**changes):
    values = dict(app="shop", version=3, seq=7, image="sha256:" + "a" * 64,
                  config={"GREETING": "hi {{.Node.Hostname}}"}, port=5000,
                  formation={"web": 2, "worker": 1},
                  commands={"web": None, "worker": ["/bin/sh", "-c", "work"]},
                  hosts=["shop.example.com"], check=HealthCheck(), stop_timeout=12)
    values.update(changes)
    return Target(**values)


def test_one_service_per_process_type_with_its_replicas():
    specs = container_specs(_target(), settings_for(), "/bin/busybox")
    groups = swarm.group_by_process(specs)
    built = [swarm.service_spec(g, "127.0.0.1:5000/gitd/shop@sha256:" + "b" * 64) for g in groups]
    by_process = {s["labels"]["gitd.process"]: s for s in built}
    assert by_process["web"]["mode"] == {"Replicated": {"Replicas": 2}}
    assert by_process["worker"]["mode"] == {"Replicated": {"Replicas": 1}}
    web = by_process["web"]
    assert web["name"] == "gitd-abcd1234_shop_web_s7"
    assert web["endpoint_spec"] == {"Mode": "dnsrr", "Ports": [
        {"Protocol": "tcp", "TargetPort": 5000, "PublishMode": "host"}]}
    container = web["task_template"]["ContainerSpec"]
    assert container["Image"].startswith("127.0.0.1:5000/gitd/shop@sha256:")
    assert container["StopGracePeriod"] == 12 * 10**9
    assert container["Healthcheck"]["Test"][0] == "CMD"
    assert container["Labels"]["gitd.role"] == swarm.TASK_ROLE  # a task is not a deploy unit
    assert not any(k.startswith("traefik.") for k in container["Labels"])
    assert "Args" not in container  # the image's own CMD
    worker = by_process["worker"]["task_template"]["ContainerSpec"]
    assert worker["Args"] == ["/bin/sh", "-c", "work"]
    assert by_process["worker"]["endpoint_spec"]["Ports"] == []


def test_environment_keeps_template_braces_as_written_and_templates_dyno():
    env = swarm.task_environment({"A": "x {{.Node.ID}} y", "DYNO": "web.1"}, "web")
    assert env == ['A=x {{"{{"}}.Node.ID}} y', "DYNO=web.{{.Task.Slot}}"]


def test_limits_map_to_swarm_resources():
    assert swarm.resources({"mem_limit": 2**30, "nano_cpus": 5 * 10**8, "pids_limit": 64}) == {
        "Limits": {"MemoryBytes": 2**30, "NanoCPUs": 5 * 10**8, "Pids": 64}}
    assert swarm.resources({}) == {}


def test_an_unmapped_container_setting_is_refused_not_dropped():
    spec = container_specs(_target(), settings_for(), "/bin/busybox")[0]
    spec["privileged"] = True
    with pytest.raises(GitdError, match="privileged"):
        swarm.service_spec([spec], "img")


def test_long_names_stay_a_dns_label():
    name = swarm.service_name("gitd-abcd1234." + "a" * 30 + "." + "b" * 30 + "_web.1.s123456")
    assert len(name) <= swarm.SERVICE_NAME_MAX
    assert name != swarm.service_name("gitd-abcd1234." + "a" * 30 + "." + "b" * 30 + "_web.1.s123457")


def test_file_routes_say_what_the_labels_say():
    paths = [HostRoute("shop.example.com"), HostRoute("shop.example.com", "/api", True)]
    tls = router.TLSPlan(resolver="gitd")
    config = router.file_routes("shop", 7, paths, ["http://10.0.0.5:30001"], "web", tls)
    labels = router.labels("shop", 7, paths, 5000, "web", tls)
    http = config["http"]
    for name, rule in http["routers"].items():
        prefix = f"traefik.http.routers.{name}"
        assert rule["rule"] == labels[f"{prefix}.rule"]
        assert str(rule["priority"]) == labels[f"{prefix}.priority"]
        assert rule["entryPoints"] == [labels[f"{prefix}.entrypoints"]]
        assert ("tls" in rule) == (f"{prefix}.tls" in labels)
    assert http["services"]["shop-s7"]["loadBalancer"]["servers"] == [{"url": "http://10.0.0.5:30001"}]
    strip = {"stripPrefix": {"prefixes": ["/api"]}}
    assert http["middlewares"] == {"shop-s7-p1-strip": strip, "shop-s7-p1-tls-strip": strip}
    assert router.file_routes("shop", 7, [], ["http://x:1"]) == {}


def test_swarm_routes_retry_on_another_task_before_their_own_middlewares():
    paths = [HostRoute("shop.example.com", "/api", True)]
    config = router.file_routes("shop", 7, paths, ["http://a:1", "http://b:2"], retry_attempts=3)
    [rule] = config["http"]["routers"].values()
    assert rule["middlewares"] == ["shop-s7-retry", "shop-s7-strip"]
    assert config["http"]["middlewares"]["shop-s7-retry"]["retry"]["attempts"] == 3


def test_tasks_on_a_node_being_drained_get_no_requests_unless_nothing_else_runs():
    found = [("n1", "http://a:1"), ("n2", "http://b:2"), ("n2", "http://b:3")]
    assert swarm.serving(found, {"n2"}) == {"http://a:1"}
    assert swarm.serving(found, set()) == {"http://a:1", "http://b:2", "http://b:3"}
    assert swarm.serving(found[1:], {"n2"}) == {"http://b:2", "http://b:3"}
    assert swarm.serving([], {"n2"}) == set()

"""The swarm scheduler's plans: container specs -> swarm services, route files."""

import pytest

from gitd.core.errors import GitdError
from gitd.core.store import HostRoute
from hooks import dynos, router, swarm
from hooks.checks import HealthCheck
from hooks.specs import Target, container_specs
from gitd.core.config import Settings


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


def test_swarm_routes_give_up_on_a_server_that_takes_no_connection_within_a_second(tmp_path):
    """A killed node's tasks answer nothing (not even a refusal) until the
    swarm declares the node down: the connection must fail fast enough for
    the retry to send the request to another task (the cluster e2e test)."""
    from hooks.swarm.routes import TaskFiles

    files = TaskFiles(Settings(data_dir=tmp_path))
    files.publish("shop", 7, [HostRoute("shop.example.com")], {"http://10.0.0.5:30001"}, None)
    http = files.read("shop", 7)["http"]
    transport = http["services"]["shop-s7"]["loadBalancer"]["serversTransport"]
    assert http["serversTransports"][transport] == {"forwardingTimeouts": {"dialTimeout": "1s"}}
    assert "serversTransports" not in router.file_routes("shop", 7, [HostRoute("a.b")], ["http://x:1"])


def test_tasks_on_a_node_being_drained_get_no_requests_unless_nothing_else_runs():
    found = [("n1", "http://a:1"), ("n2", "http://b:2"), ("n2", "http://b:3")]
    assert swarm.serving(found, {"n2"}) == {"http://a:1"}
    assert swarm.serving(found, set()) == {"http://a:1", "http://b:2", "http://b:3"}
    assert swarm.serving(found[1:], {"n2"}) == {"http://b:2", "http://b:3"}
    assert swarm.serving([], {"n2"}) == set()


# ps, logs and run on the swarm (plain data)

def _unit(labels=None, replicas=2, env=None, name="gitd-abcd1234_shop_web_s7"):
    labels = {"gitd.app": "shop", "gitd.process": "web", "gitd.role": "service",
              "gitd.release": "3", "gitd.seq": "7", **(labels or {})}
    attrs = {"Spec": {"TaskTemplate": {"ContainerSpec": {"Env": env or []}}}}
    return swarm.SwarmUnit("svc1", name, labels, replicas, attrs)


def _task(task_id, slot, state, desired="running", created="2026-01-01T00:00:01Z",
          node="n1", stamp="2026-01-01T00:00:02.5Z"):
    task = {"ID": task_id, "DesiredState": desired, "CreatedAt": created, "NodeID": node,
            "Status": {"State": state, "Timestamp": stamp}}
    if slot is not None:
        task["Slot"] = slot
    return task


def test_ps_shows_one_task_per_slot_the_one_the_swarm_wants_up():
    tasks = [_task("t1", 1, "failed", desired="shutdown", created="2026-01-01T00:00:01Z"),
             _task("t2", 1, "running", created="2026-01-01T00:00:05Z"),
             _task("t3", 2, "running", created="2026-01-01T00:00:02Z", node="n2"),
             _task("t4", 2, "shutdown", desired="shutdown", created="2026-01-01T00:00:09Z")]
    assert [t["ID"] for t in swarm.current_tasks(tasks)] == ["t2", "t3"]
    rows = swarm.task_rows(_unit(), tasks, {"n1": "manager-1"},
                           now=1767225602.5 + 60)  # 2026-01-01T00:00:02Z + 60s
    assert [(r["name"], r["state"], r["node"], r["uptime"]) for r in rows] == [
        ("web.1", "running", "manager-1", 60), ("web.2", "running", "n2", 60)]
    first = rows[0]
    assert (first["type"], first["role"], first["release"], first["seq"]) == ("web", "service", 3, 7)
    assert first["started_at"] == "2026-01-01T00:00:02Z"
    assert first["container"] == "gitd-abcd1234_shop_web_s7.1.t2"


def test_a_stopped_service_shows_its_last_tasks():
    tasks = [_task("t1", 1, "shutdown", desired="shutdown", created="2026-01-01T00:00:01Z"),
             _task("t0", 1, "failed", desired="shutdown", created="2026-01-01T00:00:00Z"),
             _task("t2", 2, "shutdown", desired="shutdown")]
    rows = swarm.task_rows(_unit(replicas=0), tasks, {})
    assert [(r["name"], r["state"], r["uptime"], r["started_at"]) for r in rows] == [
        ("web.1", "shutdown", None, None), ("web.2", "shutdown", None, None)]


def test_a_task_stopped_on_purpose_that_exited_by_the_stop_signal_reads_shutdown():
    def stopped(task_id, slot, exit_code, desired="shutdown"):
        task = _task(task_id, slot, "failed", desired=desired)
        task["Status"]["ContainerStatus"] = {"ExitCode": exit_code}
        return task

    tasks = [stopped("t1", 1, 143), stopped("t2", 2, 137), stopped("t3", 3, 1)]
    rows = swarm.task_rows(_unit(replicas=0), tasks, {})
    assert [(r["name"], r["state"]) for r in rows] == [
        ("web.1", "shutdown"), ("web.2", "shutdown"), ("web.3", "failed")]
    # a task the swarm still wants up that died of a signal failed, whatever killed it
    [row] = swarm.task_rows(_unit(), [stopped("t4", 1, 143, desired="running")], {})
    assert row["state"] == "failed"


def test_one_off_and_service_tasks_are_named_like_their_containers():
    oneoff = _unit({"gitd.process": "run", "gitd.role": "oneoff"}, replicas=1,
                   env=["A=1", "DYNO=run.ab12cd"], name="gitd-abcd1234_shop_run_ab12cd")
    [row] = swarm.task_rows(oneoff, [_task("t9", None, "running", desired="complete")], {})
    assert (row["name"], row["role"], row["container"]) == (
        "run.ab12cd", "oneoff", "gitd-abcd1234_shop_run_ab12cd.n1.t9")
    release = _unit({"gitd.process": "release", "gitd.role": "release-task"}, replicas=1)
    assert swarm.task_rows(release, [_task("t8", None, "running", desired="complete")],
                           {})[0]["name"] == "release.1"
    backend = _unit({"gitd.component": "backend"})
    assert swarm.task_dyno(backend, _task("t7", 3, "running")) == "backend.web.3"


def test_service_log_lines_give_their_task_and_time():
    line = ("2026-01-01T00:00:08.31365963Z com.docker.swarm.node.id=n1,"
            "com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t2 hello  world ")
    stamp, task, text = swarm.parse_log_line(line)
    assert (task, text) == ("t2", "hello  world ")
    assert stamp == dynos.sortable("2026-01-01T00:00:08.31365963Z")
    assert swarm.parse_log_line("2026-01-01T00:00:08Z com.docker.swarm.task.id=t2 ")[1:] == ("t2", "")
    assert swarm.parse_log_line("2026-01-01T00:00:08Z no details here")[1:] == ("", "no details here")
    early = swarm.parse_log_line("2026-01-01T00:00:08.1Z com.docker.swarm.task.id=t1 a")[0]
    assert dynos.merge([(stamp, "web.2 | late"), (early, "web.1 | early")], 5) == [
        "web.1 | early", "web.2 | late"]


def test_a_run_is_a_job_pinned_here_that_waits_for_the_command():
    spec = {"image": "sha256:" + "a" * 64, "name": "gitd-abcd1234.shop.run.ab12cd",
            "command": ["sh", "-c", "echo {{x}}"],
            "environment": {"A": "{{.Node.ID}}", "DYNO": "run.ab12cd"},
            "labels": {"gitd.instance": "abcd1234", "gitd.app": "shop", "gitd.release": "3",
                       "gitd.process": "run", "gitd.role": "oneoff", "traefik.enable": "false"},
            "init": True, "tty": True, "stdin_open": True,
            "networks": ["gitd-abcd1234-app-shop"], "mem_limit": 2**28,
            "mounts": [{"type": "volume", "source": "data", "target": "/data"}]}
    job = swarm.oneoff_job_spec(spec, "127.0.0.1:5000/gitd/shop@sha256:" + "b" * 64, "node9",
                                "/bin/busybox", "boot1")
    assert job["name"] == "gitd-abcd1234_shop_run_ab12cd"
    assert job["mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert job["labels"]["gitd.role"] == "oneoff" and job["labels"]["gitd.boot"] == "boot1"
    template = job["task_template"]
    assert template["Placement"] == {"Constraints": ["node.id==node9"]}
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["Resources"] == {"Limits": {"MemoryBytes": 2**28}}
    container = template["ContainerSpec"]
    assert container["Command"] == ["/.gitd/busybox", "sleep", "2147483647"]
    assert "Args" not in container and "TTY" not in container  # the exec has the pty
    assert container["Env"] == ['A={{"{{"}}.Node.ID}}', "DYNO=run.ab12cd"]
    assert [m["Target"] for m in container["Mounts"]] == ["/data", "/.gitd/busybox"]
    assert swarm.oneoff_argv(spec, {"Entrypoint": ["/entry.sh"]}) == [
        "/entry.sh", "sh", "-c", "echo {{x}}"]
    assert swarm.oneoff_argv(spec, {"Entrypoint": None}) == ["sh", "-c", "echo {{x}}"]


def test_a_release_task_keeps_its_dyno():
    spec = {"image": "i", "name": "gitd-abcd1234.shop.release.1.s7", "command": ["migrate"],
            "environment": {"DYNO": "release.1"},
            "labels": {"gitd.process": "release", "gitd.role": "release-task"}}
    env = swarm.job_spec(spec, "img")["task_template"]["ContainerSpec"]["Env"]
    assert env == ["DYNO=release.1"]


def test_a_swarm_network_is_judged_by_scope_as_the_allocator_may_not_have_named_its_driver():
    assert swarm.is_swarm_network({"Scope": "swarm", "Driver": ""})
    assert swarm.is_swarm_network({"Scope": "swarm", "Driver": "overlay"})
    assert not swarm.is_swarm_network({"Scope": "local", "Driver": "bridge"})
    assert not swarm.is_swarm_network({})


def test_a_one_off_tasks_late_lines_come_from_the_whole_log_each_once():
    import threading
    stalled = threading.Event()

    class Api:
        def service_logs(self, service_id, stdout, stderr, follow):
            if not follow:
                return iter([b"one\n", b"two\n", b"three\n", b"four\n"])

            def followed():
                yield b"one\n"
                yield b"two\n"
                stalled.set()
                threading.Event().wait()  # the rest is late: the task's state came first
            return followed()

    shown = []
    log = swarm._FollowedLog(Api(), "svc", shown.append)
    threading.Thread(target=log.follow, daemon=True).start()
    assert stalled.wait(5)
    log.finish()
    assert shown == ["one", "two", "three", "four"]

"""Both schedulers implement the whole Scheduler Protocol (hooks.schedulers),
and gitd.scheduling is where the setting picks one."""

import inspect
from pathlib import Path

import pytest

from gitd import scheduling
from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.services.runtime import ContainerRuntime, SwarmRuntime
from hooks.docker_routes import FileRoutes, LabelRoutes
from hooks.router import RouteProvider
from hooks.scheduler import DockerScheduler
from hooks.schedulers import Scheduler
from hooks.swarm import SwarmScheduler
from hooks.swarm.routes import TaskFiles
from tests.fakes import Engine

REPO = Path(__file__).resolve().parents[2]
IMPLEMENTATIONS = [DockerScheduler, SwarmScheduler]


def protocol_members() -> dict[str, object]:
    members = {name: value for name, value in vars(Scheduler).items()
               if not name.startswith("_") and (callable(value) or isinstance(value, property))}
    members.update({name: None for name in Scheduler.__annotations__})
    return members


def parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


def test_the_protocol_names_the_verbs_the_rest_calls():
    names = set(protocol_members())
    assert {"start", "wait_ready", "remove", "reconcile", "remove_app", "oneoff", "dynos",
            "follow_logs", "take_out_of_routes", "node_name", "has_nodes",
            "needs_registry", "release_wait"} <= names


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_each_scheduler_has_every_member(implementation):
    missing = [name for name in protocol_members() if not hasattr(implementation, name)]
    assert missing == []


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_each_method_takes_the_protocols_arguments(implementation):
    """The Protocol's parameters, in its order; an implementation may add
    optional ones after them."""
    for name, member in protocol_members().items():
        if not inspect.isfunction(member):
            continue
        wanted = parameters(member)
        got = parameters(getattr(implementation, name))
        assert got[:len(wanted)] == wanted, name
        extra = list(inspect.signature(getattr(implementation, name)).parameters.values())
        assert all(p.default is not p.empty for p in extra[len(wanted):]), name


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_capabilities_are_known_without_an_engine(implementation):
    for name, kind in (("kind", str), ("has_nodes", bool), ("needs_registry", bool),
                       ("heals_itself", bool), ("routes_follow_tasks", bool),
                       ("release_wait", float)):
        assert isinstance(vars(implementation)[name], kind), name


def test_the_setting_picks_the_scheduler_and_the_service_runtime():
    assert scheduling.scheduler_class(Settings(scheduler="docker")) is DockerScheduler
    assert scheduling.scheduler_class(Settings(scheduler="swarm")) is SwarmScheduler
    assert scheduling.SCHEDULING["docker"].runtime(None, Settings(), None).__class__ \
        is ContainerRuntime
    assert scheduling.SCHEDULING["swarm"].runtime(None, Settings(), object()).__class__ \
        is SwarmRuntime


def test_every_valid_setting_has_a_scheduler():
    from gitd.core.config import SCHEDULERS

    assert set(scheduling.SCHEDULING) == set(SCHEDULERS)


def test_an_unknown_scheduler_is_refused_cleanly():
    with pytest.raises(GitdError, match="setting scheduler must be one of docker, swarm"):
        scheduling.scheduler_class(Settings(scheduler="kubernetes"))


def test_the_setting_is_read_in_the_factory_alone():
    """Outside gitd.scheduling (and config, which checks it), code asks the
    scheduler what it can do."""
    readers = []
    for path in sorted((REPO / "gitd").rglob("*.py")) + sorted((REPO / "hooks").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative in ("gitd/scheduling.py", "gitd/core/config.py"):
            continue
        if "settings.scheduler" in path.read_text():
            readers.append(relative)
    assert readers == [], ("ask the scheduler instead, e.g. ctx.gitd.scheduler_class.has_nodes "
                           "for `ctx.settings.scheduler == \"swarm\"`")


@pytest.mark.parametrize("provider", [FileRoutes, LabelRoutes, TaskFiles], ids=lambda c: c.__name__)
def test_each_route_provider_has_the_protocols_members(provider):
    for name, member in vars(RouteProvider).items():
        if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
            continue
        assert hasattr(provider, name), name
        if inspect.isfunction(member):
            assert parameters(getattr(provider, name)) == parameters(member), name


def test_each_scheduler_hands_out_its_route_provider(tmp_path):
    settings = Settings(data_dir=tmp_path, instance="x")
    routes = DockerScheduler(Engine([]), settings).routes
    assert isinstance(routes, FileRoutes)
    assert routes.providers == ("file",)  # a managed Traefik: route files alone
    external = Settings(data_dir=tmp_path, instance="x", traefik="external")
    assert DockerScheduler(Engine([]), external).routes.providers == ("docker",)
    assert TaskFiles(settings).providers == ("file",)

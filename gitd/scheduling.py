"""The one place that reads `settings.scheduler` (gitd.core.config checks
its value): which Scheduler (hooks.schedulers) runs the apps, and which
service runtime (gitd.services.runtime) runs the services beside them.

Everything else asks the scheduler what it can do (`has_nodes`,
`needs_registry`, ...): `scheduler_class(settings)` answers from the
settings alone, before any engine is reached; `build_scheduler` and
`build_runtime` make the working pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from gitd.core.config import Settings
from gitd.core.errors import GitdError
from gitd.services.runtime import ContainerRuntime, SwarmRuntime
from hooks.engine import Engine
from hooks.scheduler import DockerScheduler
from hooks.schedulers import Scheduler
from hooks.swarm import SwarmScheduler


@dataclass(frozen=True)
class Scheduling:
    scheduler: type
    build: Callable[[Engine, Settings, object], Scheduler]  # (engine, settings, store)
    runtime: Callable[[Engine, Settings, Scheduler], object]  # (engine, settings, scheduler)


SCHEDULING = {
    "docker": Scheduling(DockerScheduler,
                         lambda engine, settings, store: DockerScheduler(engine, settings),
                         lambda engine, settings, scheduler: ContainerRuntime(engine, settings)),
    # an app's tasks mounting its volumes run on the node holding them
    "swarm": Scheduling(SwarmScheduler,
                        lambda engine, settings, store: SwarmScheduler(
                            engine, settings, app_node=store.app_node),
                        SwarmRuntime),
}


def _scheduling(settings: Settings) -> Scheduling:
    try:
        return SCHEDULING[settings.scheduler]
    except KeyError:
        raise GitdError(f"setting scheduler must be one of {', '.join(SCHEDULING)}") from None


def scheduler_class(settings: Settings) -> type:
    """The scheduler the settings choose, unbuilt: its capabilities (class
    attributes of hooks.schedulers.Scheduler) need no engine."""
    return _scheduling(settings).scheduler


def build_scheduler(engine: Engine, settings: Settings, store) -> Scheduler:
    return _scheduling(settings).build(engine, settings, store)


def build_runtime(engine: Engine, settings: Settings, scheduler: Scheduler):
    """Where services run: containers on this host, or swarm services pinned
    to their volume's node (through the swarm scheduler's calls)."""
    return _scheduling(settings).runtime(engine, settings, scheduler)

"""The Scheduler Protocol: every call the rest of gitd makes on what runs
the apps, so nothing else asks which scheduler it has (Dokku's schedulers
each implement the full set of named triggers the same way).

Implemented by hooks.scheduler.DockerScheduler (containers on this host)
and hooks.swarm.SwarmScheduler (services on a Docker Swarm); the one
factory that picks one from the settings is gitd.scheduling.

Its own module, apart from hooks/scheduler.py: that is the docker
implementation and the helpers hooks.swarm imports from it; this one
imports neither, so any layer may name the Protocol without a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar, Protocol

if TYPE_CHECKING:
    from hooks.router import RouteProvider


class Scheduler(Protocol):
    # what it is and can do, known from the settings alone (no engine):
    # gitd.scheduling.scheduler_class(settings) answers before one is built
    kind: ClassVar[str]
    # several machines: nodes (nodes:*), a service or an app's volumes
    # placed on one (services:create --node, storage:mount)
    has_nodes: ClassVar[bool]
    # the nodes pull each release's image from a registry
    needs_registry: ClassVar[bool]
    # it restarts an unhealthy task itself (else hooks.health does)
    heals_itself: ClassVar[bool]
    # its routes are Traefik file-provider files that follow its tasks in
    # the background (follow_tasks), not the containers' labels
    routes_follow_tasks: ClassVar[bool]
    # seconds a removed unit may still hold its networks and volumes
    release_wait: ClassVar[float]

    @property
    def probes_deploys(self) -> bool:
        """Whether it probes a deploy's new web containers itself (so their
        Docker HEALTHCHECK need not run often: hooks.checks.web_healthcheck)."""

    @property
    def routes(self) -> RouteProvider:
        """How Traefik learns its deploys' routes (hooks.router.RouteProvider)."""

    # deploy (hooks.deploy, hooks.pipeline, hooks.volumes)

    def prepare(self, network: str, app: str) -> None: ...

    def start(self, specs: list[dict], progress) -> list: ...

    def wait_ready(self, unit, check, progress) -> None: ...

    def endpoints(self, unit, port: int) -> set[str]: ...

    def units(self, app: str | None = None, **labels) -> list: ...

    def tail_logs(self, unit, lines: int = 20) -> list[str]: ...

    def remove(self, units: list, timeout: int = 0) -> None: ...

    def run_task(self, spec: dict, on_line, timeout: float) -> tuple[int | None, bool]: ...

    # reconcile at start, and keeping routes true while gitd runs

    def reconcile(self, live: dict[str, int | None],
                  data_leftovers: Callable[[], list]) -> list[str]:
        """What a stop left behind, put right; returns notes."""

    def follow_tasks(self) -> None: ...

    # remove an app

    def remove_app(self, app: str, out) -> None:
        """What it runs for `app` beyond this host's containers, removed."""

    # placement: this machine as the scheduler names it

    @property
    def node_name(self) -> str: ...

    # the app commands: ps, logs, ps:stop, ps:start, run

    def dynos(self, app: str) -> list[dict]: ...

    def dynos_of(self, apps: list[str]) -> dict[str, list[dict]]: ...

    def log_lines(self, units: list, tail: int) -> list[str]: ...

    def follow_logs(self, app: str, units: list, tail: int, wanted, emit): ...

    def stop_units(self, units: list, timeout: int) -> int: ...

    def start_units(self, units: list) -> int: ...

    def oneoff(self, spec: dict, abandoned=None): ...

    # nodes:drain

    def take_out_of_routes(self, node_id: str, wait: float) -> int: ...

    def back_in_routes(self, node_id: str) -> None: ...

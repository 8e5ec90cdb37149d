"""The zero-downtime swap, as explicit states with one cleanup path.

What to run is plain data (`Target`, `container_specs`: hooks.specs) that
unit tests can compare; running it goes through the scheduler.

    start -> healthy -> routed -> live -> drained -> retired

A failure before `live` removes the new containers and never touches the
old ones, which keep serving. `deploy` returns at `live`: draining and
retiring the old containers goes on in the background (hooks.retire).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import structlog

from gitd.core.config import Settings
from gitd.core.errors import DeployError, GitdError
from hooks import checks, volumes
from hooks.engine import LABEL_PROCESS, LABEL_RELEASE, LABEL_ROLE, LABEL_SEQ, Engine
from hooks.retire import Retirements
from hooks.scheduler import DockerScheduler, confirm_routes, confirm_unrouted, unit_label
from hooks.specs import (Target, app_network, container_specs, describe_argv, is_web,
                         release_task_spec, volume_task_base)


log = structlog.get_logger("gitd.deploy")


class Deployer:
    """The swap's state machine. What runs the containers is `scheduler`
    (hooks.scheduler): local Docker, or Docker Swarm."""

    def __init__(self, engine: Engine, settings: Settings, retirements: Retirements | None = None,
                 scheduler=None):
        self.engine = engine
        self.settings = settings
        self.probe = checks.find_probe(settings.probe_binary)
        self.retirements = retirements or Retirements()
        self.scheduler = scheduler or DockerScheduler(engine, settings)

    def deploy(self, target, progress, on_live, on_retired=None) -> dict:
        """Run the swap up to `live`. `on_live()` records the new release as
        current; it is called once the new containers serve, before the old
        ones are touched. The old ones then drain and stop in the background,
        and `on_retired()` runs once they are gone (at once when there are
        none). Returns timings in seconds.

        `target` may be a list: the services of one release (app.json
        services), one seq. Every new container of every one is healthy and
        routed before `live`; any failure removes all of them."""
        targets = target if isinstance(target, list) else [target]
        first = targets[0]
        timings: dict[str, float] = {}
        started: dict[int, list] = {i: [] for i in range(len(targets))}
        everything = lambda: [u for group in started.values() for u in group]  # noqa: E731
        t0 = time.monotonic()
        self.scheduler.prepare(app_network(self.settings.instance, first.app), first.app)
        current = first
        try:
            self._prepare_storage(targets, progress)
            for current in targets:
                if current.release_command:
                    self._run_release_task(current, progress)
            gated = self.scheduler.probes_deploys
            specs = [container_specs(t, self.settings, self.probe, gated) for t in targets]
            progress.stage("start")
            for i, current in enumerate(targets):
                started[i] = self.scheduler.start([s for s in specs[i] if is_web(s)], progress)
            timings["start"] = time.monotonic() - t0
            progress.stage("healthy")
            for i, current in enumerate(targets):
                self._wait_ready(current, started[i], progress)
            # the other process types run the new code only once its web
            # containers passed their checks: a rejected release runs no work
            for i, current in enumerate(targets):
                others = [s for s in specs[i] if not is_web(s)]
                if others:
                    units = self.scheduler.start(others, progress)
                    started[i] += units
                    self._wait_ready(current, units, progress)
            timings["healthy"] = time.monotonic() - t0
            progress.stage("routed")
            for i, current in enumerate(targets):
                confirm_routes(self.scheduler, self.settings, current, started[i], progress)
            timings["routed"] = time.monotonic() - t0
        except GitdError as exc:
            self._report_failure(everything(), progress)
            self._remove(everything(), progress)
            if current.component:
                raise DeployError(f"service {current.component}: {exc}")
            raise DeployError(str(exc))
        except BaseException:
            self._remove(everything(), progress)
            raise
        progress.stage("live")
        on_live()
        timings["live"] = time.monotonic() - t0
        self._retire_in_background(first, progress, on_retired)
        return timings

    def _prepare_storage(self, targets: list, progress) -> None:
        """Give the release's volumes to the user its image runs as (one
        short task; hooks.volumes), before anything of it starts. Services
        of one app (app.json) share its volumes: running as two different
        non-root users they cannot both own them, and the deploy stops."""
        mounted = list({t.image: t for t in targets if t.mounts}.values())  # one per image
        if not mounted:
            return
        if not self.probe:
            raise DeployError("no static busybox to ready the app's storage (install "
                              "busybox-static, or set probe_binary); see `gitd doctor`")
        users = {t.image: volumes.image_user(self._image_user(t.image)) for t in mounted}
        owner_of = mounted[0]
        if len(mounted) > 1:
            owners = {t.image: self._owner_task(t, users[t.image], chown=False).owner
                      for t in mounted}
            writers = {o for o in owners.values() if not volumes.is_root(o)}
            if len(writers) > 1:
                raise DeployError("the app's services run as different users "
                                  f"({', '.join(sorted(writers))}) and share its storage: "
                                  "only one of them can own it; give their images one USER")
            owner_of = next((t for t in mounted if owners[t.image] in writers), owner_of)
        has_volumes = bool(volumes.volume_mounts(owner_of.mounts))
        report = self._owner_task(owner_of, users[owner_of.image], chown=has_volumes)
        for path, old, entries in report.changed:
            progress.line(f"storage at {path}: owner {old} -> {report.owner} "
                          f"(the image's USER {users[owner_of.image]})")
            if entries:
                progress.warn(f"storage at {path}: the {entries} entries already there keep "
                              "their owners")
        for warning in volumes.host_dir_warnings(owner_of.mounts, report.owner):
            progress.warn(warning)

    def _image_user(self, image: str) -> str:
        return (self.engine.image_attrs(image).get("Config") or {}).get("User") or ""

    def _owner_task(self, target: Target, run_as, chown: bool):
        spec = volumes.owner_task_spec(volume_task_base(target, self.settings), run_as,
                                       volumes.volume_mounts(target.mounts), self.probe, chown)
        return volumes.run_owner_task(self.scheduler, spec)

    def _run_release_task(self, target: Target, progress) -> None:
        progress.stage("release-task")
        progress.step(f"Running release command: {describe_argv(target.release_command)}")
        status, timed_out = self.scheduler.run_task(
            release_task_spec(target, self.settings), progress.line, target.release_timeout)
        if timed_out:
            raise DeployError(f"release command ran longer than {target.release_timeout:g}s "
                              "(release_timeout); nothing changed")
        if status != 0:
            raise DeployError(f"release command failed with status {status}; nothing changed")

    def _wait_ready(self, target: Target, started: list, progress) -> None:
        if target.check.disabled and any(u.labels.get(LABEL_PROCESS) == "web" for u in started):
            progress.warn("health checks are disabled: this deploy may drop requests")
        for unit in started:
            self.scheduler.wait_ready(unit, target.check, progress)

    def _report_failure(self, started: list, progress) -> None:
        for unit in started:
            lines = self.scheduler.tail_logs(unit, 20)
            if lines:
                progress.line(f"last log lines of {unit_label(unit)}:")
                for line in lines:
                    progress.line(f"  {line}")

    def old_containers(self, app: str, live_seq: int) -> list:
        """Service units of `app` that are not the live ones."""
        return [c for c in self.scheduler.units(app)
                if c.labels.get(LABEL_SEQ) != str(live_seq)
                and c.labels.get(LABEL_ROLE) == "service"]

    def _retire_in_background(self, target: Target, progress, on_retired=None) -> None:
        # listed after `live`: includes the containers of a retirement this
        # deploy takes over (still draining, they are drained again)
        old = self.old_containers(target.app, target.seq)
        if not old:
            if on_retired:
                on_retired()
            return
        self.retire_later(target.app, old, target.drain, target.stop_timeout, on_retired)
        versions = sorted({c.labels.get(LABEL_RELEASE, "?") for c in old},
                          key=lambda v: int(v) if v.isdigit() else 0)
        progress.stage("drain")
        progress.step(f"Retiring {', '.join('v' + v for v in versions)} in the background "
                      f"(drain {_drain_of(old, target.drain):g}s)")

    def retire_later(self, app: str, old: list, drain: float, stop_timeout: int, then=None):
        """Drain (web containers only) then stop `old` in the background;
        then `then()`, unless a later deploy took the retirement over."""
        def stop(containers):
            self.retire(containers, stop_timeout)
            if then:
                then()
        return self.retirements.start(app, old, _drain_of(old, drain), stop)

    def retire(self, units: list, timeout: int) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; in parallel."""
        if not units:
            return
        def stop(unit):
            try:
                self.scheduler.remove([unit], timeout=timeout)
            except Exception as exc:  # the others still stop; a restart retires this one
                log.warning("cannot stop an old container", container=unit.name, error=str(exc))

        with ThreadPoolExecutor(max_workers=min(8, len(units))) as pool:
            list(pool.map(stop, units))

    def _remove(self, units: list, progress) -> None:
        self.scheduler.remove(units)
        confirm_unrouted(self.scheduler, self.settings, units, progress)


def _drain_of(containers: list, drain: float) -> float:
    """Only web containers get traffic to drain."""
    if any(c.labels.get(LABEL_PROCESS) == "web" for c in containers):
        return max(0.0, drain)
    return 0.0

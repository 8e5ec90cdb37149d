"""Preview apps (issue #25): a pushed branch beside the deploy branch deploys
as an app of its own, `APP--<branch>`, made and deployed by the same code as
every app (Gitd.create_app, the pipeline's push); a pushed deletion of the
branch, previews:destroy, the parent's destruction or its TTL's passing
removes it with Gitd.destroy_app. The reaper is one thread in the daemon.

Locks: a push (or a forge's pull request event) holds the parent's lock,
then takes the preview's; the reaper takes the parent's (never waiting)
then the preview's: one order.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import replace

import structlog

from gitd.core import notify
from gitd.core import previews as rules
from gitd.core.errors import GitdError
from hooks.specs import release_task_spec

log = structlog.get_logger("gitd.previews")


class Previews:
    def __init__(self, gitd):
        self.gitd = gitd
        self._queued: dict[str, collections.deque] = {}  # app -> jobs not yet run
        self._guard = threading.Lock()

    @property
    def store(self):
        return self.gitd.store

    def later(self, parent: str, job) -> None:
        """Run `job(sink)` on a thread, after the parent's jobs queued
        before it (a forge's events, in the order they came)."""
        with self._guard:
            if parent in self._queued:
                self._queued[parent].append(job)
                return
            self._queued[parent] = collections.deque([job])
        threading.Thread(target=self._run_queue, args=(parent,), daemon=True,
                         name=f"gitd-previews-{parent}").start()

    def _run_queue(self, parent: str) -> None:
        while True:
            with self._guard:
                if not self._queued[parent]:
                    del self._queued[parent]
                    return
                job = self._queued[parent].popleft()
            try:
                job(lambda line: log.info("preview", app=parent, line=line))
            except Exception as exc:  # noqa: BLE001 - the next job runs all the same
                log.warning("preview job failed", app=parent, error=str(exc))

    def idle(self) -> bool:
        with self._guard:
            return not self._queued

    def policy(self, parent: str) -> dict | None:
        """The parent's rules, from its settings and its live release's
        app.json (the deploy branch's: a branch cannot loosen them)."""
        current = self.store.current_release(parent)
        return rules.policy(self.store.get_app(parent).settings,
                            current.app_json if current else None)

    def push(self, parent: str, branch: str, repo, commit: bytes, pushed_by: str | None,
             sink) -> str | None:
        """Deploy `branch` as its preview; the caller holds the parent's
        lock. The preview's name, or None when the parent has previews off."""
        policy = self.policy(parent)
        if policy is None:
            return None
        name, made = self._preview_for(parent, branch, policy, sink)
        try:
            if made and policy["services"] == "fresh":
                self._fresh_services(parent, name, sink)
            self._configure(parent, name, policy)
            with self.gitd.app_lock(name, notify=sink):
                release = self.gitd.pipeline.push(name, repo, commit, pushed_by, sink)
                if made and policy["services"] == "fresh":
                    self._postdeploy(release, sink)
        except BaseException:
            if made:  # a first deploy that failed leaves nothing behind
                self.destroy(name, sink, announce=False)
            raise
        self.store.preview_updated(name, commit.decode())
        if made:
            notify.emit(parent, "preview.created", preview=name, branch=branch)
        return name

    def _fresh_services(self, parent: str, name: str, sink) -> None:
        """An empty service of each kind the parent links, linked under the
        same config var; recorded as each is made (the preview's removal
        removes them)."""
        made = []
        for service, var in sorted(self.store.links_of_app(parent).items()):
            svc = self.store.get_service(service)
            own = rules.fresh_service_name(name, service)
            sink(f"-----> Creating {svc.kind} {own} for {name} ({var})")
            with self.gitd.locks.hold(f"service:{own}", self.gitd.settings.lock_wait):
                self.gitd.services.create(svc.kind, own, svc.version, sink, node=svc.node)
            made.append(own)
            self.store.update_app_settings(name, fresh_services=made)
            self.store.add_link(own, name, var)

    def _postdeploy(self, release, sink) -> None:
        """app.json's scripts.postdeploy, once, in a task of the new release
        (as its release command runs): a failure fails the first deploy."""
        script = rules.postdeploy(release.app_json)
        if script is None:
            return
        pipeline = self.gitd.pipeline
        target = replace(pipeline.target(release, self.store.get_app(release.app).live_seq),
                         release_command=["/bin/sh", "-c", script])
        sink(f"-----> Running scripts.postdeploy: {script[:200]}")
        status, timed_out = pipeline.deployer.scheduler.run_task(
            release_task_spec(target, self.gitd.settings), sink, self.gitd.settings.release_timeout)
        if timed_out or status != 0:
            raise GitdError("scripts.postdeploy " + (
                f"ran longer than {self.gitd.settings.release_timeout:g}s (release_timeout)"
                if timed_out else f"exited with status {status}"))

    def _preview_for(self, parent: str, branch: str, policy: dict, sink) -> tuple[str, bool]:
        """The branch's preview app, made when it has none: (name, made now)."""
        found = self.store.preview_of_branch(parent, branch)
        if found:
            return found.name, False
        name = rules.name_of(parent, branch)
        holder = self.store.preview(name)
        if holder is not None or self.store.app_exists(name):
            other = holder.branch if holder else None
            raise GitdError(f"branch {rules.shown(branch)} would be the preview {name}, which "
                            + (f"branch {rules.shown(other)} has already" if other else
                               "is taken") + "; rename the branch")
        count = len(self.store.previews(parent))
        if count >= policy["max"]:
            raise GitdError(f"{parent} has {count} previews, its most (previews:enable "
                            f"{parent} --max N); remove one first: previews:destroy {parent} BRANCH")
        sink(f"-----> Creating preview app {name} for branch {branch}")
        self.gitd.create_app(name)
        try:
            self.store.add_preview(name, parent, branch)
        except BaseException:
            self.gitd.destroy_app(name, lambda line: None)
            raise
        return name, True

    def _configure(self, parent: str, name: str, policy: dict) -> None:
        """The parent's config (minus exclude, plus env), services, build
        dir and bounded resources: set again at each push."""
        config = rules.config_of(self.store.get_config(parent), policy)
        if policy["services"] == "shared":
            self._share_services(parent, name, policy)
        for service, var in self.store.links_of_app(name).items():
            config[var] = self.gitd.services.url(self.store.get_service(service))
        stale = [k for k in self.store.get_config(name) if k not in config]
        self.store.set_config(name, config, unset=stale)
        parent_settings = self.store.get_app(parent).settings
        self.store.update_app_settings(
            name, build_dir=parent_settings.get("build_dir") or None,
            resources=rules.bounded_resources(self.gitd.settings, parent_settings) or None)

    def _share_services(self, parent: str, name: str, policy: dict) -> None:
        """Linked to the parent's services whose vars it keeps (its
        containers join their networks), to no others."""
        wanted = {service: var for service, var in self.store.links_of_app(parent).items()
                  if var not in policy["exclude"] and var not in policy["env"]}
        for service, var in self.store.links_of_app(name).items():
            if wanted.get(service) != var:
                self.store.remove_link(service, name)
        for service, var in wanted.items():
            if service not in self.store.links_of_app(name):
                self.store.add_link(service, name, var)

    def fresh_of(self, name: str) -> list[str]:
        """The services made for the preview `name` alone."""
        found = self.store.get_app(name).settings.get("fresh_services") or []
        return [s for s in found if self.store.service_exists(s)]

    def remove_fresh(self, services: list[str], sink) -> None:
        """A preview's own services, once it is gone: no final backup (they
        held a preview's data)."""
        for service in services:
            with self.gitd.locks.hold(f"service:{service}", self.gitd.settings.lock_wait):
                svc = self.store.get_service(service)
                self.gitd.services.runtime.unmake(svc, sink)
                self.store.delete_service(service)
            sink(f"removed its {svc.kind} {service}")

    def remove_branch(self, parent: str, branch: str, sink) -> str | None:
        """The pushed deletion of a branch: its preview goes. Its name, or None."""
        found = self.store.preview_of_branch(parent, branch)
        if found is None:
            return None
        self.destroy(found.name, sink)
        return found.name

    def destroy(self, name: str, sink, announce: bool = True) -> None:
        """The preview goes; `announce`: tell its parent's notifications
        (not for a preview whose first deploy failed: it never was)."""
        preview = self.store.preview(name)
        sink(f"-----> Removing preview app {name}")
        self.gitd.destroy_app(name, sink)
        if announce and preview is not None:
            notify.emit(preview.parent, "preview.removed", preview=name, branch=preview.branch)

    def destroy_all(self, parent: str, sink) -> list[str]:
        """Before the parent goes."""
        names = [p.name for p in self.store.previews(parent)]
        for name in names:
            self.destroy(name, sink)
        return names

    def reap(self, now: float) -> list[str]:
        """Previews idle (no push) past their parent's TTL, or whose parent
        turned previews off, are removed; a parent busy deploying is left
        for the next look."""
        reaped = []
        for preview in self.store.previews():
            try:
                with self.gitd.locks.hold(preview.parent, 0):
                    if self._expired(preview.name, now):
                        self.destroy(preview.name, lambda line: None)
                        reaped.append(preview.name)
            except GitdError as exc:
                log.info("preview not reaped now", preview=preview.name, reason=str(exc))
        if reaped:
            log.info("previews reaped", previews=reaped)
        return reaped

    def _expired(self, name: str, now: float) -> bool:
        """Asked again under the parent's lock: a push may have just renewed it."""
        preview = self.store.preview(name)
        if preview is None:
            return False
        if not self.store.app_exists(preview.parent):
            return True  # left by a destruction of its parent cut short
        policy = self.policy(preview.parent)
        return policy is None or now - preview.updated_at > policy["ttl"]


class Reaper:
    """One thread: looks for expired previews every `interval` seconds."""

    def __init__(self, previews: Previews, interval: float):
        self.previews = previews
        self.interval = interval
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, daemon=True, name="preview-reaper").start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.previews.reap(time.time())
            except Exception:  # noqa: BLE001 - the reaper must outlive one bad look
                log.exception("preview reaper")

"""Cron runs."""

from __future__ import annotations

import time

from gitd.core.errors import Conflict
from gitd.core.store.records import CRON_RUNS_KEPT, CronRun, _cron_run, now


class CronRecords:
    """Part of Store."""

    # cron (issue #25)

    def cron_since(self, app: str, job: str) -> float | None:
        with self._lock:
            rows = list(self.db["cron_state"].rows_where("app = ? AND job = ?", [app, job]))
        return rows[0]["since"] if rows else None

    def set_cron_since(self, app: str, job: str, since: float) -> None:
        with self._tx() as db:
            db["cron_state"].upsert({"app": app, "job": job, "since": since}, pk=("app", "job"))

    def start_cron_run(self, app: str, job: str, trigger: str, release: int | None) -> CronRun:
        """A run of the job, `running`; or, while another run of it is still
        running, a `skipped` one (a scheduled run) or Conflict (asked for)."""
        row = {"app": app, "job": job, "trigger": trigger, "status": "running", "exit_code": None,
               "release": release, "started_at": now(), "finished_at": None, "output": ""}
        with self._tx() as db:
            running = list(db["cron_runs"].rows_where(
                "app = ? AND job = ? AND status = 'running'", [app, job], limit=1))
            if running and trigger == "manual":
                raise Conflict(f"cron job {job} of {app} is running (since "
                               f"{time.strftime('%H:%M:%S', time.gmtime(running[0]['started_at']))}"
                               " UTC): wait for it to end")
            if running:
                row.update(status="skipped", finished_at=row["started_at"],
                           output=f"skipped: run {running[0]['id']} was still running\n")
            row["id"] = db["cron_runs"].insert(row).last_pk
            _trim_cron_runs(db, app, job)
        return _cron_run(row)

    def finish_cron_run(self, run_id: int, status: str, exit_code: int | None,
                        output: str) -> CronRun | None:
        """The run, ended; None when it is gone (its app was destroyed meanwhile)."""
        with self._tx() as db:
            rows = list(db["cron_runs"].rows_where("id = ?", [run_id]))
            if not rows:
                return None
            row = {**rows[0], "status": status, "exit_code": exit_code, "output": output,
                   "finished_at": now()}
            db["cron_runs"].update(run_id, row)
            _trim_cron_runs(db, row["app"], row["job"])
        return _cron_run(row)

    def live_app_jsons(self) -> list[tuple[str, int, str | None]]:
        """(app, live release version, its app.json) of every app with one:
        what the cron runner looks at each tick, without the releases' logs."""
        with self._lock:
            return [tuple(row) for row in self.db.execute(
                "SELECT a.name, r.version, r.app_json FROM apps a JOIN releases r "
                "ON r.app = a.name AND r.version = a.current_release ORDER BY a.name")]

    def forget_cron_jobs(self, app: str, keep: list[str]) -> None:
        """Jobs the live release no longer has lose their schedule's state: one
        that comes back (a rollback) counts from then, as a new one."""
        with self._lock:
            known = {r["job"] for r in self.db["cron_state"].rows_where("app = ?", [app])}
        for job in known - set(keep):  # rarely any: no write on most looks
            with self._tx() as db:
                db["cron_state"].delete_where("app = ? AND job = ?", [app, job])

    def cron_runs(self, app: str, job: str | None = None, limit: int = 20) -> list[CronRun]:
        """The app's (or one job's) runs, newest first."""
        where, args = ("app = ? AND job = ?", [app, job]) if job else ("app = ?", [app])
        with self._lock:
            return [_cron_run(r) for r in self.db["cron_runs"].rows_where(
                where, args, order_by="id desc", limit=limit)]

    def last_cron_runs(self, app: str) -> dict[str, CronRun]:
        """Each job's newest run that ran (not a skipped one)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT * FROM cron_runs WHERE id IN (SELECT max(id) FROM cron_runs "
                "WHERE app = ? AND status != 'skipped' GROUP BY job)", [app])
            columns = [c[0] for c in rows.description]
            return {r["job"]: _cron_run(r) for r in (dict(zip(columns, v)) for v in rows)}

    def end_unfinished_cron_runs(self, note: str) -> int:
        """At start: runs still `running` were cut short by gitd's stop."""
        with self._tx() as db:
            cursor = db.execute("UPDATE cron_runs SET status = 'failed', finished_at = ?, "
                                "output = output || ? WHERE status = 'running'", [now(), note])
            return cursor.rowcount


def _trim_cron_runs(db, app: str, job: str) -> None:
    """The job's newest CRON_RUNS_KEPT runs are kept (and any still running)."""
    db.execute("DELETE FROM cron_runs WHERE app = ? AND job = ? AND status != 'running' AND id NOT IN "
               "(SELECT id FROM cron_runs WHERE app = ? AND job = ? ORDER BY id DESC LIMIT ?)",
               [app, job, app, job, CRON_RUNS_KEPT])

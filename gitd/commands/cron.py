"""cron, cron:run, cron:logs: the SSH face of gitd.verbs.cron."""

from __future__ import annotations

from gitd.commands.base import app_parser, command, print_rows
from gitd.verbs import cron


@command("cron", "cron APP [--json]",
         "List an app's cron jobs with their last and next runs", admin=False, help="""
Jobs come from the live release's app.json, Dokku's format:
    "cron": [{"command": "python3 manage.py clear", "schedule": "*/15 * * * *"}]
A schedule is five fields (minute hour day month weekday, UTC) or @hourly,
@daily, @weekly, @monthly, @yearly. Optional per job: "id" (else one derived
from the schedule and command), "timeout" in seconds (else the cron_timeout
setting), "service" (an app.json service to run in). Each run is a one-off
container of the live release, like `run`; a run still going when the job is
due again makes that run skipped. A rollback brings back the old jobs.""")
def list_jobs(ctx, argv):
    args = app_parser("cron", json_flag=True).parse_args(argv)
    jobs = cron.list_jobs(ctx, args.app)
    if args.json:
        ctx.json(jobs)
        return
    if not jobs:
        ctx.out(f"{args.app} has no cron jobs (app.json \"cron\" of its live release)")
        return
    ctx.out(f"=== {args.app} cron jobs")
    print_rows(ctx, [["ID", "SCHEDULE", "LAST RUN", "STATUS", "DURATION", "NEXT RUN", "COMMAND"]]
               + [[job["id"], job["schedule"], *_last(job["last_run"]), job["next_run_at"] or "-",
                   _short(job["command"])] for job in jobs])


def _last(run: dict | None) -> list[str]:
    if run is None:
        return ["-", "-", "-"]
    status = run["status"]
    if run["exit_code"] is not None and status != "succeeded":
        status += f" ({run['exit_code']})"
    duration = f"{run['duration']:.1f}s" if run["duration"] is not None else "-"
    return [run["started_at"], status, duration]


def _short(text: str, width: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


@command("cron:run", "cron:run APP ID", "Run a cron job now, its output as it comes",
         admin=False, help="""
Runs as a scheduled run does (recorded, shown by cron and cron:logs) and
exits with the job's exit status. Refused while a run of the job is going.
A client that hangs up leaves the run going to its end (or its timeout).""")
def run_now(ctx, argv):
    p = app_parser("cron:run")
    p.add_argument("id")
    args = p.parse_args(argv)
    run = cron.run_now(ctx, args.app, args.id, on_wait=ctx.err)  # stdout: the job's output alone
    ctx.err(f"-----> cron job {run['job']} of {args.app}: {run['status']}"
            + (f" (exit {run['exit_code']})" if run["exit_code"] is not None else "")
            + (f" in {run['duration']:.1f}s" if run["duration"] is not None else ""))
    return 0 if run["status"] == "succeeded" else (run["exit_code"] or 1)


@command("cron:logs", "cron:logs APP ID [--json]", "Print the output of a cron job's last run",
         admin=False, help="""
The last lines of the run's output (at most 200 lines, 16 KiB), after a
header with its status, exit code and times.""")
def logs(ctx, argv):
    p = app_parser("cron:logs", json_flag=True)
    p.add_argument("id")
    args = p.parse_args(argv)
    run = cron.logs(ctx, args.app, args.id)
    if args.json:
        ctx.json(run)
        return
    ctx.out(f"=== {args.app} cron job {run['job']}: run {run['id']} ({run['trigger']}) "
            f"{run['status']}" + (f", exit {run['exit_code']}" if run["exit_code"] is not None else "")
            + f", started {run['started_at']}, finished {run['finished_at'] or '-'}")
    ctx.out(run["output"].rstrip("\n"))

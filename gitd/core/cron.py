"""Five-field cron expressions (minute hour day-of-month month day-of-week),
in UTC: `*`, numbers, `a-b` ranges, `*/n` and `a-b/n` steps, comma lists,
month and weekday names, and the nicknames @hourly, @daily (@midnight),
@weekly, @monthly, @yearly (@annually). Day-of-month and day-of-week, when
both are restricted, match either (as in Vixie cron). Used by service
backups and by app.json's `cron` jobs (`jobs` below).

Written here rather than taken from croniter: about eighty lines with their
tests cover what backup schedules need, and croniter's maintenance changed
hands in 2025; a scheduler that silently stops is what users complain of.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from gitd.core.errors import UsageError

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
          ("day of week", 0, 7))
MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
DAYS = {d.lower(): (i + 1) % 7 for i, d in enumerate(calendar.day_abbr)}  # sun = 0
MAX_TEXT = 100
NICKNAMES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
             "@annually": "0 0 1 1 *"}
HORIZON_DAYS = 366 * 5  # Feb 29 on a Monday comes around within this


@dataclass(frozen=True)
class Schedule:
    text: str
    minutes: frozenset
    hours: frozenset
    days: frozenset
    months: frozenset
    weekdays: frozenset
    any_day: bool  # day of month is *
    any_weekday: bool

    def day_matches(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def next_after(self, ts: float) -> float:
        """The first matching minute strictly after `ts` (a UNIX time)."""
        t = datetime.fromtimestamp(ts, timezone.utc).replace(second=0, microsecond=0)
        t += timedelta(minutes=1)
        end = t + timedelta(days=HORIZON_DAYS)
        while t < end:
            if t.month not in self.months or not self.day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t.timestamp()
        raise UsageError(f"cron {self.text!r} never matches")


def parse(text: str) -> Schedule:
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise UsageError("invalid cron expression: too long")
    if text.strip().startswith("@"):
        nickname = text.strip().lower()
        if nickname not in NICKNAMES:
            raise UsageError(f"invalid cron expression {text!r}: the nicknames are "
                             f"{', '.join(NICKNAMES)} (@reboot is not one gitd runs)")
        return replace(parse(NICKNAMES[nickname]), text=nickname)
    parts = text.split()
    if len(parts) != 5:
        raise UsageError(f"invalid cron expression {text!r}: expected 5 fields "
                         "(minute hour day month weekday), e.g. \"0 3 * * *\"")
    names = (None, None, None, MONTHS, DAYS)
    sets = [_field(part, spec, table) for part, spec, table in zip(parts, FIELDS, names)]
    weekdays = frozenset(d % 7 for d in sets[4])
    schedule = Schedule(" ".join(parts), *map(frozenset, sets[:4]), weekdays,
                        any_day=parts[2] == "*", any_weekday=parts[4] == "*")
    schedule.next_after(0)  # "0 0 31 2 *" and the like never fire: refuse them now
    return schedule


def _field(text: str, spec, names) -> set[int]:
    what, low, high = spec
    values: set[int] = set()
    for item in text.split(","):
        match = re.fullmatch(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?", item.lower())
        if not match:
            raise UsageError(f"invalid cron {what} {text!r}")
        span, step = match.group(1), match.group(2)
        if span == "*":
            start, stop = low, high
        else:
            a, _, b = span.partition("-")
            start = _number(a, what, low, high, names)
            stop = _number(b, what, low, high, names) if b else (high if step else start)
        step_n = int(step) if step else 1
        if step_n < 1 or step_n > high or start > stop:
            raise UsageError(f"invalid cron {what} {text!r}")
        values.update(range(start, stop + 1, step_n))
    return values


def _number(text: str, what: str, low: int, high: int, names) -> int:
    if names and text in names:
        return names[text]
    if not text.isdigit() or len(text) > 2 or not low <= int(text) <= high:
        raise UsageError(f"invalid cron {what} {text!r}: from {low} to {high}")
    return int(text)


# app.json's `cron`: [{"command": "...", "schedule": "*/15 * * * *"}, ...] (Dokku's
# format), with an optional "id", "timeout" (seconds) and "service" each

MAX_JOBS = 20
MAX_COMMAND_BYTES = 4096
MAX_TIMEOUT = 86400
JOB_KEYS = ("command", "schedule", "id", "timeout", "service")
JOB_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")


@dataclass(frozen=True)
class Job:
    id: str
    command: str
    schedule: Schedule
    timeout: float | None = None  # None: the cron_timeout setting
    service: str = ""  # an app.json service's name, for apps that declare services


def jobs(app_json: str | None) -> list[Job]:
    """The cron jobs app.json declares ([] without a `cron` key); a job
    without an "id" gets one derived from its schedule and command, so the
    same job keeps its id (and its history) across releases."""
    if not app_json:
        return []
    try:
        data = json.loads(app_json)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"app.json is not valid JSON: {str(exc)[:200]}")
    if not isinstance(data, dict) or "cron" not in data:
        return []
    section = data["cron"]
    if not isinstance(section, list):
        raise UsageError("app.json cron must be a list of {\"command\": ..., \"schedule\": ...}")
    if len(section) > MAX_JOBS:
        raise UsageError(f"app.json declares {len(section)} cron jobs; at most {MAX_JOBS}")
    found = [_job(i, entry) for i, entry in enumerate(section)]
    ids = [job.id for job in found]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise UsageError(f"app.json cron repeats the job id {repeated[0]!r}: give each job "
                         "its own \"id\" (or another command or schedule)")
    return found


def _job(index: int, entry) -> Job:
    where = f"app.json cron[{index}]"
    if not isinstance(entry, dict):
        raise UsageError(f"{where} must be an object with \"command\" and \"schedule\"")
    unknown = [str(k)[:40] for k in entry if k not in JOB_KEYS]
    if unknown:
        raise UsageError(f"{where} has the unknown key {unknown[0]!r} (known: {', '.join(JOB_KEYS)})")
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip() or "\0" in command:
        raise UsageError(f"{where}.command must be a non-empty string (a shell command line)")
    if len(command.encode("utf-8", "surrogateescape")) > MAX_COMMAND_BYTES:
        raise UsageError(f"{where}.command is longer than {MAX_COMMAND_BYTES} bytes")
    if not isinstance(entry.get("schedule"), str):
        raise UsageError(f"{where}.schedule must be a cron expression such as \"*/15 * * * *\"")
    try:
        schedule = parse(entry["schedule"])
    except UsageError as exc:
        raise UsageError(f"{where}.schedule: {exc.message}")
    return Job(_job_id(where, entry, schedule, command), command, schedule,
               _timeout(where, entry.get("timeout")), _service(where, entry.get("service", "")))


def _job_id(where: str, entry: dict, schedule: Schedule, command: str) -> str:
    if "id" not in entry:
        digest = hashlib.sha256(f"{schedule.text}\0{command}".encode("utf-8", "surrogateescape"))
        return "cron-" + digest.hexdigest()[:10]
    job_id = entry["id"]
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise UsageError(f"{where}.id must be lowercase letters, digits and dashes, "
                         "at most 40 characters")
    return job_id


def _timeout(where: str, value) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 1 <= value <= MAX_TIMEOUT):
        raise UsageError(f"{where}.timeout must be seconds from 1 to {MAX_TIMEOUT}")
    return float(value)


def _service(where: str, value) -> str:
    if not isinstance(value, str) or (value and not re.fullmatch(r"[a-z][a-z0-9-]{0,29}", value)):
        raise UsageError(f"{where}.service must name one of app.json's services")
    return value


def checked_jobs(app_json: str | None, services: list[str]) -> list[Job]:
    """jobs(), each naming one of the app's `services` when it has any, and
    none when it has not: what a push is refused for, before anything is built."""
    found = jobs(app_json)
    for job in found:
        if services and job.service not in services:
            raise UsageError(f"cron job {job.id}: app.json declares services, so name the one it "
                             f"runs in with \"service\" ({', '.join(services)})")
        if not services and job.service:
            raise UsageError(f"cron job {job.id}: \"service\" {job.service!r} names no app.json "
                             "service (app.json declares none)")
    return found


def check_job_id(text: str) -> str:
    """A job id as a command names it."""
    if not isinstance(text, str) or not JOB_ID.fullmatch(text):
        raise UsageError(f"invalid cron job id {str(text)[:40]!r}")
    return text

"""Five-field cron expressions (minute hour day-of-month month day-of-week),
in UTC: `*`, numbers, `a-b` ranges, `*/n` and `a-b/n` steps, comma lists,
month and weekday names. Day-of-month and day-of-week, when both are
restricted, match either (as in Vixie cron).

Written here rather than taken from croniter: about eighty lines with their
tests cover what backup schedules need, and croniter's maintenance changed
hands in 2025; a scheduler that silently stops is what users complain of.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from gitd.core.errors import UsageError

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
          ("day of week", 0, 7))
MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
DAYS = {d.lower(): (i + 1) % 7 for i, d in enumerate(calendar.day_abbr)}  # sun = 0
MAX_TEXT = 100
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

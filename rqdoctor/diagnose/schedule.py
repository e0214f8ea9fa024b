"""Frappe scheduler arithmetic: a site's clock, a Scheduled Job Type's cron, its next and previous due times.

Frappe stores ``last_execution`` naive in the site's System Settings time zone and calls a type due when
``croniter(cron, last_execution).get_next() <= now_datetime()`` (``scheduled_job_type.py``); the same here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rqdoctor.model import HealthState, ScheduledJobTypeRow, SiteScheduler

CRON_MAP = {
    "Yearly": "0 0 1 1 *", "Annual": "0 0 1 1 *", "Monthly": "0 0 1 * *", "Monthly Long": "0 0 1 * *",
    "Weekly": "0 0 * * 0", "Weekly Long": "0 0 * * 0", "Daily": "0 0 * * *", "Daily Long": "0 0 * * *",
    "Hourly": "0 * * * *", "Hourly Long": "0 * * * *",
}
"""Frappe's frequencies as cron (``All`` depends on ``scheduler_interval``; ``Cron`` carries its own)."""
SKIP_TICKS = 30
"""A due time missed by more than this many scheduler ticks is called skipped (Frappe's System Health Report
uses the same 30 ticks for its "oldest unscheduled job")."""


def site_now(site: SiteScheduler, at: float) -> dt.datetime | None:
    """The site's wall clock (naive) at epoch ``at``: in its time zone, else the database's ``NOW()`` as read."""
    if site.time_zone:
        try:
            return dt.datetime.fromtimestamp(at, ZoneInfo(site.time_zone)).replace(tzinfo=None)
        except (ZoneInfoNotFoundError, ValueError, KeyError):
            pass
    return parse(site.db_now)


def parse(value: str | None) -> dt.datetime | None:
    """A stored naive datetime (``2026-12-01 10:00:00.123456``), or None."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None


def cron_of(row: ScheduledJobTypeRow, health: HealthState) -> str | None:
    """The cron expression Frappe uses for a type (None: unknown frequency)."""
    if row.cron_format:
        return row.cron_format
    if row.frequency == "All":
        return f"*/{max(health.all_interval_s // 60, 1)} * * * *"
    return CRON_MAP.get(row.frequency)


@dataclass(frozen=True)
class Due:
    """When a type is due next, after its last run, and by how much it is late (seconds, 0 when not yet due)."""

    cron: str
    last: dt.datetime | None
    next_due: dt.datetime
    late_s: float


def due(row: ScheduledJobTypeRow, health: HealthState, now: dt.datetime) -> Due | None:
    """The due time after ``last_execution`` (after ``now`` when it never ran); None when it cannot be computed."""
    from croniter import CroniterError, croniter  # imported when used: it costs every command ~80 ms

    cron = cron_of(row, health)
    if cron is None:
        return None
    last = parse(row.last_execution)
    try:
        nxt = croniter(cron, last or now).get_next(dt.datetime)
    except (CroniterError, ValueError, KeyError):
        return None
    late = (now - nxt).total_seconds() if last is not None else 0.0
    return Due(cron, last, nxt, max(late, 0.0))


def skip_limit_s(health: HealthState) -> int:
    """How late a due run must be to be called skipped."""
    return SKIP_TICKS * health.tick_s

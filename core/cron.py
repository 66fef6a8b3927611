"""Cron expressions: the usual 5 fields, or 6 with seconds first (for sub-minute jobs)."""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger


def cron_trigger(expr: str, timezone: str = "UTC") -> CronTrigger:
    """A trigger for `expr`; ValueError names what is wrong."""
    fields = expr.split()
    if len(fields) == 5:
        return CronTrigger.from_crontab(expr, timezone=timezone)
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(
            second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone=timezone
        )
    raise ValueError(f"{expr!r} is not a cron expression (5 fields, or 6 with seconds first)")

"""Scheduled jobs: reconciliations on cron triggers from the configuration.

APScheduler with a persistent SQLite job store under the data dir; one instance per job at a
time (no overlapping runs of one reconciliation) and misfires coalesced into one run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from coexist.config import ConfigError, Settings
from coexist.cron import cron_trigger

log = logging.getLogger("coexist.scheduler")


def build_scheduler(settings: Settings) -> BackgroundScheduler:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SQLAlchemyJobStore(url=f"sqlite:///{settings.data_dir.resolve() / 'scheduler.sqlite'}")
    return BackgroundScheduler(
        jobstores={"default": store},
        job_defaults={"coalesce": True, "max_instances": 1,
                      "misfire_grace_time": settings.scheduler.misfire_grace_seconds},
        timezone=settings.scheduler.timezone,
    )


def register_reconciliations(scheduler: BackgroundScheduler, settings: Settings,
                             func: Callable[..., Any] | str) -> list[str]:
    """One cron job per reconciliation with a schedule; jobs no longer configured are removed."""
    overrides = settings.scheduler.schedules
    rules = settings.all_reconciliations()
    unknown = sorted(set(overrides) - set(rules))
    if unknown:
        raise ConfigError(f"scheduler.schedules.{unknown[0]}: no such reconciliation; configured: {', '.join(rules)}")
    wanted = {f"reconcile:{name}": cron for name, rule in rules.items()
              if (cron := overrides.get(name, rule.schedule))}
    for job in scheduler.get_jobs():
        if job.id.startswith("reconcile:") and job.id not in wanted:
            job.remove()
    for job_id, cron in wanted.items():
        scheduler.add_job(func, cron_trigger(cron, settings.scheduler.timezone),
                          id=job_id, name=job_id, args=[job_id.split(":", 1)[1]], replace_existing=True)
    return sorted(wanted)


def list_jobs(settings: Settings) -> list[dict[str, Any]]:
    scheduler = build_scheduler(settings)
    scheduler.start(paused=True)
    try:
        register_reconciliations(scheduler, settings, "coexist.jobs:run_reconciliation")
        return [{"id": job.id, "trigger": str(job.trigger),
                 "next_run": job.next_run_time.isoformat() if job.next_run_time else None}
                for job in scheduler.get_jobs()]
    finally:
        scheduler.shutdown(wait=False)

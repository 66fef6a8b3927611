"""Scheduled jobs: reconciliations on their cron triggers, and the service's own jobs.

APScheduler with a persistent SQLite job store under the data dir; one instance per job at a
time (no overlapping runs of one reconciliation) and misfires coalesced into one run.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from coexist.config import Settings
from core.cron import cron_trigger
from core.errors import ConfigError

log = logging.getLogger("coexist.scheduler")

JOBS = "coexist.service.jobs"


@dataclass(frozen=True)
class JobSpec:
    id: str
    func: str
    schedule: str
    trigger: BaseTrigger
    args: tuple[Any, ...] = ()


def build_scheduler(settings: Settings) -> BackgroundScheduler:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SQLAlchemyJobStore(url=f"sqlite:///{settings.data_dir.resolve() / 'scheduler.sqlite'}")
    return BackgroundScheduler(
        jobstores={"default": store},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.scheduler.misfire_grace_seconds,
        },
        timezone=settings.scheduler.timezone,
    )


def reconciliation_jobs(settings: Settings) -> list[JobSpec]:
    """One cron job per reconciliation with a schedule (`scheduler.schedules` overrides a rule's own)."""
    overrides = settings.scheduler.schedules
    rules = settings.all_reconciliations()
    unknown = sorted(set(overrides) - set(rules))
    if unknown:
        raise ConfigError(f"scheduler.schedules.{unknown[0]}: no such reconciliation; configured: {', '.join(rules)}")
    tz = settings.scheduler.timezone
    return [
        JobSpec(f"reconcile:{name}", f"{JOBS}:run_reconciliation", cron, cron_trigger(cron, tz), (name,))
        for name, rule in rules.items()
        if (cron := overrides.get(name, rule.schedule))
    ]


def service_jobs(settings: Settings) -> list[JobSpec]:
    """The service's own jobs: master-data refresh, analyst snapshot, alert checks (each can be switched off)."""
    cfg, tz = settings, settings.scheduler.timezone
    found = []
    if cfg.service.masterdata_schedule:
        found.append(
            JobSpec(
                "masterdata",
                f"{JOBS}:refresh_masterdata",
                cfg.service.masterdata_schedule,
                cron_trigger(cfg.service.masterdata_schedule, tz),
            )
        )
    if cfg.service.snapshot_seconds:
        found.append(
            JobSpec(
                "snapshot",
                f"{JOBS}:publish_snapshot",
                f"every {cfg.service.snapshot_seconds:g} s",
                IntervalTrigger(seconds=cfg.service.snapshot_seconds, timezone=tz),
            )
        )
    found.append(
        JobSpec(
            "alerts",
            f"{JOBS}:check_alerts",
            f"every {cfg.alerts.check_seconds:g} s",
            IntervalTrigger(seconds=cfg.alerts.check_seconds, timezone=tz),
        )
    )
    return found


def register(scheduler: BackgroundScheduler, specs: list[JobSpec], prefix: str | None = None) -> list[str]:
    """Add or replace `specs`; stored jobs not among them (and starting with `prefix`, when given) are removed."""
    wanted = {spec.id for spec in specs}
    for job in scheduler.get_jobs():
        if job.id not in wanted and (prefix is None or job.id.startswith(prefix)):
            job.remove()
    for spec in specs:
        scheduler.add_job(
            spec.func, spec.trigger, id=spec.id, name=spec.id, args=list(spec.args), replace_existing=True
        )
    return sorted(wanted)


def register_reconciliations(scheduler: BackgroundScheduler, settings: Settings) -> list[str]:
    return register(scheduler, reconciliation_jobs(settings), prefix="reconcile:")


def all_jobs(settings: Settings) -> list[JobSpec]:
    """Every job `coexist run` schedules with this configuration (none when the scheduler is off)."""
    if not settings.scheduler.enabled:
        return []
    return reconciliation_jobs(settings) + service_jobs(settings)


def list_jobs(settings: Settings) -> list[dict[str, Any]]:
    """Every job with its schedule as written and its next run time (computed in memory: the store is not touched)."""
    specs = all_jobs(settings)
    now = dt.datetime.now(dt.UTC)
    return [
        {
            "job": spec.id,
            "schedule": spec.schedule,
            "runs": spec.func.rsplit(":", 1)[1],
            "next_run": (nxt.isoformat() if (nxt := spec.trigger.get_next_fire_time(None, now)) else None),
        }
        for spec in specs
    ]

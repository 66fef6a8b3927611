"""Job functions the scheduler stores by reference (its SQLite store keeps `module:function` text).

Inside `coexist run` they go to the running service, bound here as a `JobHost` (the service
shares its warehouse connection with capture). Outside it, a reconciliation job opens the
warehouse itself and runs through `coexist.tasks`, as the CLI does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

from coexist import tasks
from coexist.config import load_settings
from core import warehouse
from core.errors import CoexistError
from reconcile.engine import RunResult

log = logging.getLogger("coexist.jobs")


class JobHost(Protocol):
    def run_reconciliation(self, name: str, trigger: str = "schedule") -> RunResult | None: ...

    def refresh_masterdata(self) -> None: ...

    def publish_snapshot(self) -> None: ...

    def check_alerts(self) -> None: ...


_host: JobHost | None = None


def bind(host: JobHost | None) -> None:
    """The running service binds itself here while it runs; None unbinds."""
    global _host
    _host = host


def run_reconciliation(name: str, trigger: str = "schedule") -> RunResult | None:
    """Run one reconciliation; a busy warehouse or a failed run is logged, not fatal."""
    if _host is not None:
        return _host.run_reconciliation(name, trigger)
    config = os.environ.get("COEXIST_CONFIG")
    try:
        settings = load_settings(Path(config) if config else None)
        con = warehouse.connect(settings.warehouse_path)
    except CoexistError as exc:
        log.error("reconciliation %s skipped: %s", name, exc)
        return None
    try:
        result = tasks.reconcile(con, settings, [name], trigger=trigger)[0]
    except CoexistError as exc:
        log.error("reconciliation %s failed: %s", name, exc)
        return None
    finally:
        con.close()
    log_run(result)
    return result


def log_run(result: RunResult) -> None:
    """One JSON log line per reconciliation run, with its counts as fields."""
    log.info(
        "reconciliation %s: %d breaks (%d new, %d resolved) in %.2f s",
        result.recon,
        result.breaks,
        result.new_breaks,
        result.resolved_breaks,
        result.seconds,
        extra={
            "job": f"reconcile:{result.recon}",
            "breaks": result.breaks,
            "new_breaks": result.new_breaks,
            "resolved_breaks": result.resolved_breaks,
            "by_type": result.counts_by_type,
        },
    )


def refresh_masterdata() -> None:
    if _host is not None:
        _host.refresh_masterdata()


def publish_snapshot() -> None:
    if _host is not None:
        _host.publish_snapshot()


def check_alerts() -> None:
    if _host is not None:
        _host.check_alerts()

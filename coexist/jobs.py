"""Job functions the scheduler stores by reference (so they must live at module level).

Inside `coexist run` they go to the running service (`ACTIVE`), which shares its warehouse
connection; elsewhere (a scheduler in another process) they open the warehouse themselves.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from coexist.config import load_settings
from reconcile.engine import Engine, RunResult

if TYPE_CHECKING:
    from coexist.service import Service

log = logging.getLogger("coexist.jobs")

ACTIVE: Service | None = None


def run_reconciliation(name: str, trigger: str = "schedule") -> RunResult | None:
    """Run one reconciliation against the warehouse; a busy warehouse is logged, not fatal."""
    if ACTIVE is not None:
        return ACTIVE.run_reconciliation(name, trigger)
    config = os.environ.get("COEXIST_CONFIG")
    settings = load_settings(Path(config) if config else None)
    rule = settings.all_reconciliations().get(name)
    if rule is None:
        log.error("reconciliation %s is no longer configured", name)
        return None
    try:
        con = duckdb.connect(str(settings.warehouse_path))
    except duckdb.IOException as exc:
        log.error("reconciliation %s skipped: warehouse busy (%s)", name, exc)
        return None
    try:
        result = Engine(con).run(name, rule, trigger=trigger)
    finally:
        con.close()
    log.info("reconciliation %s: %d breaks (%d new, %d resolved) in %.2f s", name, result.breaks, result.new_breaks,
             result.resolved_breaks, result.seconds)
    return result


def refresh_masterdata() -> None:
    if ACTIVE is not None:
        ACTIVE.refresh_masterdata()


def publish_snapshot() -> None:
    if ACTIVE is not None:
        ACTIVE.publish_snapshot()


def check_alerts() -> None:
    if ACTIVE is not None:
        ACTIVE.check_alerts()

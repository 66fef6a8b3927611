"""Job functions the scheduler stores by reference (so they must live at module level)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import duckdb

from coexist.config import load_settings
from reconcile.engine import Engine, RunResult

log = logging.getLogger("coexist.jobs")


def run_reconciliation(name: str, trigger: str = "schedule") -> RunResult | None:
    """Run one reconciliation against the warehouse; a busy warehouse is logged, not fatal."""
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

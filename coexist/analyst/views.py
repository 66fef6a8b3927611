"""The analyst's views (`sql/views/*.sql`, schema `analytics`): installed where their inputs exist."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

log = logging.getLogger("coexist.views")

VIEWS_DIR = Path(__file__).resolve().parents[2] / "sql" / "views"


def install(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str]]:
    """Create or replace every view whose tables are there; returns (installed, skipped)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS analytics")
    installed, skipped = [], []
    for path in sorted(VIEWS_DIR.glob("*.sql")):
        try:
            con.execute(path.read_text())
            installed.append(path.stem)
        except duckdb.CatalogException:
            skipped.append(path.stem)
        except duckdb.Error as exc:  # a broken view must not fail the job that installs it
            log.error("view %s not installed: %s", path.stem, exc)
            skipped.append(path.stem)
    return installed, skipped

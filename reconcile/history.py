"""The read side of reconciliation: recorded runs and breaks, as plain records."""

from __future__ import annotations

from typing import Any

import duckdb

from core.errors import NotReady

BREAK_COLUMNS = (
    "recon",
    "break_type",
    "key",
    "left_id",
    "right_id",
    "delta",
    "project",
    "period",
    "legal_entity",
    "status",
    "first_seen_run",
    "details",
)
RUN_COLUMNS = (
    "run_id",
    "recon",
    "rule_version",
    "started_at",
    "seconds",
    "left_rows",
    "right_rows",
    "breaks",
    "new_breaks",
    "resolved_breaks",
    "trigger",
)


def _records(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        cur = con.execute(sql, params)
    except duckdb.CatalogException:
        raise NotReady("no reconciliation has run yet: `coexist reconcile run`") from None
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def breaks(
    con: duckdb.DuckDBPyConnection,
    recon: str | None = None,
    break_type: str | None = None,
    open_only: bool = True,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Breaks from `recon.break_state`, by recon, type and key; `limit` None for all."""
    sql = f"SELECT {', '.join(BREAK_COLUMNS)} FROM recon.break_state WHERE 1=1"
    params: list[Any] = []
    if open_only:
        sql += " AND status = 'open'"
    if recon:
        sql += " AND recon = ?"
        params.append(recon)
    if break_type:
        sql += " AND break_type = ?"
        params.append(break_type)
    sql += " ORDER BY recon, break_type, key"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return _records(con, sql, params)


def runs(con: duckdb.DuckDBPyConnection, limit: int | None = 20) -> list[dict[str, Any]]:
    """The most recent runs first."""
    sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM recon.runs ORDER BY started_at DESC"
    params: list[Any] = []
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return _records(con, sql, params)

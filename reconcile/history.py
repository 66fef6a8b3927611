"""The read side of reconciliation: recorded runs and breaks, as plain records."""

from __future__ import annotations

from typing import Any

import duckdb

from core.errors import NotReady, UsageError
from core.warehouse import records
from reconcile.rules import Rule

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
    "golden_project",
    "customer",
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
    "mode",
)


def _records(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        cur = con.execute(sql, params)
    except duckdb.CatalogException:
        raise NotReady("no reconciliation has run yet: `coexist reconcile run`") from None
    return records(cur)


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


def check_gate(rules: dict[str, Rule], fail_on: list[str]) -> None:
    """Every `--fail-on` condition names something these rules can report (a typo must not pass a gate)."""
    known = {t for rule in rules.values() for t in rule.break_types()}
    for condition in fail_on:
        if condition not in ("new", "open") and condition not in known:
            raise UsageError(
                f"--fail-on {condition}: not 'new', 'open' or a break type of "
                f"{', '.join(sorted(rules))} ({', '.join(sorted(known))})"
            )


def gate(
    con: duckdb.DuckDBPyConnection, rules: dict[str, Rule], new_breaks: dict[str, int], fail_on: list[str]
) -> list[str]:
    """What a close pipeline is stopped by, one line each: `new` (breaks first seen in this run),
    `open` (any open break), or a break type (an open break of that type), over the reconciliations
    just run (`rules`, with their new-break counts). Empty when the gate passes."""
    check_gate(rules, fail_on)
    names = sorted(rules)
    marks = ", ".join("?" for _ in names)
    open_counts = {
        (recon, break_type): int(n)
        for recon, break_type, n in con.execute(
            f"SELECT recon, break_type, count(*) FROM recon.break_state WHERE status = 'open' AND recon IN ({marks}) "
            "GROUP BY ALL ORDER BY ALL",
            names,
        ).fetchall()
    }
    failures: list[str] = []
    for condition in fail_on:
        if condition == "new":
            hits = {recon: n for recon, n in new_breaks.items() if n}
            what = "new breaks"
        elif condition == "open":
            hits = {}
            for (recon, _), n in open_counts.items():
                hits[recon] = hits.get(recon, 0) + n
            what = "open breaks"
        else:
            hits = {recon: n for (recon, break_type), n in open_counts.items() if break_type == condition}
            what = f"open {condition} breaks"
        if hits:
            detail = ", ".join(f"{recon}: {n:,}" for recon, n in sorted(hits.items()))
            failures.append(f"--fail-on {condition}: {sum(hits.values()):,} {what} ({detail})")
    return failures

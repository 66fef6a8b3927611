"""What the operations page reads: capture freshness per source, late postings, failed runs, dead
letters, alerts. Each part is empty, not an error, when what it reads has not been created yet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb

from core.warehouse import Connection, records
from reconcile.rules import Rule


def _records(con: Connection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    try:
        cur = con.execute(sql, params or [])
    except duckdb.CatalogException:
        return []
    return records(cur)


def overview(con: Connection, rules: Mapping[str, Rule], sla_days: float) -> dict[str, Any]:
    capture = _records(
        con,
        """
        WITH last AS (
            SELECT source, max(committed_at) AS committed_at, arg_max(lag_ms, committed_at) AS lag_ms,
                   sum(dead_letters) AS dead_letters
            FROM cdc.batches GROUP BY source)
        SELECT o.source, sum(o.events) AS events, to_timestamp(max(o.last_ts_ms) / 1000.0) AS last_change_at,
               max(o.updated_at) AS updated_at, any_value(l.lag_ms) / 1000.0 AS lag_seconds,
               date_diff('second', max(o.updated_at), now()) AS seconds_since_commit
        FROM cdc.offsets o LEFT JOIN last l USING (source) GROUP BY o.source ORDER BY o.source""",
    )
    late = []
    for name, rule in sorted(rules.items()):
        rows = _records(
            con,
            "SELECT count(*) AS breaks, coalesce(sum(abs(delta)), 0) AS amount, max(age_days) AS oldest_days "
            "FROM work.breaks WHERE recon = ? AND break_type = ? AND work_state <> 'closed' AND age_days > ?",
            [name, rule.missing_right_type, sla_days],
        )
        if rows and rows[0]["breaks"]:
            late.append({"recon": name, "break_type": rule.missing_right_type, "right": rule.right_name} | rows[0])
    failed_runs = _records(
        con,
        "SELECT run_id, recon, started_at, error FROM recon.runs WHERE status = 'failed' "
        "ORDER BY started_at DESC LIMIT 20",
    )
    dead = _records(
        con,
        "SELECT source, table_name, count(*) AS dead_letters, max(received_at) AS last_at FROM cdc.dead_letter "
        "GROUP BY ALL ORDER BY last_at DESC",
    )
    alerts = _records(
        con, "SELECT raised_at, kind, subject, state, message FROM ops.alerts ORDER BY raised_at DESC LIMIT 20"
    )
    return {"capture": capture, "late": late, "failed_runs": failed_runs, "dead": dead, "alerts": alerts}


def dead_letters(con: Connection, source: str | None, table: str | None, limit: int = 200) -> list[dict[str, Any]]:
    return _records(
        con,
        "SELECT received_at, source, table_name, reason, position, left(raw, 2000) AS raw FROM cdc.dead_letter "
        "WHERE (? IS NULL OR source = ?) AND (? IS NULL OR table_name = ?) ORDER BY received_at DESC LIMIT ?",
        [source, source, table, table, limit],
    )

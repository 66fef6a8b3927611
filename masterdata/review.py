"""The people's side of master data: the review queue, manual overrides and why a record is where it is."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb

from core import audit
from core.audit import AUDIT_DDL
from core.errors import NotReady, UsageError
from core.warehouse import quote, records, transaction

DEFER_DDL = """
CREATE TABLE IF NOT EXISTS mdm.deferrals (
    entity VARCHAR, a_rid VARCHAR, b_rid VARCHAR, until TIMESTAMPTZ, created_at TIMESTAMPTZ, actor VARCHAR
);
"""


def review_queue(
    con: duckdb.DuckDBPyConnection,
    entity: str | None = None,
    limit: int | None = 30,
    deferred: bool = False,
) -> list[dict[str, Any]]:
    """Pairs between the review and match thresholds, most likely first, with their per-field evidence;
    pairs deferred until later are left out (or, with `deferred`, only those)."""
    try:
        has_deferrals = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'mdm' AND table_name = 'deferrals'"
        ).fetchall()[0][0]
        later = (
            "EXISTS (SELECT 1 FROM mdm.deferrals d WHERE d.entity = q.entity AND d.a_rid = q.l_rid "
            "AND d.b_rid = q.r_rid AND d.until > now())"
            if has_deferrals
            else "FALSE"
        )
        return records(
            con.execute(
                "SELECT entity, l_rid AS record_a, r_rid AS record_b, round(score, 2) AS score, evidence "
                f"FROM mdm.review_queue q WHERE (? IS NULL OR entity = ?) AND {'' if deferred else 'NOT '}{later} "
                "ORDER BY score DESC, l_rid, r_rid " + ("LIMIT ?" if limit is not None else ""),
                [entity, entity] + ([limit] if limit is not None else []),
            )
        )
    except duckdb.CatalogException:
        raise NotReady("master data has not run yet: `coexist masterdata run`") from None


def defer(con: duckdb.DuckDBPyConnection, entity: str, record_a: str, record_b: str, days: float, actor: str) -> None:
    """Leave a review pair out of the queue for `days` (it comes back if still doubtful then)."""
    now = dt.datetime.now(dt.UTC)
    until = now + dt.timedelta(days=days)
    con.execute(DEFER_DDL)
    con.execute(AUDIT_DDL)
    with transaction(con):
        con.execute(
            "INSERT INTO mdm.deferrals VALUES (?, ?, ?, ?, ?, ?)", [entity, record_a, record_b, until, now, actor]
        )
        audit.record(con, actor, "review:defer", entity, [(f"{record_a}|{record_b}", None, {"until": until})], now)


def add_override(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    action: str,
    record_a: str,
    record_b: str,
    note: str | None,
    actor: str = "cli",
) -> None:
    """Record a manual link or split of two known records, and who decided it in the audit trail
    (the caller holds the transaction); every later run honours it."""
    if action not in ("link", "split"):
        raise UsageError(f"action must be link or split, not {action!r}")
    try:
        known = {
            r[0]
            for r in con.execute(
                "SELECT rid FROM mdm.xref WHERE entity = ? AND rid IN (?, ?)", [entity, record_a, record_b]
            ).fetchall()
        }
    except duckdb.CatalogException:
        raise NotReady("master data has not run yet: `coexist masterdata run`") from None
    missing = [r for r in (record_a, record_b) if r not in known]
    if missing:
        raise UsageError(f"no {entity} record {missing[0]!r} (use SYSTEM:ID as `masterdata explain` shows it)")
    now = dt.datetime.now(dt.UTC)
    con.execute(AUDIT_DDL)
    con.execute("INSERT INTO mdm.overrides VALUES (?, ?, ?, ?, ?, ?)", [entity, action, record_a, record_b, now, note])
    audit.record(con, actor, f"review:{action}", entity, [(f"{record_a}|{record_b}", None, {"note": note})], now)


def explain(con: duckdb.DuckDBPyConnection, record: str, entity: str | None = None) -> list[dict[str, Any]]:
    """For each entity holding `record` (SYSTEM:ID or a bare source id): its golden record, members, links, overrides."""
    try:
        hits = con.execute(
            "SELECT entity, rid, golden_id, rule, score FROM mdm.xref WHERE (rid = ? OR source_id = ?) "
            "AND (? IS NULL OR entity = ?) ORDER BY entity, rid",
            [record, record, entity, entity],
        ).fetchall()
    except duckdb.CatalogException:
        raise NotReady("master data has not run yet: `coexist masterdata run`") from None
    if not hits:
        raise UsageError(f"no record {record!r} in mdm.xref (run `coexist masterdata run` first)")
    found = []
    for ent, rid, golden, rule, score in hits:
        members = records(
            con.execute(
                "SELECT rid, rule, round(score, 2) AS score FROM mdm.xref WHERE entity = ? AND golden_id = ? ORDER BY rid",
                [ent, golden],
            )
        )
        links = records(
            con.execute(
                "SELECT l_rid, r_rid, rule, round(score, 2) AS score, evidence, decision FROM mdm.match_pairs "
                "WHERE entity = ? AND (l_rid IN (SELECT rid FROM mdm.xref WHERE entity = ? AND golden_id = ?) "
                "OR r_rid IN (SELECT rid FROM mdm.xref WHERE entity = ? AND golden_id = ?)) ORDER BY score DESC, l_rid",
                [ent, ent, golden, ent, golden],
            )
        )
        overrides = records(
            con.execute(
                "SELECT action, a_rid, b_rid, note FROM mdm.overrides WHERE entity = ? AND (a_rid = ? OR b_rid = ?)",
                [ent, rid, rid],
            )
        )
        golden_rows = records(con.execute(f"SELECT * FROM mdm.{quote('golden_' + ent)} WHERE golden_id = ?", [golden]))
        shown = {
            c: v
            for c, v in (golden_rows[0] if golden_rows else {}).items()
            if not c.endswith("_source") and c not in ("member_records", "run_id")
        }
        found.append(
            {
                "entity": ent,
                "record": rid,
                "golden_id": golden,
                "rule": rule,
                "score": score,
                "golden_record": shown,
                "members": members,
                "links": links,
                "overrides": overrides,
            }
        )
    return found

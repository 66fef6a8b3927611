"""The people's side of reconciliation: who owns a break, what they found, what they decided.

Work lives in `work.break_work` and `work.notes` beside `recon.break_state`, keyed by the break's
stable id, so it survives every run, re-run and resnapshot. The state people see (`work.breaks`)
is derived, never copied: a break the last run no longer found is `closed` (its notes stay); one
that comes back after it was worked is `reopened` until someone acts on it again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from core import audit
from core.errors import Forbidden, NotReady, UsageError
from core.warehouse import Connection, records, transaction
from reconcile.engine import HISTORY_DDL
from reconcile.rules import Rule

STATES = ("open", "investigating", "explained", "accepted", "fixed_at_source")
"""What a person can set; `closed` and `reopened` are derived from the runs."""
NEEDS_REASON = ("explained", "accepted")

WORK_DDL = (
    HISTORY_DDL
    + audit.AUDIT_DDL
    + """
CREATE TABLE IF NOT EXISTS work.break_work (
    break_id VARCHAR PRIMARY KEY, owner VARCHAR, state VARCHAR, reason VARCHAR, updated_at TIMESTAMPTZ,
    updated_by VARCHAR
);
CREATE TABLE IF NOT EXISTS work.notes (break_id VARCHAR, noted_at TIMESTAMPTZ, author VARCHAR, text VARCHAR);
CREATE OR REPLACE VIEW work.breaks AS
SELECT s.break_id, s.recon, s.break_type, s.key, s.left_id, s.right_id, s.project, s.period, s.legal_entity,
       s.golden_project, s.customer, s.delta, s.details, s.status AS run_status, s.first_seen_run, s.first_seen_at,
       s.changed_run, s.changed_at, CASE WHEN s.status = 'open' THEN lr.last_run_at END AS last_seen_at,
       s.resolved_run, s.resolved_at, s.left_values, s.right_values,
       w.owner, w.reason, w.updated_at AS worked_at, w.updated_by AS worked_by,
       CASE WHEN s.status = 'resolved' THEN 'closed'
            WHEN w.state IS NULL THEN 'open'
            WHEN w.updated_at < s.first_seen_at THEN 'reopened'
            ELSE w.state END AS work_state,
       date_diff('second', s.first_seen_at, now()) / 86400.0 AS age_days
FROM recon.break_state s LEFT JOIN work.break_work w USING (break_id)
LEFT JOIN (SELECT recon, max(finished_at) AS last_run_at FROM recon.runs WHERE status = 'ok' GROUP BY recon) lr
     USING (recon);
"""
)
LIST_COLUMNS = (
    "break_id, recon, break_type, key, project, period, legal_entity, golden_project, customer, delta, "
    "work_state, owner, age_days, first_seen_at"
)


def ensure(con: Connection) -> None:
    con.execute(WORK_DDL)


@dataclass
class Filters:
    """What the break list is narrowed to; every field optional. `state` is a work state or `active`
    (everything not closed), the default."""

    recon: str | None = None
    break_type: str | None = None
    state: str | None = "active"
    owner: str | None = None
    min_age_days: float | None = None
    golden_project: str | None = None
    customer: str | None = None
    legal_entity: str | None = None
    period: str | None = None
    text: str | None = None
    sort: str = "age"

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        for column in ("recon", "break_type", "owner", "golden_project", "customer", "legal_entity", "period"):
            value = getattr(self, column)
            if value:
                parts.append(f"{column} = ?")
                params.append(value)
        if self.state == "active":
            parts.append("work_state <> 'closed'")
        elif self.state:
            parts.append("work_state = ?")
            params.append(self.state)
        if self.min_age_days is not None:
            parts.append("age_days >= ?")
            params.append(self.min_age_days)
        if self.text:
            parts.append("(key ILIKE ? OR project ILIKE ? OR left_id ILIKE ? OR right_id ILIKE ?)")
            params += [f"%{self.text}%"] * 4
        return (" AND ".join(parts) or "TRUE"), params


SORTS = {
    "age": "first_seen_at, break_id",
    "amount": "abs(delta) DESC NULLS LAST, break_id",
    "key": "recon, key, break_id",
}


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def page(con: Connection, filters: Filters, limit: int = 100, offset: int = 0) -> Page:
    """One page of breaks, the total that match, and the values each filter can take (with counts)."""
    where, params = filters.where()
    order = SORTS.get(filters.sort, SORTS["age"])
    rows = records(
        con.execute(
            f"SELECT {LIST_COLUMNS} FROM work.breaks WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            params + [limit, offset],
        )
    )
    total = int(con.execute(f"SELECT count(*) FROM work.breaks WHERE {where}", params).fetchall()[0][0])
    facets: dict[str, list[tuple[str, int]]] = {}
    names = ("recon", "break_type", "owner", "legal_entity", "period")
    grouped = con.execute(
        f"SELECT {', '.join(names)}, count(*) FROM work.breaks WHERE work_state <> 'closed' "
        f"GROUP BY GROUPING SETS ({', '.join(f'({n})' for n in names)})"
    ).fetchall()
    for row in grouped:
        for name, value in zip(names, row[:-1], strict=True):
            if value is not None:
                facets.setdefault(name, []).append((str(value), int(row[-1])))
    for values in facets.values():
        values.sort()
    return Page(rows, total, facets)


def _row_history(con: Connection, where: str | None, row_id: str | None) -> list[dict[str, Any]]:
    if not where or not row_id:
        return []
    source, table, column = where.split(".")
    return records(
        con.execute(
            "SELECT applied_at, op, position, coalesce(after, before) AS image, before, after FROM cdc.changelog "
            "WHERE source = ? AND table_name = ? AND coalesce(after, before)->>? = ? ORDER BY applied_at, position",
            [source, table, f"$.{column}", row_id],
        )
    )


def detail(con: Connection, break_id: str, rules: Mapping[str, Rule]) -> dict[str, Any]:
    """Everything about one break: both sides' values, the failing checks, its work and notes, its run
    history, and the change history of both rows from `cdc.changelog` (when the rule says where they live)."""
    found = records(con.execute("SELECT * FROM work.breaks WHERE break_id = ?", [break_id]))
    if not found:
        raise NotReady(f"no break {break_id!r}")
    item = found[0]
    rule = rules.get(item["recon"])
    for side in ("left_values", "right_values"):
        item[side] = orjson.loads(item[side]) if item[side] else None
    item["notes"] = records(
        con.execute("SELECT noted_at, author, text FROM work.notes WHERE break_id = ? ORDER BY noted_at", [break_id])
    )
    item["runs"] = records(
        con.execute(
            "SELECT b.run_id, r.started_at, r.mode, b.status, b.delta, b.details FROM recon.breaks b "
            "LEFT JOIN recon.runs r USING (run_id) WHERE b.break_id = ? ORDER BY r.started_at DESC LIMIT 50",
            [break_id],
        )
    )
    has_changelog = bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'cdc' AND table_name = 'changelog'"
        ).fetchall()[0][0]
    )
    history = rule.history if rule is not None else None
    before_seen = []
    for side in ("left", "right"):
        changes = _row_history(con, getattr(history, side), item[f"{side}_id"]) if history and has_changelog else []
        for change in changes:
            change["opened"] = False
            if change["applied_at"] is not None and change["applied_at"] <= item["first_seen_at"]:
                before_seen.append(change)
        item[f"{side}_changes"] = changes
    if before_seen:  # the last change of either row before the run that first found the break
        max(before_seen, key=lambda c: (c["applied_at"], c["position"] or ""))["opened"] = True
    item["audit"] = audit.trail(con, subject=break_id, limit=100)
    return item


def _current(con: Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    marks = ", ".join("?" for _ in ids)
    rows = records(
        con.execute(
            f"SELECT b.break_id, b.delta, b.work_state, w.owner, w.state, w.reason FROM work.breaks b "
            f"LEFT JOIN work.break_work w USING (break_id) WHERE b.break_id IN ({marks})",
            ids,
        )
    )
    found = {r["break_id"]: r for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise UsageError(f"no break {missing[0]!r}")
    return found


def _write(con: Connection, actor: str, action: str, changes: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
    now = dt.datetime.now(dt.UTC)
    ids = list(changes)
    marks = ", ".join("?" for _ in ids)
    with transaction(con):
        con.execute(f"DELETE FROM work.break_work WHERE break_id IN ({marks})", ids)
        con.executemany(
            "INSERT INTO work.break_work VALUES (?, ?, ?, ?, ?, ?)",
            [[i, after["owner"], after["state"], after["reason"], now, actor] for i, (_, after) in changes.items()],
        )
        audit.record(con, actor, action, "break", [(i, before, after) for i, (before, after) in changes.items()], now)


def _work(row: dict[str, Any]) -> dict[str, Any]:
    """The stored work of a break; a reopened break's earlier decision no longer holds (it is open again)."""
    if row["work_state"] == "reopened":
        state = "open"
    elif row["work_state"] == "closed":
        state = row["state"] or "open"
    else:
        state = row["work_state"]
    return {"owner": row["owner"], "state": state, "reason": row["reason"]}


def assign(con: Connection, ids: list[str], owner: str | None, actor: str) -> int:
    """Give breaks an owner (None: nobody); a reopened break stays reopened until its state is set."""
    current = _current(con, ids)
    changes = {}
    for i, row in current.items():
        before = _work(row)
        changes[i] = (before, before | {"owner": owner or None})
    _write(con, actor, "assign", changes)
    return len(changes)


def set_state(
    con: Connection, ids: list[str], state: str, reason: str | None, actor: str, may_approve: bool, approve_above: float
) -> int:
    """Move breaks to `state`. Explaining or accepting needs a reason; accepting a break whose
    difference is above `approve_above` needs someone who may approve."""
    if state not in STATES:
        raise UsageError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    reason = (reason or "").strip() or None
    if state in NEEDS_REASON and not reason:
        raise UsageError(f"a break is {state} only with a reason")
    current = _current(con, ids)
    if state == "accepted" and not may_approve:
        above = [i for i, row in current.items() if abs(row["delta"] or 0.0) > approve_above]
        if above:
            raise Forbidden(
                f"{len(above)} of these breaks differ by more than {approve_above:,.2f}: only an approver accepts them"
            )
    changes = {i: (_work(row), _work(row) | {"state": state, "reason": reason}) for i, row in current.items()}
    _write(con, actor, f"state:{state}", changes)
    return len(changes)


def add_note(con: Connection, ids: list[str], text: str, actor: str) -> int:
    text = text.strip()
    if not text:
        raise UsageError("a note needs some text")
    _current(con, ids)
    now = dt.datetime.now(dt.UTC)
    with transaction(con):
        con.executemany("INSERT INTO work.notes VALUES (?, ?, ?, ?)", [[i, now, actor, text] for i in ids])
        audit.record(con, actor, "note", "break", [(i, None, {"note": text}) for i in ids], now)
    return len(ids)

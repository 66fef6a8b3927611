"""The audit trail: who did what, when, to what, with the record before and after.

Append-only: nothing in coexist updates or deletes a row of `work.audit`. Every action a
person takes through the workbench or the CLI (break work, match decisions, user changes)
goes through `record`, in the same transaction as the change it describes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from core.warehouse import Connection, records

AUDIT_DDL = """
CREATE SCHEMA IF NOT EXISTS work;
CREATE TABLE IF NOT EXISTS work.audit (
    happened_at TIMESTAMPTZ, actor VARCHAR, action VARCHAR, subject_kind VARCHAR, subject VARCHAR,
    before JSON, after JSON
);
"""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def record(
    con: Connection,
    actor: str,
    action: str,
    subject_kind: str,
    entries: list[tuple[str, Any, Any]],
    at: dt.datetime | None = None,
) -> None:
    """Append one audit row per (subject, before, after); the caller holds the transaction."""
    if not entries:
        return
    when = at or dt.datetime.now(dt.UTC)
    con.executemany(
        "INSERT INTO work.audit VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            [when, actor, action, subject_kind, subject, _json(before), _json(after)]
            for subject, before, after in entries
        ],
    )


def trail(
    con: Connection, subject: str | None = None, actor: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """The most recent audit rows first, for one subject or actor when given."""
    cur = con.execute(
        "SELECT happened_at, actor, action, subject_kind, subject, before, after FROM work.audit "
        "WHERE (? IS NULL OR subject = ?) AND (? IS NULL OR actor = ?) ORDER BY happened_at DESC LIMIT ?",
        [subject, subject, actor, actor, limit],
    )
    return records(cur)

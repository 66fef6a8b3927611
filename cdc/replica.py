"""Applying one table's events to its replica table, set-based, inside the sink's transaction.

The events' row images stay in their wire form (JSON) up to here. One staging table holds the
whole batch for the table; one DuckDB statement decodes every column of every image with its
`ColumnType`; events with a value that does not decode become dead letters, named by column; the
rest are applied: keyed tables by last write per key, keyless tables by whole-row identity with
multiplicity (the net count of each distinct row image). The changelog gets the decoded images.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cdc.events import ChangeEvent, DeadLetter, dumps, json_default
from cdc.types import (
    PLACEHOLDER,
    UNAVAILABLE,
    UNAVAILABLE_B64,
    UNAVAILABLE_CODES,
    ColumnType,
    is_unavailable,
    of_replica,
)
from core.warehouse import literal, quote, registered


@dataclass(slots=True)
class TableResult:
    applied: list[ChangeEvent] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LogTo:
    """The changelog rows of what is applied: whose they are and which batch wrote them."""

    source: str
    table: str
    batch_id: str
    at: dt.datetime


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _prepared(row: dict[str, Any] | None, hooks: dict[str, Any]) -> bytes | None:
    """The row image as JSON; only the columns with a `prepare` step are touched in Python."""
    if row is None:
        return None
    if hooks:
        row = dict(row)
        for name, prepare in hooks.items():
            value = row.get(name)
            if value is not None:
                row[name] = prepare(value)
    return orjson.dumps(row, default=json_default, option=_JSON_OPTIONS)


def _has_placeholder(row: dict[str, Any]) -> bool:
    values = list(row.values())  # membership tests run in C; most rows have no placeholder at all
    return (
        UNAVAILABLE in values
        or UNAVAILABLE_B64 in values
        or UNAVAILABLE_CODES in values
        or any(isinstance(v, list) and UNAVAILABLE in v for v in values if type(v) is list)
    )


def resolve_toast_in_batch(events: list[ChangeEvent], key_cols: list[str]) -> dict[int, list[str]]:
    """Fill Debezium's unchanged-TOAST placeholders from the before image or an earlier event of the
    batch (wire values, so nothing is converted twice). Returns, per event index, the columns still
    unresolved: the replica must supply them."""
    last: dict[tuple[Any, ...], dict[str, Any]] = {}
    missing: dict[int, list[str]] = {}
    for i, event in enumerate(events):
        key = tuple(event.key.get(k) for k in key_cols)
        after = event.after
        if after is not None and _has_placeholder(after):
            after = dict(after)
            still = []
            for col, value in after.items():
                if not is_unavailable(value):
                    continue
                prior = (event.before or {}).get(col)
                if prior is not None and not is_unavailable(prior):
                    after[col] = prior
                elif key_cols and key in last and col in last[key] and not is_unavailable(last[key][col]):
                    after[col] = last[key][col]
                else:
                    after[col] = None
                    still.append(col)
            event.after = after
            if still:
                missing[i] = still
        if event.op == "d":
            last.pop(key, None)
        elif event.after is not None:
            last[key] = event.after
    return missing


def apply_table(
    con: duckdb.DuckDBPyConnection,
    target: str,
    columns: dict[str, str],
    types: dict[str, ColumnType],
    key_cols: list[str],
    events: list[ChangeEvent],
    touched: str | None = None,
    log: LogTo | None = None,
) -> TableResult:
    """Decode and apply `events` (all of one table, in order) to `target`; returns what was applied.

    `touched`: a table that collects the keys these events changed (a re-snapshot is staging);
    `log`: write the changelog rows of what was applied (not for a re-snapshot's staging)."""
    result = TableResult()
    if not events:
        return result
    kinds = column_kinds(columns, types)
    hooks = {c: k.prepare for c, k in kinds.items() if k.prepare is not None}
    missing: dict[int, list[str]] = {}
    if hooks:  # a hook must not see a placeholder: resolved first, row by row
        missing = resolve_toast_in_batch(events, key_cols)
    afters = pa.array([_prepared(e.after, hooks) for e in events], pa.binary())
    if not hooks and pc.any(pc.match_substring_regex(afters, PLACEHOLDER)).as_py():
        missing = resolve_toast_in_batch(events, key_cols)  # rows with placeholders are rare: looked for in bulk
        afters = pa.array([_prepared(e.after, hooks) for e in events], pa.binary())
    stage = pa.table(
        {
            "_seq": pa.array(np.arange(len(events), dtype=np.int64)),
            "_op": pa.array([e.op for e in events], pa.string()),
            "_pos": pa.array([e.position for e in events], pa.string()),
            "_ts": pa.array([e.ts_ms for e in events], pa.int64()),
            "_after": afters,
            "_before": pa.array([_prepared(e.before, hooks) for e in events], pa.binary()),
            "_toast": pa.array([missing.get(i) for i in range(len(events))], pa.list_(pa.string())),
            "_key": pa.array([dumps(e.key) if log else None for e in events], pa.string()),
            "_part": pa.array([e.partition for e in events], pa.string()),
            "_snap": pa.array([e.snapshot for e in events], pa.string()),
        }
    )
    applied, dead = apply_stage(con, target, columns, kinds, key_cols, stage, touched, log)
    for seq, reason in dead:
        result.dead.append(_dead(events[seq], reason) if seq >= 0 else _keyless_dead(events, reason))
    result.applied = [events[i] for i in applied.to_pylist()]
    return result


def column_kinds(columns: dict[str, str], types: dict[str, ColumnType]) -> dict[str, ColumnType]:
    """Each data column's ColumnType: the events' own, else the replica column's."""
    return {c: types.get(c) or of_replica(columns[c]) for c in columns if not c.startswith("_cdc_")}


def apply_frame(
    con: duckdb.DuckDBPyConnection,
    target: str,
    columns: dict[str, str],
    types: dict[str, ColumnType],
    key_cols: list[str],
    frame: pa.Table,
    touched: str | None = None,
    log: LogTo | None = None,
) -> tuple[pa.Array, list[tuple[int, str]]]:
    """`apply_table` for a frame's columns (`cdc.frame.FRAME_FIELDS`): no Python per event. The frame
    holds no unchanged-TOAST placeholder and no column needs a Python `prepare` step (the caller checks).
    Returns the applied rows' indexes and (index, reason) of the rows that do not decode."""
    stage = pa.table(
        {
            "_seq": pa.array(np.arange(frame.num_rows, dtype=np.int64)),
            "_op": frame["op"],
            "_pos": frame["position"],
            "_ts": frame["ts_ms"],
            "_after": frame["after"],
            "_before": frame["before"],
            "_toast": pa.nulls(frame.num_rows, pa.list_(pa.string())),
            "_key": frame["key"],
            "_part": frame["partition"],
            "_snap": frame["snapshot"],
        }
    )
    return apply_stage(con, target, columns, column_kinds(columns, types), key_cols, stage, touched, log)


def apply_stage(
    con: duckdb.DuckDBPyConnection,
    target: str,
    columns: dict[str, str],
    kinds: dict[str, ColumnType],
    key_cols: list[str],
    stage: pa.Table,
    touched: str | None,
    log: LogTo | None,
) -> tuple[pa.Array, list[tuple[int, str]]]:
    """The set-based part: decode every image of the staged batch, set aside what does not decode,
    apply the rest and log it. Returns the applied rows' indexes and the dead rows as (index, reason);
    index -1 is a keyless table's unmatched delete."""
    data_cols = list(kinds)
    dead: list[tuple[int, str]] = []
    structure = {c: ("JSON" if "{j}" in kinds[c].decode else "VARCHAR") for c in data_cols}
    shape = literal(orjson.dumps(structure).decode())
    text = {
        side: f"decode({side})" if pa.types.is_binary(stage.schema.field(side).type) else side
        for side in ("_after", "_before")
    }
    decoded: list[str] = []
    checks: list[tuple[str, str]] = []
    for i, c in enumerate(data_cols):
        for image in ("a", "b"):
            raw = f"{image}j.{quote(c)}"
            decoded.append(f"TRY_CAST({kinds[c].decode_sql(raw, raw)} AS {columns[c]}) AS {image}_{i}")
            decoded.append(f"({raw} IS NOT NULL) AS {image}n_{i}")
            failed = f"{image}n_{i} AND {image}_{i} IS NULL"
            if image == "a":
                failed += f" AND NOT list_contains(coalesce(_toast, []), {literal(c)})"
            checks.append((failed, f"CASE WHEN {failed} THEN {literal(c)} END"))
    with registered(con, "_cx_stage", stage):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _cx_dec AS SELECT _seq, _op, _pos, _ts, _toast, _key, _part, _snap, "
            "_before IS NOT NULL AS _has_before, "
            f"{', '.join(decoded)} FROM (SELECT *, json_transform({text['_after']}, {shape}) AS aj, "
            f"json_transform({text['_before']}, {shape}) AS bj FROM _cx_stage)"
        )
    # The rows are filtered first: the list of failing columns is built only for the (rare) failing rows.
    failing = f"list_filter([{', '.join(case for _, case in checks)}], lambda x: x IS NOT NULL)"
    any_failed = " OR ".join(f"({failed})" for failed, _ in checks) or "false"
    bad = con.execute(f"SELECT _seq, {failing} AS cols FROM _cx_dec WHERE {any_failed}").fetchall()
    if bad:
        for seq, cols in bad:
            reason = "; ".join(
                f"column {c!r}: value does not fit {columns[c]} (source type {kinds[c].source})" for c in cols
            )
            dead.append((seq, reason))
        con.execute(f"DELETE FROM _cx_dec WHERE _seq IN ({', '.join(str(seq) for seq, _ in bad)})")
    keys_a = [f"a_{data_cols.index(k)}" for k in key_cols]
    keys_b = [f"b_{data_cols.index(k)}" for k in key_cols]
    if key_cols:
        unresolved = _fill_toast_from_replica(con, target, data_cols, key_cols, keys_a)
        dead += [
            (seq, "unchanged TOAST value is held neither by the event nor by the replica: resnapshot this table")
            for seq in unresolved
        ]
        _apply_keyed(con, target, data_cols, key_cols, keys_a, keys_b)
        if touched is not None:
            key_expr = [f"CASE WHEN _op = 'd' THEN {b} ELSE {a} END" for a, b in zip(keys_a, keys_b, strict=True)]
            con.execute(f"INSERT INTO {touched} SELECT DISTINCT {', '.join(key_expr)} FROM _cx_dec")
    else:
        missed = _apply_keyless(con, target, data_cols)
        if missed:
            dead.append(
                (-1, f"keyless table: {missed} deleted or updated row(s) matched no replica row; resnapshot this table")
            )
    after = "to_json(struct_pack(" + ", ".join(f"{quote(c)} := a_{i}" for i, c in enumerate(data_cols)) + "))"
    before = "to_json(struct_pack(" + ", ".join(f"{quote(c)} := b_{i}" for i, c in enumerate(data_cols)) + "))"
    # The decoded images (the replica's values), not the wire forms; an event without a before image
    # (PostgreSQL's default replica identity on update) logs none, not an image of NULLs.
    if log is not None:
        con.execute(
            f"INSERT INTO cdc.changelog SELECT ?, ?, _op, coalesce(_key, '{{}}'), "
            f"CASE WHEN _op IN ('u', 'd') AND _has_before THEN {before} END, "
            f"CASE WHEN _op <> 'd' THEN {after} END, _pos, coalesce(_part, ''), _ts, _snap, ?, ? "
            "FROM _cx_dec",
            [log.source, log.table, log.batch_id, log.at],
        )
    applied = con.sql("SELECT _seq FROM _cx_dec ORDER BY _seq").to_arrow_table()["_seq"].combine_chunks()
    con.execute("DROP TABLE IF EXISTS _cx_dec")
    return applied, dead


def _keyless_dead(events: list[ChangeEvent], reason: str) -> DeadLetter:
    return DeadLetter(events[0].source, events[0].table, reason, "", events[-1].position, events[-1].partition)


def _dead(event: ChangeEvent, reason: str) -> DeadLetter:
    raw = dumps({"key": event.key, "before": event.before, "after": event.after, "op": event.op})
    return DeadLetter(event.source, event.table, reason, raw, event.position, event.partition)


def _fill_toast_from_replica(
    con: duckdb.DuckDBPyConnection, target: str, data_cols: list[str], key_cols: list[str], keys_a: list[str]
) -> list[int]:
    """Unchanged TOAST values the batch could not supply come from the replica's current row."""
    wanted = [r[0] for r in con.execute("SELECT DISTINCT unnest(_toast) FROM _cx_dec WHERE _op <> 'd'").fetchall()]
    if not wanted:
        return []
    join = " AND ".join(f"d.{a} = r.{quote(k)}" for a, k in zip(keys_a, key_cols, strict=True))
    unresolved = [
        r[0]
        for r in con.execute(
            f"SELECT d._seq FROM _cx_dec d WHERE len(coalesce(d._toast, [])) > 0 AND d._op <> 'd' AND NOT EXISTS "
            f"(SELECT 1 FROM {target} r WHERE {join})"
        ).fetchall()
    ]
    for col in wanted:
        i = data_cols.index(col)
        con.execute(
            f"UPDATE _cx_dec d SET a_{i} = r.{quote(col)} FROM {target} r WHERE {join} "
            f"AND list_contains(d._toast, {literal(col)})"
        )
    if unresolved:
        con.execute(f"DELETE FROM _cx_dec WHERE _seq IN ({', '.join(str(s) for s in unresolved)})")
    return unresolved


def _apply_keyed(
    con: duckdb.DuckDBPyConnection,
    target: str,
    data_cols: list[str],
    key_cols: list[str],
    keys_a: list[str],
    keys_b: list[str],
) -> None:
    key_expr = [f"CASE WHEN _op = 'd' THEN {b} ELSE {a} END" for a, b in zip(keys_a, keys_b, strict=True)]
    keys = ", ".join(f"{e} AS {quote(k)}" for e, k in zip(key_expr, key_cols, strict=True))
    join = " AND ".join(f"t.{quote(k)} = k.{quote(k)}" for k in key_cols)
    con.execute(f"DELETE FROM {target} t USING (SELECT DISTINCT {keys} FROM _cx_dec) k WHERE {join}")
    names = ", ".join(quote(c) for c in data_cols)
    values = ", ".join(f"a_{i}" for i in range(len(data_cols)))
    con.execute(
        f"INSERT INTO {target} ({names}, _cdc_position, _cdc_ts_ms) SELECT {values}, _pos, _ts FROM "
        f"(SELECT *, row_number() OVER (PARTITION BY {', '.join(key_expr)} ORDER BY _seq DESC) AS _rn FROM _cx_dec) "
        "WHERE _rn = 1 AND _op <> 'd'"
    )


def _apply_keyless(con: duckdb.DuckDBPyConnection, target: str, data_cols: list[str]) -> int:
    """Net change per distinct row image: +1 per after image, -1 per before image. Returns the
    number of copies that should have been deleted but were not in the replica."""
    a_cols = ", ".join(f"a_{i} AS {quote(c)}" for i, c in enumerate(data_cols))
    b_cols = ", ".join(f"b_{i} AS {quote(c)}" for i, c in enumerate(data_cols))
    names = ", ".join(quote(c) for c in data_cols)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _cx_net AS SELECT {names}, CAST(sum(_w) AS BIGINT) AS _net, "
        "max(_pos) AS _pos, max(_ts) AS _ts "
        f"FROM (SELECT {a_cols}, 1 AS _w, _pos, _ts FROM _cx_dec WHERE _op <> 'd' "
        f"UNION ALL SELECT {b_cols}, -1 AS _w, _pos, _ts FROM _cx_dec WHERE _op IN ('u', 'd')) "
        f"GROUP BY ALL HAVING sum(_w) <> 0"
    ).fetchall()
    same = " AND ".join(f"t.{quote(c)} IS NOT DISTINCT FROM n.{quote(c)}" for c in data_cols)
    wanted = con.execute("SELECT coalesce(sum(-_net), 0) FROM _cx_net WHERE _net < 0").fetchall()[0][0]
    deleted = 0
    if wanted:
        deleted = con.execute(
            f"DELETE FROM {target} WHERE rowid IN (SELECT t._rid FROM (SELECT rowid AS _rid, *, row_number() OVER "
            f"(PARTITION BY {names}) AS _rn FROM {target}) t JOIN _cx_net n ON {same} "
            "WHERE n._net < 0 AND t._rn <= -n._net)"
        ).fetchall()[0][0]
    con.execute(
        f"INSERT INTO {target} ({names}, _cdc_position, _cdc_ts_ms) SELECT {names}, _pos, _ts FROM _cx_net, "
        "range(_net) WHERE _net > 0"
    )
    con.execute("DROP TABLE IF EXISTS _cx_net")
    return int(wanted) - int(deleted)

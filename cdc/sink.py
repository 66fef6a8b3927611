"""The DuckDB sink: applies a batch of change events in one transaction.

Per batch, atomically: current-state replica tables (`replica_<source>.<table>`, created and
evolved from the events), the append-only `cdc.changelog`, dead letters, and the source
positions in `cdc.offsets`. Events at or below a partition's committed position are replays
and are dropped, so at-least-once delivery becomes exactly-once in effect. Inside a batch the
last write per key wins. Everything row-shaped moves as Arrow tables; no statement per row.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from cdc.events import UNAVAILABLE, ChangeEvent, DeadLetter, dumps
from core import warehouse
from core.warehouse import quote, transaction

META_DDL = """
CREATE SCHEMA IF NOT EXISTS cdc;
CREATE TABLE IF NOT EXISTS cdc.changelog (
    source VARCHAR, table_name VARCHAR, op VARCHAR, key JSON, before JSON, after JSON,
    position VARCHAR, partition VARCHAR, ts_ms BIGINT, snapshot VARCHAR, batch_id VARCHAR,
    applied_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS cdc.offsets (
    source VARCHAR, partition VARCHAR, position VARCHAR, resume JSON, snapshot_done BOOLEAN,
    events BIGINT, last_ts_ms BIGINT, updated_at TIMESTAMPTZ, PRIMARY KEY (source, partition)
);
CREATE TABLE IF NOT EXISTS cdc.dead_letter (
    source VARCHAR, table_name VARCHAR, reason VARCHAR, raw VARCHAR, position VARCHAR, partition VARCHAR,
    received_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS cdc.batches (
    batch_id VARCHAR, source VARCHAR, events BIGINT, applied BIGINT, duplicates BIGINT, dead_letters BIGINT,
    max_ts_ms BIGINT, lag_ms BIGINT, committed_at TIMESTAMPTZ, apply_ms DOUBLE
);
"""

META_COLUMNS = {"_cdc_position": "VARCHAR", "_cdc_ts_ms": "BIGINT"}

_ARROW_TYPES: dict[str, pa.DataType] = {
    "BOOLEAN": pa.bool_(),
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "UBIGINT": pa.uint64(),
    "UINTEGER": pa.uint32(),
    "HUGEINT": pa.decimal128(38, 0),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "UUID": pa.string(),
    "BLOB": pa.binary(),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    # information_schema spells some types out
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
    "TIMESTAMP_NS": pa.timestamp("ns"),
    "UTINYINT": pa.uint8(),
    "USMALLINT": pa.uint16(),
}


def arrow_type(duck_type: str) -> pa.DataType:
    if duck_type.startswith("DECIMAL("):
        precision, scale = (int(x) for x in duck_type[8:-1].split(","))
        return pa.decimal128(precision, scale)
    return _ARROW_TYPES.get(duck_type, pa.string())


def infer_type(value: Any) -> str:
    """A DuckDB type for a value that came without a schema."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, dt.datetime):
        return "TIMESTAMPTZ" if value.tzinfo else "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    if isinstance(value, bytes):
        return "BLOB"
    if isinstance(value, dict | list):
        return "JSON"
    return "VARCHAR"


@dataclass(slots=True)
class Offset:
    """Where a reader stands in one partition of a source, committed with the data."""

    source: str
    partition: str
    position: str
    resume: dict[str, Any] | None = None
    snapshot_done: bool = True


@dataclass(slots=True)
class Batch:
    events: list[ChangeEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: list[Offset] = field(default_factory=list)
    reset_sources: list[str] = field(default_factory=list)
    """Sources whose replica is rebuilt from a fresh snapshot starting in this batch."""
    reset_tables: list[tuple[str, str]] = field(default_factory=list)
    """(source, table) pairs resnapshotted in this batch."""


@dataclass(slots=True)
class _Partition:
    """What one batch applied to one (source, partition): one pass over the events serves every use."""

    events: int = 0
    last_ts: int = 0
    highest: str = ""  # highest streaming (non-snapshot) position


def _summarise(applied: list[ChangeEvent]) -> dict[tuple[str, str], _Partition]:
    parts: dict[tuple[str, str], _Partition] = {}
    for event in applied:
        part = parts.get((event.source, event.partition))
        if part is None:
            part = parts[(event.source, event.partition)] = _Partition()
        part.events += 1
        if event.ts_ms > part.last_ts:
            part.last_ts = event.ts_ms
        if event.op != "r" and event.position > part.highest:
            part.highest = event.position
    return parts


@dataclass(slots=True)
class ApplyStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    lag_ms: int | None = None
    """Commit time minus the newest applied event's source timestamp."""


class DuckDBSink:
    """The one writer of the warehouse. Open it, `apply` batches, close it."""

    def __init__(self, path: Path | str, read_only: bool = False) -> None:
        self.path = Path(path)
        self.con = warehouse.connect(self.path, read_only=read_only)
        if not read_only:
            self.con.execute(META_DDL)
        self._columns: dict[tuple[str, str], dict[str, str]] = {}
        self._positions: dict[tuple[str, str], str] = {}
        self.reload_positions()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DuckDBSink:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------ state

    def reload_positions(self) -> None:
        rows = self.con.execute("SELECT source, partition, position FROM cdc.offsets").fetchall()
        self._positions = {(s, p): pos for s, p, pos in rows if pos is not None}

    def offset(self, source: str, partition: str = "") -> dict[str, Any] | None:
        row = self.con.execute(
            "SELECT position, resume, snapshot_done FROM cdc.offsets WHERE source = ? AND partition = ?",
            [source, partition],
        ).fetchall()
        if not row:
            return None
        position, resume, done = row[0]
        return {"position": position, "resume": orjson.loads(resume) if resume else None, "snapshot_done": done}

    def replica_tables(self, source: str) -> list[str]:
        rows = self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1",
            [f"replica_{source}"],
        ).fetchall()
        return [r[0] for r in rows]

    def _table_columns(self, source: str, table: str) -> dict[str, str]:
        cached = self._columns.get((source, table))
        if cached is not None:
            return cached
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? "
            "AND table_name = ? ORDER BY ordinal_position",
            [f"replica_{source}", table],
        ).fetchall()
        columns = {name: kind for name, kind in rows}
        if columns:
            self._columns[(source, table)] = columns
        return columns

    # ------------------------------------------------------------ apply

    def apply(self, batch: Batch) -> ApplyStats:
        """Apply one batch in one transaction; returns what happened."""
        started = time.perf_counter()
        stats = ApplyStats(received=len(batch.events))
        positions = self._positions
        fresh = [
            e
            for e in batch.events
            if e.op == "r" or (last := positions.get((e.source, e.partition))) is None or e.position > last
        ]
        stats.duplicates = len(batch.events) - len(fresh)
        dead = list(batch.dead_letters)
        batch_id = uuid.uuid4().hex[:16]
        now = dt.datetime.now(dt.UTC)
        con = self.con
        try:
            with transaction(con):
                for source in batch.reset_sources:
                    for table in self.replica_tables(source):
                        con.execute(f"DELETE FROM replica_{source}.{quote(table)}")
                    con.execute("DELETE FROM cdc.changelog WHERE source = ? AND op = 'r'", [source])
                for source, table in batch.reset_tables:
                    if table in self.replica_tables(source):
                        con.execute(f"DELETE FROM replica_{source}.{quote(table)}")
                    con.execute(
                        "DELETE FROM cdc.changelog WHERE source = ? AND table_name = ? AND op = 'r'", [source, table]
                    )
                by_table: dict[tuple[str, str], list[ChangeEvent]] = {}
                for event in fresh:
                    by_table.setdefault((event.source, event.table), []).append(event)
                applied: list[ChangeEvent] = []
                for (source, table), events in by_table.items():
                    good, bad = self._apply_table(source, table, events)
                    applied.extend(good)
                    dead.extend(bad)
                stats.applied = len(applied)
                if applied:
                    self._append_changelog(applied, batch_id, now)
                if dead:
                    self._append_dead_letters(dead, now)
                summary = _summarise(applied)
                self._write_offsets(batch, summary, now)
                max_ts = max((p.last_ts for p in summary.values()), default=None)
                stats.dead_letters = len(dead)
                stats.seconds = time.perf_counter() - started
                stats.lag_ms = int(time.time() * 1000) - max_ts if max_ts else None
                con.execute(
                    "INSERT INTO cdc.batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        batch_id,
                        ",".join(sorted({e.source for e in batch.events} | {o.source for o in batch.offsets})),
                        stats.received,
                        stats.applied,
                        stats.duplicates,
                        stats.dead_letters,
                        max_ts,
                        stats.lag_ms,
                        now,
                        stats.seconds * 1000,
                    ],
                )
        except BaseException:
            self._columns.clear()
            raise
        for offset in batch.offsets:
            self._positions[(offset.source, offset.partition)] = offset.position
        for key, part in summary.items():
            if part.highest > self._positions.get(key, ""):
                self._positions[key] = part.highest
        return stats

    def _ensure_table(self, source: str, table: str, events: list[ChangeEvent]) -> dict[str, str]:
        wanted: dict[str, str] = {}
        seen: set[int] = set()
        schemaless = []
        for event in events:
            if not event.columns:
                schemaless.append(event)
            elif id(event.columns) not in seen:  # readers share one dict per table schema
                seen.add(id(event.columns))
                for name, kind in event.columns.items():
                    wanted.setdefault(name, kind)
        for event in schemaless:
            row = event.row or {}
            for name, value in row.items():
                if name not in wanted and value is not None and value != UNAVAILABLE:
                    wanted[name] = infer_type(value)
            for name in row:
                wanted.setdefault(name, "VARCHAR")
        existing = self._table_columns(source, table)
        schema = f"replica_{source}"
        if not existing:
            key_cols = list(events[0].key)
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            cols = [f"{quote(n)} {t}" for n, t in wanted.items()]
            cols += [f"{quote(n)} {t}" for n, t in META_COLUMNS.items()]
            pk = ", ".join(quote(k) for k in key_cols)
            self.con.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.{quote(table)} ({', '.join(cols)}, PRIMARY KEY ({pk}))"
            )
            self._columns.pop((source, table), None)
            return self._table_columns(source, table)
        added = False
        for name, kind in wanted.items():
            if name not in existing:
                self.con.execute(f"ALTER TABLE {schema}.{quote(table)} ADD COLUMN {quote(name)} {kind}")
                added = True
        if added:
            self._columns.pop((source, table), None)
            return self._table_columns(source, table)
        return existing

    def _apply_table(
        self, source: str, table: str, events: list[ChangeEvent]
    ) -> tuple[list[ChangeEvent], list[DeadLetter]]:
        columns = self._ensure_table(source, table, events)
        key_cols = list(events[0].key)
        dead: list[DeadLetter] = []
        good: list[ChangeEvent] = []
        for event in events:
            if list(event.key) != key_cols:
                dead.append(
                    DeadLetter(
                        source,
                        table,
                        f"key columns {list(event.key)} differ from {key_cols}",
                        dumps({"key": event.key, "after": event.after, "before": event.before}),
                        event.position,
                        event.partition,
                    )
                )
            else:
                good.append(event)
        final: dict[tuple[Any, ...], ChangeEvent] = {}
        for event in good:
            final[tuple(event.key[k] for k in key_cols)] = event
        self._resolve_unavailable(source, table, key_cols, final)
        data_cols = [c for c in columns if c not in META_COLUMNS]
        try:
            self._write_rows(source, table, key_cols, data_cols, columns, final)
        except (
            pa.ArrowException,
            duckdb.ConversionException,
            duckdb.ConstraintException,
            duckdb.InvalidInputException,
            TypeError,
            ValueError,
        ):
            # Find the events that do not fit, dead-letter them, apply the rest.
            keep: dict[tuple[Any, ...], ChangeEvent] = {}
            for key, event in final.items():
                try:
                    self._rows_table(data_cols, columns, {key: event})
                    keep[key] = event
                except (pa.ArrowException, TypeError, ValueError) as exc:
                    dead.append(
                        DeadLetter(
                            source,
                            table,
                            f"value does not fit the replica: {exc}",
                            dumps({"key": event.key, "after": event.after}),
                            event.position,
                            event.partition,
                        )
                    )
            bad_keys = {k for k in final if k not in keep}
            good = [e for e in good if tuple(e.key[k] for k in key_cols) not in bad_keys]
            self._write_rows(source, table, key_cols, data_cols, columns, keep)
        return good, dead

    def _resolve_unavailable(
        self, source: str, table: str, key_cols: list[str], final: dict[tuple[Any, ...], ChangeEvent]
    ) -> None:
        """Unchanged TOAST values keep their previous value: from the before image, else the replica."""
        missing: dict[tuple[Any, ...], list[str]] = {}
        for key, event in final.items():
            if event.op == "d" or event.after is None or UNAVAILABLE not in event.after.values():
                continue
            gaps = [c for c, v in event.after.items() if v == UNAVAILABLE]
            if not gaps:
                continue
            after = dict(event.after)
            still = []
            for col in gaps:
                prior = (event.before or {}).get(col)
                if prior is not None and prior != UNAVAILABLE:
                    after[col] = prior
                else:
                    still.append(col)
            event.after = after
            if still:
                missing[key] = still
        if not missing:
            return
        where = " AND ".join(f"{quote(k)} = ?" for k in key_cols)
        for key, cols in missing.items():
            selected = ", ".join(quote(c) for c in cols)
            row = self.con.execute(
                f"SELECT {selected} FROM replica_{source}.{quote(table)} WHERE {where}", list(key)
            ).fetchall()
            event = final[key]
            assert event.after is not None
            after = dict(event.after)
            for i, col in enumerate(cols):
                after[col] = row[0][i] if row else None
            event.after = after

    @staticmethod
    def _rows_table(
        data_cols: list[str], columns: dict[str, str], final: dict[tuple[Any, ...], ChangeEvent]
    ) -> pa.Table:
        upserts = [e for e in final.values() if e.op != "d"]
        arrays = {}
        for col in data_cols:
            arrays[col] = pa.array([(e.after or {}).get(col) for e in upserts], type=arrow_type(columns[col]))
        arrays["_cdc_position"] = pa.array([e.position for e in upserts], type=pa.string())
        arrays["_cdc_ts_ms"] = pa.array([e.ts_ms for e in upserts], type=pa.int64())
        return pa.table(arrays)

    def _write_rows(
        self,
        source: str,
        table: str,
        key_cols: list[str],
        data_cols: list[str],
        columns: dict[str, str],
        final: dict[tuple[Any, ...], ChangeEvent],
    ) -> None:
        if not final:
            return
        target = f"replica_{source}.{quote(table)}"
        keys = pa.table(
            {
                k: pa.array([key[i] for key in final], type=arrow_type(columns.get(k, "VARCHAR")))
                for i, k in enumerate(key_cols)
            }
        )
        rows = self._rows_table(data_cols, columns, final)
        self.con.register("_cx_keys", keys)
        self.con.register("_cx_rows", rows)
        try:
            join = " AND ".join(f"t.{quote(k)} = k.{quote(k)}" for k in key_cols)
            self.con.execute(f"DELETE FROM {target} t USING _cx_keys k WHERE {join}")
            if rows.num_rows:
                names = ", ".join(quote(c) for c in rows.column_names)
                self.con.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM _cx_rows")
        finally:
            self.con.unregister("_cx_keys")
            self.con.unregister("_cx_rows")

    def _append_changelog(self, events: Iterable[ChangeEvent], batch_id: str, now: dt.datetime) -> None:
        events = list(events)
        table = pa.table(
            {
                "source": pa.array([e.source for e in events], pa.string()),
                "table_name": pa.array([e.table for e in events], pa.string()),
                "op": pa.array([e.op for e in events], pa.string()),
                "key": pa.array([dumps(e.key) for e in events], pa.string()),
                "before": pa.array([dumps(e.before) if e.before is not None else None for e in events], pa.string()),
                "after": pa.array([dumps(e.after) if e.after is not None else None for e in events], pa.string()),
                "position": pa.array([e.position for e in events], pa.string()),
                "partition": pa.array([e.partition for e in events], pa.string()),
                "ts_ms": pa.array([e.ts_ms for e in events], pa.int64()),
                "snapshot": pa.array([e.snapshot for e in events], pa.string()),
            }
        )
        self.con.register("_cx_log", table)
        try:
            self.con.execute(
                "INSERT INTO cdc.changelog SELECT source, table_name, op, key, before, after, position, partition, "
                "ts_ms, snapshot, ?, ? FROM _cx_log",
                [batch_id, now],
            )
        finally:
            self.con.unregister("_cx_log")

    def _append_dead_letters(self, dead: list[DeadLetter], now: dt.datetime) -> None:
        table = pa.table(
            {
                "source": [d.source for d in dead],
                "table_name": [d.table for d in dead],
                "reason": [d.reason for d in dead],
                "raw": [d.raw for d in dead],
                "position": [d.position for d in dead],
                "partition": [d.partition for d in dead],
            }
        )
        self.con.register("_cx_dead", table)
        try:
            self.con.execute(
                "INSERT INTO cdc.dead_letter SELECT source, table_name, reason, raw, position, "
                "partition, ? FROM _cx_dead",
                [now],
            )
        finally:
            self.con.unregister("_cx_dead")

    def _write_offsets(self, batch: Batch, summary: dict[tuple[str, str], _Partition], now: dt.datetime) -> None:
        for offset in batch.offsets:
            key = (offset.source, offset.partition)
            self.con.execute(
                "INSERT INTO cdc.offsets VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, partition) DO UPDATE "
                "SET position = excluded.position, resume = excluded.resume, "
                "snapshot_done = excluded.snapshot_done, events = cdc.offsets.events + excluded.events, "
                "last_ts_ms = greatest(cdc.offsets.last_ts_ms, excluded.last_ts_ms), updated_at = excluded.updated_at",
                [
                    offset.source,
                    offset.partition,
                    offset.position,
                    dumps(offset.resume) if offset.resume is not None else None,
                    offset.snapshot_done,
                    summary[key].events if key in summary else 0,
                    summary[key].last_ts if key in summary else None,
                    now,
                ],
            )

"""The DuckDB sink: applies a batch of change events in one transaction.

Per batch, atomically: current-state replica tables (`replica_<source>.<table>`, created and
evolved from the events), the append-only `cdc.changelog`, dead letters, and the source
positions in `cdc.offsets`. Events at or below a partition's committed position are replays
and are dropped, so at-least-once delivery becomes exactly-once in effect. Inside a batch the
last write per key wins. Everything row-shaped moves as Arrow tables; no statement per row.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cdc.events import ChangeEvent, DeadLetter, dumps, field_type
from cdc.frame import EventFrame
from cdc.replica import LogTo, apply_frame, apply_table
from cdc.schema import SchemaChange, widens
from cdc.types import MACROS, ColumnType, connect_schema, infer, is_unavailable, of_replica
from core import warehouse
from core.errors import TerminalError
from core.warehouse import quote, transaction

log = logging.getLogger("coexist.cdc.sink")


class DataConflict(TerminalError):
    """A batch contradicts the replica (a duplicate key): not a warehouse fault; a re-snapshot repairs it."""


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
CREATE TABLE IF NOT EXISTS cdc.schema_changes (
    source VARCHAR, table_name VARCHAR, kind VARCHAR, ddl VARCHAR, detail JSON, position VARCHAR,
    applied_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS cdc.held (
    source VARCHAR, txid VARCHAR, seq BIGINT, event JSON
);
CREATE TABLE IF NOT EXISTS cdc.table_stats (
    source VARCHAR, table_name VARCHAR, events BIGINT, dead_letters BIGINT, updated_at TIMESTAMPTZ,
    PRIMARY KEY (source, table_name)
);
CREATE TABLE IF NOT EXISTS cdc.batches (
    batch_id VARCHAR, source VARCHAR, events BIGINT, applied BIGINT, duplicates BIGINT, dead_letters BIGINT,
    max_ts_ms BIGINT, lag_ms BIGINT, committed_at TIMESTAMPTZ, apply_ms DOUBLE
);
"""

META_COLUMNS = {"_cdc_position": "VARCHAR", "_cdc_ts_ms": "BIGINT"}

STATUS_TABLES = {
    "offsets": "SELECT * FROM cdc.offsets",
    "table_stats": "SELECT * FROM cdc.table_stats",
    "batches": "SELECT * FROM cdc.batches ORDER BY committed_at DESC LIMIT 200",
    "schema_changes": "SELECT * FROM cdc.schema_changes ORDER BY applied_at DESC LIMIT 100",
}
"""What `cdc status` reads; copied to a small file of its own while capture holds the warehouse."""


def status_path(warehouse_path: Path) -> Path:
    return warehouse_path.with_name(warehouse_path.stem + ".cdc-status.duckdb")


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
    frames: list[EventFrame] = field(default_factory=list)
    """Changes as Arrow columns, a frame per table and row schema, in order (a bulk decoder's output):
    applied without a Python object per event. A table's changes in one batch are either events or
    frames, never both."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: list[Offset] = field(default_factory=list)
    reset_sources: list[str] = field(default_factory=list)
    """Sources whose replica is rebuilt from a fresh snapshot starting in this batch."""
    reset_tables: list[tuple[str, str]] = field(default_factory=list)
    """(source, table) pairs whose re-snapshot starts in this batch: their staging tables start empty."""
    staged: bool = False
    """A re-snapshot batch: its events go to staging tables (`cdc_staging`), not to the replica."""
    swap_tables: list[tuple[str, str]] = field(default_factory=list)
    """Re-snapshots that loaded completely: each staging table replaces its replica table here."""
    discard_tables: list[tuple[str, str]] = field(default_factory=list)
    """Re-snapshots that did not: their staging tables are dropped and the replica stays as it was."""
    schema_changes: list[SchemaChange] = field(default_factory=list)
    """DDL, applied after this batch's events (a reader ends a batch at a DDL statement)."""
    held: list[ChangeEvent] = field(default_factory=list)
    """Changes of source transactions that have not ended yet: kept in `cdc.held` (on disk, however
    large the transaction), applied when it ends, so a transaction is visible all at once."""
    held_frames: list[EventFrame] = field(default_factory=list)
    """Changes of the source transaction `held_txid`, not ended yet, as frames: held like `held`."""
    held_txid: str = ""
    release: list[str] = field(default_factory=list)
    """Transactions that end in this batch: their held changes apply first, in the same commit."""
    mark_tables: list[tuple[str, str]] = field(default_factory=list)
    """A re-snapshot of these tables is about to begin while capture goes on: from here until the
    swap, the keys the stream changes are collected, and at the swap those rows come from the replica."""


STAGING = "cdc_staging"


def staging_table(source: str, table: str) -> str:
    return f"{STAGING}.{quote(source + '__' + table)}"


def touched_table(source: str, table: str) -> str:
    return f"{STAGING}.{quote(source + '__' + table + '__touched')}"


@dataclass(slots=True)
class _Partition:
    """What one batch applied to one (source, partition): one pass over the events serves every use."""

    events: int = 0
    last_ts: int = 0
    highest: str = ""  # highest streaming (non-snapshot) position


def _merge(into: dict[tuple[str, str], _Partition], more: dict[tuple[str, str], _Partition]) -> None:
    for key, part in more.items():
        mine = into.setdefault(key, _Partition())
        mine.events += part.events
        mine.last_ts = max(mine.last_ts, part.last_ts)
        mine.highest = max(mine.highest, part.highest)


def _columns_document(columns: dict[str, ColumnType | str]) -> dict[str, Any]:
    """A row schema as Kafka Connect field schemas (what `field_type` reads back)."""
    return {n: connect_schema(k if isinstance(k, ColumnType) else of_replica(k)) for n, k in columns.items()}


def _event_document(event: ChangeEvent) -> dict[str, Any]:
    """A change as `cdc.held` keeps it."""
    columns = _columns_document(event.columns)
    return {
        "source": event.source,
        "table": event.table,
        "op": event.op,
        "key": event.key,
        "before": event.before,
        "after": event.after,
        "position": event.position,
        "ts_ms": event.ts_ms,
        "partition": event.partition,
        "source_info": event.source_info,
        "transaction": event.transaction,
        "columns": columns,
    }


def _event_from_document(doc: dict[str, Any], plans: dict[str, dict[str, ColumnType | str]]) -> ChangeEvent:
    """A held change back; events of one schema share one columns dict (the sink groups by identity)."""
    schema_text = dumps(doc["columns"])
    columns = plans.get(schema_text)
    if columns is None:
        columns = plans[schema_text] = {n: field_type(f | {"field": n}) for n, f in doc["columns"].items()}
    return ChangeEvent(
        doc["source"],
        doc["table"],
        doc["op"],
        doc["key"],
        doc["before"],
        doc["after"],
        doc["position"],
        doc["ts_ms"],
        doc["partition"],
        None,
        doc["source_info"],
        doc["transaction"],
        columns,
    )


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


def _summarise_frame(frame: EventFrame) -> dict[tuple[str, str], _Partition]:
    """`_summarise` over a frame's columns: one aggregate per partition."""
    data = frame.data
    streaming = pc.if_else(pc.equal(data["op"], "r"), pa.scalar(None, pa.string()), data["position"])
    grouped = (
        pa.table({"partition": data["partition"], "ts": data["ts_ms"], "pos": streaming})
        .group_by("partition")
        .aggregate([("ts", "count"), ("ts", "max"), ("pos", "max")])
    )
    return {
        (frame.source, row["partition"] or ""): _Partition(row["ts_count"], row["ts_max"] or 0, row["pos_max"] or "")
        for row in grouped.to_pylist()
    }


@dataclass(slots=True)
class ApplyStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    lag_ms: int | None = None
    """Commit time minus the newest applied event's source timestamp."""
    reshaped: dict[str, Reshape] = field(default_factory=dict)
    """Tables whose shape changed in this batch (seen in the events), for the reader to backfill."""


@dataclass(slots=True)
class Reshape:
    """A table's shape change as the events showed it, against the replica table."""

    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)
    """Types that could not be widened in place: the table is rebuilt by a re-snapshot."""
    widened: list[str] = field(default_factory=list)
    key_changed: bool = False

    @property
    def needs_rebuild(self) -> bool:
        return self.key_changed or bool(self.retyped) or bool(self.added and self.dropped)

    @property
    def may_need_backfill(self) -> bool:
        """Old rows may lack values the log will not carry (the reader checks the source for added columns)."""
        return self.needs_rebuild or bool(self.added)


class DuckDBSink:
    """The one writer of the warehouse. Open it, `apply` batches, close it."""

    def __init__(self, path: Path | str, read_only: bool = False) -> None:
        self.path = Path(path)
        self.con = warehouse.connect(self.path, read_only=read_only, wait_seconds=10.0)
        if not read_only:
            self.con.execute(META_DDL)
            self._backfill_table_stats()
        self.con.execute(MACROS)
        self._status_written = 0.0
        self._status_dirty = False
        self._type_names: dict[str, str] = {}
        self._kept: dict[tuple[str, str], set[str]] = {}
        self._marked: set[tuple[str, str]] = set()
        """Re-snapshots in progress whose changed keys are being collected (`touched_table`)."""
        self.drop_columns = True
        """A column the source dropped is dropped from the replica too (`cdc.dropped_columns`)."""
        self._keys: dict[tuple[str, str], list[str]] = {}
        self._reshaped: dict[str, Reshape] = {}
        self._staged_dead: dict[tuple[str, str], int] = {}
        self._columns: dict[tuple[str, str], dict[str, str]] = {}
        self._positions: dict[tuple[str, str], str] = {}
        self.reload_positions()

    def close(self) -> None:
        if self._status_written:
            self.publish_status(force=True)
        self.con.close()

    def _backfill_table_stats(self) -> None:
        """Warehouses from before `cdc.table_stats`: count once from the changelog and dead letters."""
        if self.con.execute("SELECT count(*) FROM cdc.table_stats").fetchall()[0][0]:
            return
        self.con.execute(
            "INSERT INTO cdc.table_stats SELECT source, table_name, sum(events), sum(dead), now() FROM ("
            "SELECT source, table_name, count(*) AS events, 0 AS dead FROM cdc.changelog GROUP BY ALL UNION ALL "
            "SELECT source, coalesce(table_name, '?'), 0, count(*) FROM cdc.dead_letter GROUP BY ALL) GROUP BY ALL"
        )

    def publish_status(self, force: bool = False, every: float = 1.0) -> None:
        """Copy what `cdc status` reads to its own file (atomically), at most every `every` seconds,
        so status works while this process holds the warehouse's one write lock."""
        if not force and time.monotonic() - self._status_written < every:
            self._status_dirty = True  # the capture's loop publishes it once the second is over
            return
        target = status_path(self.path)
        tmp = target.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        self.con.execute(f"ATTACH {warehouse.literal(str(tmp))} AS _cx_status")
        try:
            self.con.execute("CREATE SCHEMA _cx_status.cdc")
            for name, select in STATUS_TABLES.items():
                self.con.execute(f"CREATE TABLE _cx_status.cdc.{name} AS {select}")
        finally:
            self.con.execute("DETACH _cx_status")
        os.replace(tmp, target)
        self._status_written = time.monotonic()
        self._status_dirty = False

    def flush_status(self) -> None:
        """Publish what an earlier `publish_status` held back (called when capture is quiet)."""
        if self._status_dirty:
            self.publish_status()

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

    def _table_columns(self, schema: str, table: str) -> dict[str, str]:
        cached = self._columns.get((schema, table))
        if cached is not None:
            return cached
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? "
            "AND table_name = ? ORDER BY ordinal_position",
            [schema, table],
        ).fetchall()
        columns = {name: kind for name, kind in rows}
        if columns:
            self._columns[(schema, table)] = columns
        return columns

    def _fresh_staging(self, source: str, table: str) -> None:
        """No staging table: the first staged batch creates it in the source's current shape and key."""
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGING}")
        self.con.execute(f"DROP TABLE IF EXISTS {staging_table(source, table)}")
        self._columns.pop((STAGING, f"{source}__{table}"), None)
        self._staged_dead[(source, table)] = 0

    def _mark(self, source: str, table: str) -> None:
        """Collect, until the swap, the keys the stream changes in `table` (keyless tables: none)."""
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGING}")
        touched = touched_table(source, table)
        self.con.execute(f"DROP TABLE IF EXISTS {touched}")
        self._marked.discard((source, table))
        key = self._primary_key(f"replica_{source}", table)
        if key:
            cols = ", ".join(quote(k) for k in key)
            self.con.execute(f"CREATE TABLE {touched} AS SELECT {cols} FROM replica_{source}.{quote(table)} LIMIT 0")
            self._marked.add((source, table))

    def _primary_key(self, schema: str, table: str) -> list[str]:
        if (schema, table) in self._keys:
            return self._keys[(schema, table)]
        rows = self.con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() WHERE schema_name = ? AND table_name = ? "
            "AND constraint_type = 'PRIMARY KEY'",
            [schema, table],
        ).fetchall()
        self._keys[(schema, table)] = list(rows[0][0]) if rows else []
        return self._keys[(schema, table)]

    def _apply_schema_change(self, change: SchemaChange, now: dt.datetime) -> None:
        """One DDL statement's effect on the replica, recorded in `cdc.schema_changes`."""
        schema, table = f"replica_{change.source}", change.table
        target = f"{schema}.{quote(table)}"
        existing = self._table_columns(schema, table)
        detail: dict[str, Any] = {}
        if change.kind == "truncate" and existing:
            detail["rows_deleted"] = self.con.execute(f"DELETE FROM {target}").fetchall()[0][0]
        elif change.kind == "drop_table" and existing:
            if change.archive_tables:
                archive = f"{schema}_archive"
                name = f"{table}__{now:%Y%m%d%H%M%S}"
                self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {archive}")
                self.con.execute(f"CREATE TABLE {archive}.{quote(name)} AS SELECT * FROM {target}")
                detail["archived_as"] = f"{archive}.{name}"
            self.con.execute(f"DROP TABLE {target}")
        elif change.kind == "rename_table" and existing and change.new_name:
            if self._table_columns(schema, change.new_name):
                self.con.execute(f"DROP TABLE {schema}.{quote(change.new_name)}")
            self.con.execute(f"ALTER TABLE {target} RENAME TO {quote(change.new_name)}")
            detail["renamed_to"] = change.new_name
        elif change.kind == "alter" and existing:
            key = self._primary_key(schema, table)
            detail = self._alter(change, target, existing)
            if change.check_backfill:
                self._reshaped[table] = Reshape(
                    added=detail.get("added", []),
                    dropped=detail.get("dropped", []),
                    retyped=detail.get("rebuild", []),
                    widened=list(detail.get("widened", {})),
                    key_changed=change.key is not None and bool(key) and change.key != key,
                )
        self._columns.clear()
        self._keys.clear()
        self.con.execute(
            "INSERT INTO cdc.schema_changes VALUES (?, ?, ?, ?, ?, ?, ?)",
            [change.source, table, change.kind, change.ddl, dumps(detail), change.position, now],
        )

    def _flag_backfills(self, batch: Batch) -> None:
        """Tables that may need a re-snapshot are recorded in the position committed with this batch,
        so a crash before the reader has taken it resumes with it (`resume.resnapshot`)."""
        tables = sorted(t for t, r in self._reshaped.items() if r.may_need_backfill)
        if not tables:
            return
        for offset in batch.offsets:
            changed = [e.table for e in batch.events if e.source == offset.source]
            changed += [f.table for f in batch.frames if f.source == offset.source]
            changed += [c.table for c in batch.schema_changes if c.source == offset.source]
            if offset.partition == "" and any(t in tables for t in changed):
                pending = set((offset.resume or {}).get("resnapshot") or []) | set(tables)
                offset.resume = (offset.resume or {}) | {"resnapshot": sorted(pending)}

    def _record_reshape(self, source: str, table: str, reshape: Reshape, now: dt.datetime) -> None:
        detail = {k: v for k, v in asdict(reshape).items() if v}
        self.con.execute(
            "INSERT INTO cdc.schema_changes VALUES (?, ?, 'alter', '-- seen in the stream', ?, NULL, ?)",
            [source, table, dumps(detail), now],
        )

    def _alter(self, change: SchemaChange, target: str, existing: dict[str, str]) -> dict[str, Any]:
        """Renames, added and dropped columns and widened types in place; anything else waits for the
        re-snapshot that follows the change (which rebuilds the table in the new shape)."""
        detail: dict[str, Any] = {"added": [], "dropped": [], "renamed": {}, "widened": {}, "rebuild": []}
        for old, new in change.renamed.items():
            if old in existing and new not in existing:
                self.con.execute(f"ALTER TABLE {target} RENAME COLUMN {quote(old)} TO {quote(new)}")
                existing = {(new if c == old else c): t for c, t in existing.items()}
                detail["renamed"][old] = new
        for name, kind in (change.columns or {}).items():
            if name not in existing:
                self.con.execute(f"ALTER TABLE {target} ADD COLUMN {quote(name)} {kind.replica}")
                detail["added"].append(name)
            elif existing[name] != kind.replica:
                if widens(existing[name], kind.replica) and name not in (change.key or []):
                    self.con.execute(f"ALTER TABLE {target} ALTER COLUMN {quote(name)} SET DATA TYPE {kind.replica}")
                    detail["widened"][name] = kind.replica
                else:
                    detail["rebuild"].append(name)
        if change.columns is not None:
            for name in existing:
                if name not in change.columns and name not in META_COLUMNS and change.drop_columns:
                    self.con.execute(f"ALTER TABLE {target} DROP COLUMN {quote(name)}")
                    detail["dropped"].append(name)
        return {k: v for k, v in detail.items() if v}

    def _swap(self, source: str, table: str, batch_id: str, now: dt.datetime) -> None:
        """The staged re-snapshot becomes the replica table, in the batch's transaction; its rows are
        logged as snapshot reads in place of the previous snapshot's."""
        if self._staged_dead.pop((source, table), 0):
            # Rows of the re-snapshot did not decode (dead letters say which): the replica stays as it was.
            self.con.execute(f"DROP TABLE IF EXISTS {staging_table(source, table)}")
            self.con.execute(f"DROP TABLE IF EXISTS {touched_table(source, table)}")
            self._marked.discard((source, table))
            log.warning("re-snapshot of %s.%s not swapped in: rows were dead-lettered", source, table)
            return
        staged = self._table_columns(STAGING, f"{source}__{table}")
        target = f"replica_{source}.{quote(table)}"
        existing = self._table_columns(f"replica_{source}", table)
        self.con.execute("DELETE FROM cdc.changelog WHERE source = ? AND table_name = ? AND op = 'r'", [source, table])
        if not staged:  # nothing was staged: the source table is empty
            if existing:
                self.con.execute(f"DELETE FROM {target}")
            return
        key = self._primary_key(STAGING, f"{source}__{table}")
        touched = touched_table(source, table)
        if (source, table) in self._marked:
            # Rows the stream changed while the re-snapshot loaded: the replica holds them as of the
            # stream (later changes still to come apply over them), the snapshot as of its start.
            keys = self._primary_key(f"replica_{source}", table)
            if keys == key and existing == staged:
                join = " AND ".join(f"s.{quote(k)} = t.{quote(k)}" for k in keys)
                self.con.execute(f"DELETE FROM {staging_table(source, table)} s USING {touched} t WHERE {join}")
                self.con.execute(
                    f"INSERT INTO {staging_table(source, table)} BY NAME SELECT * FROM {target} s "
                    f"WHERE EXISTS (SELECT 1 FROM {touched} t WHERE {join})"
                )
            self.con.execute(f"DROP TABLE {touched}")
            self._marked.discard((source, table))
        if existing != staged or self._primary_key(f"replica_{source}", table) != key:
            # The table's shape or key changed: rebuilt in the source's current shape.
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS replica_{source}")
            self.con.execute(f"DROP TABLE IF EXISTS {target}")
            cols = ", ".join(f"{quote(n)} {t}" for n, t in staged.items())
            pk = f", PRIMARY KEY ({', '.join(quote(k) for k in key)})" if key else ""
            self.con.execute(f"CREATE TABLE {target} ({cols}{pk})")
        else:
            self.con.execute(f"DELETE FROM {target}")
        self.con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {staging_table(source, table)}")
        data = [c for c in staged if c not in META_COLUMNS]
        image = "CAST(to_json(struct_pack(" + ", ".join(f"{quote(c)} := {quote(c)}" for c in data) + ")) AS VARCHAR)"
        key_image = (
            "CAST(to_json(struct_pack(" + ", ".join(f"{quote(c)} := {quote(c)}" for c in key) + ")) AS VARCHAR)"
            if key
            else image
        )
        self.con.execute(
            f"INSERT INTO cdc.changelog SELECT ?, ?, 'r', {key_image}, NULL, {image}, _cdc_position, '', _cdc_ts_ms, "
            f"'resnapshot', ?, ? FROM {staging_table(source, table)}",
            [source, table, batch_id, now],
        )
        self.con.execute(f"DROP TABLE {staging_table(source, table)}")
        self._columns.pop((f"replica_{source}", table), None)
        self._columns.pop((STAGING, f"{source}__{table}"), None)
        self._keys.pop((f"replica_{source}", table), None)

    # ------------------------------------------------------------ apply

    def apply(self, batch: Batch) -> ApplyStats:
        """Apply one batch in one transaction; returns what happened."""
        started = time.perf_counter()
        framed = sum(len(f) for f in batch.frames)
        stats = ApplyStats(received=len(batch.events) + framed)
        positions = self._positions
        fresh = [
            e
            for e in batch.events
            if e.op == "r" or (last := positions.get((e.source, e.partition))) is None or e.position > last
        ]
        fresh_frames = [f for f in (self._fresh(frame) for frame in batch.frames) if len(f)]
        stats.duplicates = len(batch.events) - len(fresh) + framed - sum(len(f) for f in fresh_frames)
        self._reshaped = {}
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
                for source, table in batch.mark_tables:
                    self._mark(source, table)
                for source, table in batch.reset_tables:
                    self._fresh_staging(source, table)
                summary: dict[tuple[str, str], _Partition] = {}
                released = 0
                for txid in batch.release:
                    for chunk in self._held_chunks(txid):
                        done, bad = self._apply_events(chunk, False, batch_id, now)
                        released += len(done)
                        dead.extend(bad)
                        _merge(summary, _summarise(done))
                        self._count(done, [], now)
                    con.execute("DELETE FROM cdc.held WHERE txid = ?", [txid])
                fresh_held = [
                    e for e in batch.held if (p := positions.get((e.source, e.partition))) is None or e.position > p
                ]
                if fresh_held:
                    self._hold(fresh_held)
                for frame in batch.held_frames:
                    if len(kept := self._fresh(frame)):
                        self._hold_frame(kept, batch.held_txid)
                applied, bad = self._apply_events(fresh, batch.staged, batch_id, now)
                dead.extend(bad)
                done_frames, also_applied, bad = self._apply_frames(fresh_frames, batch.staged, batch_id, now)
                dead.extend(bad)
                applied += also_applied
                stats.applied = len(applied) + released + sum(len(f) for f in done_frames)
                explicit = {c.table for c in batch.schema_changes}
                for table, reshape in self._reshaped.items():
                    source = next(
                        (e.source for e in fresh if e.table == table),
                        next((f.source for f in fresh_frames if f.table == table), ""),
                    )
                    if table not in explicit:
                        self._record_reshape(source, table, reshape, now)
                for change in batch.schema_changes:
                    last_done = positions.get((change.source, ""))
                    if not (change.position and last_done is not None and change.position <= last_done):  # replay
                        self._apply_schema_change(change, now)
                for source, table in batch.swap_tables:
                    self._swap(source, table, batch_id, now)
                for source, table in batch.discard_tables:
                    con.execute(f"DROP TABLE IF EXISTS {staging_table(source, table)}")
                    con.execute(f"DROP TABLE IF EXISTS {touched_table(source, table)}")
                    self._marked.discard((source, table))
                if dead:
                    self._append_dead_letters(dead, now)
                    if batch.staged:
                        for letter in dead:
                            key = (letter.source, letter.table or "")
                            self._staged_dead[key] = self._staged_dead.get(key, 0) + 1
                self._count(applied if not batch.staged else [], dead, now, done_frames if not batch.staged else [])
                _merge(summary, _summarise(applied))
                for frame in done_frames:
                    _merge(summary, _summarise_frame(frame))
                self._flag_backfills(batch)
                self._write_offsets(batch, summary, now)
                max_ts = max((p.last_ts for p in summary.values()), default=None)
                stats.dead_letters = len(dead)
                stats.seconds = time.perf_counter() - started
                stats.lag_ms = int(time.time() * 1000) - max_ts if max_ts else None
                con.execute(
                    "INSERT INTO cdc.batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        batch_id,
                        ",".join(
                            sorted(
                                {e.source for e in batch.events}
                                | {f.source for f in batch.frames}
                                | {o.source for o in batch.offsets}
                            )
                        ),
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
            self._keys.clear()
            raise
        for offset in batch.offsets:
            key = (offset.source, offset.partition)
            if offset.source in batch.reset_sources or offset.position > self._positions.get(key, ""):
                self._positions[key] = offset.position
        for key, part in summary.items():
            if part.highest > self._positions.get(key, ""):
                self._positions[key] = part.highest
        self.publish_status()
        stats.reshaped = self._reshaped
        return stats

    def _apply_events(
        self, events: list[ChangeEvent], staged: bool, batch_id: str, now: dt.datetime
    ) -> tuple[list[ChangeEvent], list[DeadLetter]]:
        """Events of any tables, in order: each table's share applied set-based, the changelog written."""
        by_table: dict[tuple[str, str], list[ChangeEvent]] = {}
        for event in events:
            by_table.setdefault((event.source, event.table), []).append(event)
        applied: list[ChangeEvent] = []
        dead: list[DeadLetter] = []
        for (source, table), mine in by_table.items():
            # A re-snapshot is logged when it is swapped in, not as it is staged.
            log = None if staged else LogTo(source, table, batch_id, now)
            good, bad = self._apply_table(source, table, mine, staged, log)
            applied.extend(good)
            dead.extend(bad)
        return applied, dead

    def _fresh(self, frame: EventFrame) -> EventFrame:
        """The frame without replays: snapshot reads always, changes above the committed position."""
        data = frame.data
        parts = data["partition"].unique().to_pylist()
        keep = None
        for part in parts:
            last = self._positions.get((frame.source, part or ""))
            mine = pc.equal(pc.fill_null(data["partition"], ""), part or "")
            ok = (
                mine
                if last is None
                else pc.and_(mine, pc.or_(pc.equal(data["op"], "r"), pc.greater(data["position"], last)))
            )
            keep = ok if keep is None else pc.or_(keep, ok)
        return frame if keep is None or pc.all(keep).as_py() else frame.filter(keep)

    def _apply_frames(
        self, frames: list[EventFrame], staged: bool, batch_id: str, now: dt.datetime
    ) -> tuple[list[EventFrame], list[ChangeEvent], list[DeadLetter]]:
        """Frames set-based where they can be; a frame that needs per-event handling (a key that differs
        from the replica's, unchanged-TOAST placeholders, a column decoded in Python, no schema) goes
        through the events path. Returns the applied frames, the events applied that way, dead letters."""
        done: list[EventFrame] = []
        applied: list[ChangeEvent] = []
        dead: list[DeadLetter] = []
        for frame in frames:
            log = None if staged else LogTo(frame.source, frame.table, batch_id, now)
            result = self._apply_frame(frame, staged, log)
            if result is None:
                good, bad = self._apply_events(frame.to_events(), staged, batch_id, now)
                applied.extend(good)
                dead.extend(bad)
                continue
            kept, bad = result
            dead.extend(bad)
            done.append(kept)
        return done, applied, dead

    def _apply_frame(
        self, frame: EventFrame, staged: bool, log: LogTo | None
    ) -> tuple[EventFrame, list[DeadLetter]] | None:
        """One frame set-based, or None when it needs the events path."""
        if not frame.columns or pc.any(pc.equal(frame.data["op"], "t")).as_py():
            return None
        wanted = {n: k if isinstance(k, ColumnType) else of_replica(k) for n, k in frame.columns.items()}
        if any(k.prepare is not None for k in wanted.values()) or frame.has_placeholders():
            return None
        schema, name = (
            (STAGING, f"{frame.source}__{frame.table}") if staged else (f"replica_{frame.source}", frame.table)
        )
        replica_key = self._primary_key(schema, name)
        if (replica_key and frame.key_columns != replica_key) or (
            not replica_key and self._table_columns(schema, name) and frame.key_columns
        ):
            return None
        columns = self._ensure_table(schema, name, frame.key_columns, True, [], wanted)
        key_cols = self._primary_key(schema, name) or frame.key_columns
        if key_cols != frame.key_columns and frame.key_columns:
            return None
        touched = (
            touched_table(frame.source, frame.table)
            if not staged and (frame.source, frame.table) in self._marked
            else None
        )
        try:
            seqs, bad = apply_frame(
                self.con, f"{schema}.{quote(name)}", columns, wanted, key_cols, frame.data, touched, log
            )
        except duckdb.ConstraintException as exc:
            raise DataConflict(_conflict(frame.source, frame.table, exc)) from None
        dead = [self._frame_dead(frame, seq, reason) for seq, reason in bad]
        data = frame.data if len(seqs) == len(frame) else frame.data.take(seqs)  # seqs are ascending and distinct
        kept = EventFrame(frame.source, frame.table, frame.columns, frame.key_columns, data, frame.checked)
        return kept, dead

    @staticmethod
    def _frame_dead(frame: EventFrame, seq: int, reason: str) -> DeadLetter:
        if seq < 0:
            last = frame.data.slice(frame.data.num_rows - 1).to_pylist()[0]
            return DeadLetter(frame.source, frame.table, reason, "", last["position"], last["partition"] or "")
        row = frame.data.slice(seq, 1).to_pylist()[0]
        raw = dumps(
            {
                "key": orjson.loads(row["key"]) if row["key"] else {},
                "before": orjson.loads(row["before"]) if row["before"] else None,
                "after": orjson.loads(row["after"]) if row["after"] else None,
                "op": row["op"],
            }
        )
        return DeadLetter(frame.source, frame.table, reason, raw, row["position"], row["partition"] or "")

    def _hold(self, events: list[ChangeEvent]) -> None:
        first = self.con.execute("SELECT coalesce(max(seq), 0) FROM cdc.held").fetchall()[0][0]
        rows = pa.table(
            {
                "source": [e.source for e in events],
                "txid": [e.txid for e in events],
                "seq": pa.array(np.arange(first + 1, first + 1 + len(events), dtype=np.int64)),
                "event": [dumps(_event_document(e)) for e in events],
            }
        )
        self.con.register("_cx_held", rows)
        try:
            self.con.execute("INSERT INTO cdc.held SELECT * FROM _cx_held")
        finally:
            self.con.unregister("_cx_held")

    def _hold_frame(self, frame: EventFrame, txid: str) -> None:
        """`_hold` for a frame: the same documents (`_event_document`), built by DuckDB."""
        first = self.con.execute("SELECT coalesce(max(seq), 0) FROM cdc.held").fetchall()[0][0]
        data = frame.data.append_column("seq", pa.array(np.arange(first + 1, first + 1 + len(frame), dtype=np.int64)))
        columns = _columns_document(frame.columns)
        with warehouse.registered(self.con, "_cx_held_frame", data):
            self.con.execute(
                "INSERT INTO cdc.held SELECT $source, $txid, seq, json_object('source', $source, 'table', $table, "
                "'op', op, 'key', json(coalesce(key, '{}')), 'before', json(before), 'after', json(after), "
                "'position', position, 'ts_ms', ts_ms, 'partition', coalesce(partition, ''), 'source_info', "
                "json('{}'), 'transaction', json_object('id', $txid), 'columns', json($columns)) "
                "FROM _cx_held_frame ORDER BY seq",
                {"source": frame.source, "txid": txid, "table": frame.table, "columns": dumps(columns)},
            )

    def _held_chunks(self, txid: str, size: int = 20_000) -> Iterable[list[ChangeEvent]]:
        """A held transaction's changes in order, a chunk at a time (memory stays bounded)."""
        last = -1
        plans: dict[str, dict[str, ColumnType | str]] = {}
        while True:
            rows = self.con.execute(
                "SELECT seq, event FROM cdc.held WHERE txid = ? AND seq > ? ORDER BY seq LIMIT ?", [txid, last, size]
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [_event_from_document(orjson.loads(doc), plans) for _, doc in rows]

    @staticmethod
    def _wanted(events: list[ChangeEvent]) -> dict[str, ColumnType]:
        wanted: dict[str, ColumnType] = {}
        seen: set[int] = set()
        # Types an event's schema names come first: a schemaless event earlier in the batch must not
        # set a column's type by guessing from its value (its neighbours would not decode).
        for event in events:
            if event.columns and id(event.columns) not in seen:  # readers share one dict per table schema
                seen.add(id(event.columns))
                for name, kind in event.columns.items():
                    wanted.setdefault(name, kind if isinstance(kind, ColumnType) else of_replica(kind))
        for event in events:
            if event.columns:
                continue
            for name, value in (event.row or {}).items():
                if name not in wanted and value is not None and not is_unavailable(value):
                    wanted[name] = infer(value)
        for event in events:
            row = event.row or {}
            if not row.keys() <= wanted.keys():  # compared in C; a name no type covers is rare
                for name in row:
                    if name not in wanted:
                        wanted[name] = of_replica("VARCHAR")
        return wanted

    def _ensure_table(
        self,
        schema: str,
        table: str,
        key_cols: list[str],
        has_schema: bool,
        other_keys: list[list[str]],
        wanted: dict[str, ColumnType],
    ) -> dict[str, str]:
        """The replica (or staging) table, created or reshaped for `wanted`. `key_cols`: the first
        change's key; `has_schema`: every change carried its row schema; `other_keys`: the keys of
        all changes (a key unlike the replica's is a key change)."""
        existing = self._table_columns(schema, table)
        if not existing:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            cols = [f"{quote(n)} {t.replica}" for n, t in wanted.items()]
            cols += [f"{quote(n)} {t}" for n, t in META_COLUMNS.items()]
            pk = f", PRIMARY KEY ({', '.join(quote(k) for k in key_cols)})" if key_cols else ""
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{quote(table)} ({', '.join(cols)}{pk})")
            self._columns.pop((schema, table), None)
            self._keys.pop((schema, table), None)
            return self._table_columns(schema, table)
        reshape = self._reshape(schema, table, has_schema, [key_cols, *other_keys], wanted, existing)
        if reshape is None:
            return existing
        if schema != STAGING:
            self._reshaped[table] = reshape
        self._columns.pop((schema, table), None)
        return self._table_columns(schema, table)

    def _duck_type(self, kind: str) -> str:
        """DuckDB's own spelling of a type (information_schema writes TIMESTAMPTZ out in full)."""
        if kind not in self._type_names:
            self._type_names[kind] = self.con.execute(f"SELECT typeof(CAST(NULL AS {kind}))").fetchall()[0][0]
        return self._type_names[kind]

    def _reshape(
        self,
        schema: str,
        table: str,
        has_schema: bool,
        keys: list[list[str]],
        wanted: dict[str, ColumnType],
        existing: dict[str, str],
    ) -> Reshape | None:
        """Columns the events have and the replica lacks are added, types widened in place; what
        cannot be done in place (a narrowed or changed type, a new key) is left to a re-snapshot."""
        target = f"{schema}.{quote(table)}"
        change = Reshape()
        for name, kind in wanted.items():
            if name not in existing:
                self.con.execute(f"ALTER TABLE {target} ADD COLUMN {quote(name)} {kind.replica}")
                change.added.append(name)
            elif self._duck_type(kind.replica) != self._duck_type(existing[name]):
                key = self._primary_key(schema, table)
                if widens(self._duck_type(existing[name]), self._duck_type(kind.replica)) and name not in key:
                    self.con.execute(f"ALTER TABLE {target} ALTER COLUMN {quote(name)} SET DATA TYPE {kind.replica}")
                    change.widened.append(name)
                else:
                    change.retyped.append(name)
        if has_schema:
            kept = self._kept.setdefault((schema, table), set())
            change.dropped = [c for c in existing if c not in wanted and c not in META_COLUMNS and c not in kept]
            for name in change.dropped:
                if self.drop_columns and name not in self._primary_key(schema, table):
                    self.con.execute(f"ALTER TABLE {target} DROP COLUMN {quote(name)}")
                else:
                    kept.add(name)  # keeps its last values; reported once
        key = self._primary_key(schema, table)
        change.key_changed = bool(key) and any(k and k != key for k in keys)
        return (
            change if change.added or change.dropped or change.retyped or change.widened or change.key_changed else None
        )

    def _apply_table(
        self, source: str, table: str, events: list[ChangeEvent], staged: bool = False, log: LogTo | None = None
    ) -> tuple[list[ChangeEvent], list[DeadLetter]]:
        truncated = [i for i, e in enumerate(events) if e.op == "t"]
        if truncated:  # everything before the last TRUNCATE is gone with it
            last = events[truncated[-1]]
            self._apply_schema_change(
                SchemaChange(source, table, "truncate", "TRUNCATE", last.position), dt.datetime.now(dt.UTC)
            )
            events = events[truncated[-1] + 1 :]
            if not events:
                return [], []
        wanted = self._wanted(events)
        schema, name = (STAGING, f"{source}__{table}") if staged else (f"replica_{source}", table)
        keys = list({tuple(e.key): None for e in events})
        columns = self._ensure_table(
            schema, name, list(events[0].key), all(e.columns for e in events), [list(k) for k in keys], wanted
        )
        replica_key = self._primary_key(schema, name)
        key_cols = replica_key or list(events[0].key)
        dead: list[DeadLetter] = []
        good: list[ChangeEvent] = []
        for event in events:
            if replica_key and event.key and list(event.key) != key_cols and not staged:
                # The table's key changed at the source: this and later changes are in the re-snapshot
                # the reader takes next (the position records that it is pending, in this transaction).
                self._reshaped.setdefault(table, Reshape()).key_changed = True
                continue
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
        touched = touched_table(source, table) if not staged and (source, table) in self._marked else None
        try:
            result = apply_table(self.con, f"{schema}.{quote(name)}", columns, wanted, key_cols, good, touched, log)
        except duckdb.ConstraintException as exc:
            raise DataConflict(_conflict(source, table, exc)) from None
        return result.applied, dead + result.dead

    def _count(
        self,
        applied: list[ChangeEvent],
        dead: list[DeadLetter],
        now: dt.datetime,
        frames: list[EventFrame] | None = None,
    ) -> None:
        counts: dict[tuple[str, str], list[int]] = {}
        for event in applied:
            counts.setdefault((event.source, event.table), [0, 0])[0] += 1
        for frame in frames or []:
            counts.setdefault((frame.source, frame.table), [0, 0])[0] += len(frame)
        for letter in dead:
            counts.setdefault((letter.source, letter.table or "?"), [0, 0])[1] += 1
        for (source, table), (events, dead_letters) in counts.items():
            self.con.execute(
                "INSERT INTO cdc.table_stats VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, table_name) DO UPDATE SET "
                "events = cdc.table_stats.events + excluded.events, "
                "dead_letters = cdc.table_stats.dead_letters + excluded.dead_letters, updated_at = excluded.updated_at",
                [source, table, events, dead_letters, now],
            )

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
            rewind = offset.source in batch.reset_sources
            self.con.execute(
                "INSERT INTO cdc.offsets VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, partition) DO UPDATE "
                f"SET position = {'excluded.position' if rewind else _FORWARD}, resume = excluded.resume, "
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


# A committed position only moves forward (unless the source starts over with a fresh snapshot): a
# source that resumes from an older point of its own (Debezium's offsets file lags the warehouse)
# reports the position of replays, and taking it would let the changes after it through again.
_FORWARD = (
    "CASE WHEN cdc.offsets.position IS NULL OR excluded.position >= cdc.offsets.position "
    "THEN excluded.position ELSE cdc.offsets.position END"
)


def _conflict(source: str, table: str, exc: Exception) -> str:
    return (
        f"table {source}.{table}: the replica cannot take this batch: {str(exc).splitlines()[0].rstrip('.')}. "
        "The warehouse is fine and nothing was applied; the replica table disagrees with its source "
        f"about these keys. Run `coexist cdc resnapshot {table} --source {source}`, then capture again."
    )


@dataclass(slots=True)
class Resnapshot:
    rows: int = 0
    dead_letters: int = 0

    @property
    def swapped(self) -> bool:
        return self.dead_letters == 0


def resnapshot(apply: Any, batches: Iterable[Batch], source: str, tables: list[str]) -> Resnapshot:
    """Load a re-snapshot into staging tables and swap them in only when every row decoded.

    The stream position is left as it is: replaying the log over a newer snapshot is harmless
    (full row images). With dead letters, the replica tables stay exactly as they were."""
    result = Resnapshot()
    apply(Batch(mark_tables=[(source, t) for t in tables]))
    for batch in batches:
        stats = apply(batch)
        result.rows += stats.applied
        result.dead_letters += stats.dead_letters
    pairs = [(source, t) for t in tables]
    apply(Batch(swap_tables=pairs) if result.swapped else Batch(discard_tables=pairs))
    return result

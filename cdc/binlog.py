"""MariaDB/MySQL capture: a consistent snapshot, then the ROW binlog, as Debezium-shaped events.

Snapshot: `START TRANSACTION WITH CONSISTENT SNAPSHOT` gives MariaDB's `binlog_snapshot_file/
position`, the exact binlog point the snapshot saw, so streaming starts there with no change
lost or doubled (MySQL, which lacks those variables, takes a brief global read lock instead).
Streaming: batches end on transaction boundaries (XID events), and the committed resume point
is the end of the last whole transaction, so a restart resumes exactly there.
Events look like Debezium's MariaDB connector's (see `../shared/fixtures/debezium/mariadb_u.json`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent
from tenacity import retry, retry_if_exception_type, stop_after_delay, stop_when_event_set, wait_exponential

from cdc.config import MariaDBSource, mysql_connect
from cdc.events import ChangeEvent, position_key
from cdc.schema import SchemaChange, Statement, parse_mysql_ddl
from cdc.sink import Batch, Offset
from cdc.types import ColumnType
from cdc.types.mysql import MyType, my_type, wire_row
from core.errors import SourceUnavailable

log = logging.getLogger("coexist.cdc.binlog")
logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)


def _read_time2(self: Any, column: Any) -> dt.timedelta:
    """MySQL's TIME2 as the server writes it (`my_time_packed_from_binary`): a negative time with a
    fraction borrows one second from its integer part, which the binlog library gets wrong."""
    intpart = int.from_bytes(self.packet.read(3), "big") - 0x800000
    width = (column.fsp + 1) // 2
    frac = 0
    if width:
        frac = int.from_bytes(self.packet.read(width), "big")
        if intpart < 0 and frac:
            intpart += 1
            frac -= 1 << (8 * width)
    hms = abs(intpart)
    seconds = ((hms >> 12) & 0x3FF) * 3600 + ((hms >> 6) & 0x3F) * 60 + (hms & 0x3F)
    micros = frac * (0, 10_000, 100, 1)[width]
    return dt.timedelta(microseconds=(-seconds if intpart < 0 else seconds) * 1_000_000 + micros)


RowsEvent._RowsEvent__read_time2 = _read_time2

VERSION = "coexist-binlog-1"


def _needs_backfill(before: tuple[list[str], list[str]] | None, after: _Table, statement: Statement) -> bool:
    """Whether old rows need values the log does not carry: a column added with a default or a
    generated value, a changed key, a changed type (MODIFY/CHANGE: the replica is rebuilt), or a
    shape the log has not shown this run (the catalog may be ahead of the log: re-snapshot, safely)."""
    if before is None or re.search(
        r"\b(MODIFY|CHANGE|ALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE)\b", statement.text, re.I
    ):
        return True
    renamed = dict(statement.renamed)
    names = {renamed.get(n, n) for n in before[0]}
    if after.key != [renamed.get(k, k) for k in before[1]]:
        return True
    return any(name not in names and name in after.defaulted for name in after.types)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class _Either:
    """Set when either the capture's stop event or a local one is set."""

    def __init__(self, outer: threading.Event) -> None:
        self.outer = outer
        self.local = threading.Event()

    def is_set(self) -> bool:
        return self.outer.is_set() or self.local.is_set()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.local.wait(min(remaining, 0.05))
        return True


class _Table:
    def __init__(self, types: dict[str, MyType], key: list[str], defaulted: set[str] | None = None) -> None:
        self.types = types
        self.columns: dict[str, ColumnType | str] = {n: t.column for n, t in types.items()}
        self.key = key
        self.defaulted = defaulted or set()
        """Columns with a default or a generated value: added to a table with rows, the log does not carry them."""


class BinlogReader:
    """Reads one MariaDB/MySQL database: snapshot when needed, then the binlog."""

    def __init__(
        self,
        name: str,
        config: MariaDBSource,
        batch_size: int = 5000,
        poll_seconds: float = 0.5,
        connect_timeout: float = 60.0,
        dropped_columns: str = "drop",
        dropped_tables: str = "archive",
    ) -> None:
        self.name = name
        self.config = config
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.connect_timeout = connect_timeout
        self._tables: dict[str, _Table] = {}
        self.stop = threading.Event()  # set by `run`'s caller: a connection being retried gives up at once
        # A killed client's connection can linger with its server_id (error 4052): never reuse one.
        self.server_id = config.server_id + (os.getpid() % 100_000) + int(time.time()) % 1000
        self.is_mariadb = config.kind == "mariadb"
        self.snapshot_tables: list[str] | None = None
        self.dropped_columns = dropped_columns
        self.dropped_tables = dropped_tables
        self._current_file = ""
        self._logged: dict[str, tuple[list[str], list[str]]] = {}
        """Per table, its columns and key as the log last showed them (the catalog may be further on)."""

    # ------------------------------------------------------------ connections

    def _settings(self) -> dict[str, Any]:
        return {
            "host": self.config.host,
            "port": self.config.port,
            "user": self.config.user,
            "passwd": self.config.resolved_password() or "",
        }

    def connect(self) -> pymysql.Connection:
        @retry(
            retry=retry_if_exception_type(pymysql.err.OperationalError),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(self.connect_timeout) | stop_when_event_set(self.stop),
            reraise=True,
        )
        def attempt() -> pymysql.Connection:
            return self.config.connect(timeout=max(1, int(min(10.0, self.connect_timeout))))

        try:
            return attempt()
        except pymysql.err.OperationalError as exc:
            raise SourceUnavailable(
                f"source {self.name!r}: cannot connect to {self.config.url()} for {self.connect_timeout:.0f} s: "
                f"{exc.args[-1]}. "
                + (
                    "No MySQL handshake arrived: is that port a MySQL/MariaDB server? "
                    if "timed out" in str(exc)
                    else ""
                )
                + "Check that the server is up and the user has the CDC grants "
                "(SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR, LOCK TABLES)."
            ) from None

    def _bounded_wrapper(self) -> Any:
        """mysql-replication retries a failed stream connection forever; bound it and surface the error."""
        failures: list[float] = []

        def wrapper(**kwargs: Any) -> pymysql.Connection:
            try:
                conn = mysql_connect(min(10.0, self.connect_timeout), **kwargs)
            except pymysql.err.OperationalError as exc:
                failures.append(time.monotonic())
                if len(failures) >= 10 or time.monotonic() - failures[0] > self.connect_timeout:
                    raise SourceUnavailable(f"source {self.name!r}: binlog connection keeps failing: {exc}") from None
                time.sleep(min(5.0, 0.2 * 2 ** len(failures)))
                raise
            failures.clear()
            return conn

        return wrapper

    # ------------------------------------------------------------ schema

    def list_tables(self, conn: pymysql.Connection) -> list[str]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY table_name",
                (self.config.database,),
            )
            names = [r[0] for r in cur.fetchall()]
        if self.config.tables:
            names = [n for n in names if n in self.config.tables]
        return names

    def table(self, conn: pymysql.Connection, name: str, refresh: bool = False) -> _Table:
        if not refresh and name in self._tables:
            return self._tables[name]
        with conn.cursor() as cur:
            cur.execute(
                "SELECT column_name, data_type, numeric_precision, numeric_scale, column_type, column_key, "
                "(column_default IS NOT NULL AND column_default <> 'NULL') OR extra REGEXP 'GENERATED|VIRTUAL|STORED' "
                "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position",
                (self.config.database, name),
            )
            rows = cur.fetchall()
        types = {r[0]: my_type(r[1], r[4], r[2], r[3]) for r in rows}
        key = [r[0] for r in rows if r[5] == "PRI"]
        table = _Table(types, key, {r[0] for r in rows if r[6]})
        self._tables[name] = table
        return table

    def _source_info(
        self, table: str, ts_ms: int, snapshot: str, file: str, pos: int, row: int, gtid: str | None, server_id: int = 0
    ) -> dict[str, Any]:
        return {
            "version": VERSION,
            "connector": "mariadb" if self.is_mariadb else "mysql",
            "name": self.name,
            "ts_ms": ts_ms,
            "snapshot": snapshot,
            "db": self.config.database,
            "sequence": None,
            "table": table,
            "server_id": server_id,
            "gtid": gtid,
            "file": file,
            "pos": pos,
            "row": row,
            "thread": None,
            "query": None,
        }

    @staticmethod
    def _file_index(file: str) -> int:
        digits = "".join(ch for ch in file.rsplit(".", 1)[-1] if ch.isdigit())
        return int(digits or 0)

    # ------------------------------------------------------------ snapshot

    def snapshot(self, tables: list[str] | None = None) -> Iterator[Batch]:
        """A consistent snapshot of every table (or `tables`); the last batch marks it done."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("SET time_zone = '+00:00'")  # TIMESTAMP in UTC, as the binlog carries it
                if self.is_mariadb:
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                    status = dict(cur.fetchall())
                    file, pos = status["Binlog_snapshot_file"], int(status["Binlog_snapshot_position"])
                    cur.execute("SELECT @@gtid_binlog_pos")
                    gtid_row = cur.fetchone()
                    gtid = gtid_row[0] if gtid_row else None
                else:
                    cur.execute("FLUSH TABLES WITH READ LOCK")
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    cur.execute("SHOW MASTER STATUS")
                    master = cur.fetchone()
                    cur.execute("UNLOCK TABLES")
                    if master is None:
                        raise SourceUnavailable(f"source {self.name!r}: binary logging is off (log_bin)")
                    file, pos, gtid = master[0], int(master[1]), None
            names = tables if tables is not None else self.list_tables(conn)
            resume = {"file": file, "pos": pos, "gtid": gtid}
            snap_pos = position_key(self._file_index(file), pos, 0)
            ts_ms = int(time.time() * 1000)
            first = True
            pending: list[ChangeEvent] = []
            for name in names:
                meta = self.table(conn, name, refresh=True)
                with conn.cursor(pymysql.cursors.SSDictCursor) as cur:
                    cols = ", ".join(
                        f"{t.select.replace('{c}', _quote(c))} AS {_quote(c)}" for c, t in meta.types.items()
                    )
                    cur.execute(f"SELECT {cols} FROM {_quote(name)}")
                    for row in cur:
                        after = wire_row(meta.types, row)
                        pending.append(
                            ChangeEvent(
                                source=self.name,
                                table=name,
                                op="r",
                                key={k: after[k] for k in meta.key},
                                before=None,
                                after=after,
                                position=snap_pos,
                                ts_ms=ts_ms,
                                snapshot="true",
                                source_info=self._source_info(name, ts_ms, "true", file, pos, 0, gtid),
                                columns=meta.columns,
                            )
                        )
                        if len(pending) >= self.batch_size:
                            yield self._snapshot_batch(pending, resume, snap_pos, first, False, tables)
                            pending, first = [], False
            yield self._snapshot_batch(pending, resume, snap_pos, first, True, tables)
            with conn.cursor() as cur:
                cur.execute("COMMIT")
        finally:
            conn.close()

    def _snapshot_batch(
        self,
        events: list[ChangeEvent],
        resume: dict[str, Any],
        snap_pos: str,
        first: bool,
        done: bool,
        tables: list[str] | None,
    ) -> Batch:
        batch = Batch(events=events, staged=tables is not None)
        if tables is None:
            batch.offsets.append(Offset(self.name, "", snap_pos, resume | {"snapshot": True}, snapshot_done=done))
            if first:
                batch.reset_sources.append(self.name)
        elif first:
            batch.reset_tables.extend((self.name, t) for t in tables)
        return batch

    # ------------------------------------------------------------ streaming

    def stream(
        self, resume: dict[str, Any], stop: threading.Event, idle_seconds: float | None = None
    ) -> Iterator[Batch]:
        """Binlog changes from `resume` (file/pos at a transaction boundary) until `stop` or idle."""
        file, pos = resume["file"], int(resume["pos"])
        gtid: str | None = resume.get("gtid")
        last_activity = time.monotonic()
        ctl = self.connect()
        try:
            while not stop.is_set():
                got_any = False
                for batch, next_file, next_pos, next_gtid in self._read_until_eof(ctl, file, pos, gtid, stop):
                    got_any = got_any or bool(batch.events)
                    file, pos, gtid = next_file, next_pos, next_gtid
                    yield batch
                if got_any:
                    last_activity = time.monotonic()
                elif idle_seconds is not None and time.monotonic() - last_activity >= idle_seconds:
                    return
                stop.wait(self.poll_seconds)
        finally:
            ctl.close()

    def _read_until_eof(
        self, ctl: pymysql.Connection, file: str, pos: int, gtid: str | None, stop: threading.Event
    ) -> Iterator[tuple[Batch, str, int, str | None]]:
        """Read to the end of the binlog; batches close only at transaction ends."""
        stream = BinLogStreamReader(
            connection_settings=self._settings(),
            server_id=self.server_id,
            resume_stream=True,
            # is_mariadb=True would ignore file/pos and start from the oldest binlog; the classic dump
            # command honours them on MariaDB too, and still receives MariaDB's GTID events.
            log_file=file,
            log_pos=pos,
            blocking=False,
            is_mariadb=False,
            only_events=[
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                QueryEvent,
                XidEvent,
                RotateEvent,
                MariadbGtidEvent,
            ],
            pymysql_wrapper=self._bounded_wrapper(),
            enable_logging=False,
        )
        pending: list[ChangeEvent] = []
        committed: list[ChangeEvent] = []
        current_file = self._current_file = file

        def flush() -> tuple[Batch, str, int, str | None]:
            return (
                self._stream_batch(committed, stream.log_file, stream.log_pos, gtid),
                stream.log_file,
                stream.log_pos,
                gtid,
            )

        try:
            for event in stream:
                if isinstance(event, RotateEvent):
                    current_file = self._current_file = event.next_binlog
                    continue
                if isinstance(event, MariadbGtidEvent):
                    gtid = event.gtid
                    continue
                if isinstance(event, QueryEvent):
                    query = event.query.decode() if isinstance(event.query, bytes) else str(event.query)
                    if query.strip().upper() == "BEGIN":
                        continue
                    changes = self._schema_changes(ctl, event, query)
                    if changes:
                        # The statement commits what came before it; its effect goes in the same batch.
                        committed.extend(pending)
                        pending = []
                        batch, next_file, next_pos, next_gtid = flush()
                        batch.schema_changes = changes
                        redo = [c.table for c in changes if c.resnapshot]
                        if redo:  # kept in the committed position until the re-snapshot is swapped in
                            batch.offsets[0].resume = (batch.offsets[0].resume or {}) | {"resnapshot": redo}
                        yield batch, next_file, next_pos, next_gtid
                        committed = []
                        for backfill in self.backfill(redo, next_file, next_pos, next_gtid):
                            yield backfill, next_file, next_pos, next_gtid
                        if stop.is_set():
                            break
                        continue
                # XID, COMMIT or a DDL statement (which commits implicitly): a transaction ends here.
                if isinstance(event, XidEvent | QueryEvent):
                    committed.extend(pending)
                    pending = []
                    if len(committed) >= self.batch_size or (committed and stop.is_set()):
                        yield flush()
                        committed = []
                    if stop.is_set():
                        break
                    continue
                if event.schema != self.config.database:
                    continue
                if self.config.tables and event.table not in self.config.tables:
                    continue
                pending.extend(self._row_events(ctl, event, current_file, gtid))
            if committed or (stream.log_file, stream.log_pos) != (file, pos):
                # Also when only other schemas' events went by: the position moves on without re-reading them.
                yield flush()
        finally:
            stream.close()

    def _schema_changes(self, ctl: pymysql.Connection, event: Any, query: str) -> list[SchemaChange]:
        """The captured tables a DDL statement changed, and how (see `cdc.schema`)."""
        statement = parse_mysql_ddl(query)
        database = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema or "")
        if statement is None or database != self.config.database:
            return []
        position = position_key(self._file_index(self._current_file), int(event.packet.log_pos), 0)
        changes = []
        for i, table in enumerate(statement.tables):
            if self.config.tables and table not in self.config.tables:
                continue
            change = SchemaChange(
                self.name,
                table,
                statement.kind,
                query,
                position,
                drop_columns=self.dropped_columns == "drop",
                archive_tables=self.dropped_tables == "archive",
            )
            if statement.kind == "rename_table":
                change.new_name = statement.new_names[i]
                if table in self._tables:
                    self._tables[change.new_name] = self._tables.pop(table)
            elif statement.kind in ("drop_table", "truncate"):
                self._tables.pop(table, None)
            elif statement.kind == "alter":
                after = self.table(ctl, table, refresh=True)
                change.columns = {n: t.column for n, t in after.types.items()}
                change.key = after.key
                change.renamed = dict(statement.renamed)
                change.resnapshot = _needs_backfill(self._logged.get(table), after, statement)
                self._logged.pop(table, None)
            changes.append(change)
        return changes

    def _row_events(self, ctl: pymysql.Connection, event: Any, file: str, gtid: str | None) -> list[ChangeEvent]:
        table = event.table
        meta = self.table(ctl, table)
        rows = event.rows
        sample = rows[0] if rows else {}
        sample_cols = set((sample.get("values") or sample.get("after_values") or {}).keys())
        if sample_cols and not sample_cols <= set(meta.columns):
            meta = self.table(ctl, table, refresh=True)
        # The catalog can be ahead of the log (a DDL further on): the key is the one the binlog's
        # table map gives for this event (binlog_row_metadata=FULL), else the catalog's present in it.
        marked = [c.name for c in getattr(event, "columns", []) if getattr(c, "is_primary", False)]
        meta_key = marked or [k for k in meta.key if not sample_cols or k in sample_cols]
        if sample_cols:
            self._logged[table] = (sorted(sample_cols), meta_key)
        ts_ms = int(event.timestamp) * 1000
        start_pos = int(event.packet.log_pos)
        file_index = self._file_index(file)
        out: list[ChangeEvent] = []
        if isinstance(event, WriteRowsEvent):
            op = "c"
        elif isinstance(event, UpdateRowsEvent):
            op = "u"
        else:
            op = "d"
        for i, row in enumerate(rows):
            if op == "u":
                before = wire_row(meta.types, row["before_values"], row.get("before_none_sources"))
                after: dict[str, Any] | None = wire_row(meta.types, row["after_values"], row.get("after_none_sources"))
            elif op == "c":
                before, after = None, wire_row(meta.types, row["values"], row.get("none_sources"))
            else:
                before, after = wire_row(meta.types, row["values"], row.get("none_sources")), None
            image = after if after is not None else before
            assert image is not None
            if op == "u" and before is not None and any(before.get(k) != image.get(k) for k in meta_key):
                # A primary-key change is a delete of the old key and a create of the new one, as Debezium does.
                out.append(
                    ChangeEvent(
                        source=self.name,
                        table=table,
                        op="d",
                        key={k: before[k] for k in meta_key},
                        before=before,
                        after=None,
                        position=position_key(file_index, start_pos, 2 * i),
                        ts_ms=ts_ms,
                        source_info=self._source_info(
                            table, ts_ms, "false", file, start_pos, i, gtid, event.packet.server_id
                        ),
                        columns=meta.columns,
                    )
                )
                op_row, before_row, pos_row = "c", None, 2 * i + 1
            else:
                op_row, before_row, pos_row = op, before, 2 * i
            out.append(
                ChangeEvent(
                    source=self.name,
                    table=table,
                    op=op_row,
                    key={k: image[k] for k in meta_key},
                    before=before_row,
                    after=after,
                    position=position_key(file_index, start_pos, pos_row),
                    ts_ms=ts_ms,
                    source_info=self._source_info(
                        table, ts_ms, "false", file, start_pos, i, gtid, event.packet.server_id
                    ),
                    columns=meta.columns,
                )
            )
        return out

    def _stream_batch(self, events: list[ChangeEvent], file: str, pos: int, gtid: str | None) -> Batch:
        last = events[-1].position if events else position_key(self._file_index(file), pos, 0)
        return Batch(
            events=list(events),
            offsets=[Offset(self.name, "", last, {"file": file, "pos": int(pos), "gtid": gtid}, snapshot_done=True)],
        )

    # ------------------------------------------------------------ the whole reader

    def snapshot_batches(self, tables: list[str]) -> Iterator[Batch]:
        """A consistent re-snapshot of `tables` into staging (for a running capture's request)."""
        return self.snapshot(tables)

    def backfill(self, tables: list[str], file: str, pos: int, gtid: str | None) -> Iterator[Batch]:
        """Re-snapshot `tables` now and swap them in; the stream then replays from the DDL over them
        (harmless: full row images). The last batch clears the pending re-snapshot from the position."""
        if not tables:
            return
        yield from self.snapshot(tables)
        done = Offset(
            self.name, "", position_key(self._file_index(file), pos, 0), {"file": file, "pos": pos, "gtid": gtid}
        )
        yield Batch(swap_tables=[(self.name, t) for t in tables], offsets=[done])

    def batches(
        self, stored: dict[str, Any] | None, stop: threading.Event, idle_seconds: float | None = None
    ) -> Iterator[Batch]:
        """Snapshot if there is no finished snapshot in the warehouse, then stream."""
        resume = (stored or {}).get("resume")
        if stored is None or not stored.get("snapshot_done") or not resume:
            last: Batch | None = None
            for batch in self.snapshot():
                last = batch
                yield batch
                if stop.is_set():
                    return
            assert last is not None
            resume = last.offsets[0].resume or {}
        pending = list(resume.get("resnapshot") or [])
        resume = {k: v for k, v in resume.items() if k not in ("snapshot", "resnapshot")}
        self._check_position(resume)
        yield from self.backfill(pending, resume["file"], int(resume["pos"]), resume.get("gtid"))
        yield from self.stream(resume, stop, idle_seconds)

    def run(self, apply: Any, stored: Any, stop: threading.Event, idle_seconds: float | None) -> None:
        """Read in one thread and apply in this one, so decoding overlaps the warehouse commit."""
        handoff: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=2)
        self.stop = stop
        halt = _Either(stop)

        def produce() -> None:
            try:
                for batch in self.batches(stored(self.name, ""), halt, idle_seconds):  # type: ignore[arg-type]
                    handoff.put(batch)
                handoff.put(None)
            except BaseException as exc:
                handoff.put(exc)

        producer = threading.Thread(target=produce, name=f"binlog-{self.name}", daemon=True)
        producer.start()
        try:
            while True:
                item = handoff.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                apply(item)
        finally:
            halt.local.set()
            while producer.is_alive():
                with contextlib.suppress(queue.Empty):
                    handoff.get(timeout=0.1)

    def _check_position(self, resume: dict[str, Any]) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW BINARY LOGS")
                files = [r[0] for r in cur.fetchall()]
        finally:
            conn.close()
        if resume["file"] not in files:
            raise SourceUnavailable(
                f"source {self.name!r}: binlog {resume['file']} is gone from the server (purged?); "
                f"the replica cannot be brought up to date from the log. Run `coexist cdc resnapshot --source "
                f"{self.name}` to take a fresh snapshot."
            )

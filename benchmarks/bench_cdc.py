"""CDC throughput, lag and memory, per reader, against a private sandbox.

Run: .venv/bin/python benchmarks/bench_cdc.py [--rows 100000] [--sink-events 1000000] [--lag-seconds 20]

Prints, for each reader (embedded Debezium for PostgreSQL, the MariaDB binlog reader):
- reader alone: events/s for one 100k-row transaction, decoded but not applied;
- end to end: events/s for the same transaction through the DuckDB sink (and its share of the reader rate);
- lag from source commit to replica commit at a steady 1k events/s (p50, p95);
and the sink alone applying 1M synthetic events, and the process's peak RSS.
Targets (issue #3): sink >= 100k events/s; end to end >= 80% of the reader alone; p95 lag < 2 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from cdc.binlog import BinlogReader
from cdc.debezium import DebeziumPostgresReader
from cdc.events import ChangeEvent, position_key
from cdc.frame import FRAME_FIELDS, EventFrame
from cdc.runner import Capture
from cdc.sink import ApplyStats, Batch, DuckDBSink, Offset
from cdc.types import ColumnType
from coexist.cli.common import leave_jvm
from coexist.config import Settings
from coexist.sandbox import servers as sandbox

console = Console()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SINK_COLUMNS: dict[str, ColumnType | str] = {
    "id": "BIGINT",
    "customer": "VARCHAR",
    "hours": "DECIMAL(8,2)",
    "amount": "DECIMAL(14,2)",
    "work_date": "DATE",
    "status": "VARCHAR",
    "updated_at": "TIMESTAMPTZ",
}
"""The synthetic time entries of the sink-alone measurements."""


def sink_only(path: Path, n: int, batch_size: int = 20_000) -> float:
    cols = SINK_COLUMNS
    now = dt.datetime.now(dt.UTC)
    batches = []
    for start in range(0, n, batch_size):
        events = []
        for i in range(start, min(n, start + batch_size)):
            key = i % (n // 2)  # half the events update rows written earlier
            row = {
                "id": key,
                "customer": f"C{key % 9973:06d}",
                "hours": decimal.Decimal("7.50"),
                "amount": decimal.Decimal("1125.00"),
                "work_date": dt.date(2026, 1, 1 + key % 28),
                "status": "approved",
                "updated_at": now,
            }
            events.append(
                ChangeEvent(
                    "bench",
                    "time_entries",
                    "c" if i < n // 2 else "u",
                    {"id": key},
                    None,
                    row,
                    position_key(1, i),
                    i,
                    columns=cols,
                )
            )
        batches.append(Batch(events=events, offsets=[Offset("bench", "", events[-1].position)]))
    with DuckDBSink(path) as sink:
        started = time.perf_counter()
        for batch in batches:
            sink.apply(batch)
        return n / (time.perf_counter() - started)


def sink_frames(path: Path, n: int, batch_size: int = 100_000) -> tuple[float, float]:
    """The sink on the same synthetic changes as `sink_only`, as frames (what the bulk decoder hands
    over: row images as Debezium JSON text, built here by DuckDB). Returns (events/s, peak RSS MB)."""
    cols = SINK_COLUMNS
    half = n // 2
    built = duckdb.connect()
    frames = []
    for start in range(0, n, batch_size):
        data = (
            built.sql(
                f"""
            SELECT CASE WHEN i < {half} THEN 'c' ELSE 'u' END AS op, '{{"id":' || (i % {half}) || '}}' AS key,
                   NULL::VARCHAR AS before,
                   CAST(to_json(struct_pack(id := i % {half}, customer := printf('C%06d', (i % {half}) % 9973),
                        hours := '7.50', amount := '1125.00',
                        work_date := strftime(DATE '2026-01-01' + CAST((i % {half}) % 28 AS INTEGER), '%Y-%m-%d'),
                        status := 'approved', updated_at := '2026-11-30T17:00:00.123456+00:00')) AS VARCHAR) AS after,
                   lpad(CAST(1 AS VARCHAR), 20, '0') || '/' || lpad(CAST(i AS VARCHAR), 20, '0') AS position,
                   i AS ts_ms, '' AS partition, NULL::VARCHAR AS snapshot
            FROM range({start}, {min(n, start + batch_size)}) t(i) ORDER BY i"""
            )
            .to_arrow_table()
            .cast(FRAME_FIELDS)
        )
        frames.append(EventFrame("bench", "time_entries", cols, ["id"], data, checked=True))  # as the decoder's are
    built.close()
    started = time.perf_counter()
    with DuckDBSink(path) as sink:
        for frame in frames:
            sink.apply(Batch(frames=[frame], offsets=[Offset("bench", "", frame.data["position"][-1].as_py())]))
    rate = n / (time.perf_counter() - started)  # the final checkpoint (at close) included
    return rate, peak_mb()


def create_bench_tables(state: sandbox.SandboxState) -> None:
    with sandbox.pg_app_connect(state) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_events (id bigint PRIMARY KEY, payload text, "
            "created_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        conn.execute("ALTER TABLE bench_events REPLICA IDENTITY FULL")
    with sandbox.my_app_connect(state) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS bench_events (id BIGINT PRIMARY KEY, payload VARCHAR(64), "
            "created_at DATETIME(6) NOT NULL DEFAULT NOW(6))"
        )


def bulk_insert(state: sandbox.SandboxState, source: str, first: int, n: int) -> None:
    if source == "psa":
        with sandbox.pg_app_connect(state) as conn:
            conn.execute(
                "INSERT INTO bench_events (id, payload) SELECT g, md5(g::text) FROM generate_series(%s::bigint, %s::bigint) g",
                (first, first + n - 1),
            )
    else:
        with sandbox.my_app_connect(state) as conn, conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO bench_events (id, payload) SELECT seq, MD5(seq) FROM seq_{first}_to_{first + n - 1}"
            )


def wait_for(predicate: Any, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.02)


class Counter:
    """A stand-in for the sink: counts decoded events, commits nothing (the reader alone)."""

    def __init__(self) -> None:
        self.events = 0
        self.stored: dict[str, Any] = {}

    def apply(self, batch: Batch) -> ApplyStats:
        self.events += sum(1 for e in batch.events + batch.held if e.table == "bench_events")
        self.events += sum(len(f) for f in batch.frames + batch.held_frames if f.table == "bench_events")
        for offset in batch.offsets:
            self.stored[offset.source] = {
                "position": offset.position,
                "resume": offset.resume,
                "snapshot_done": offset.snapshot_done,
            }
        return ApplyStats(received=len(batch.events), applied=len(batch.events))


def reader_alone(state: sandbox.SandboxState, settings: Settings, source: str, first: int, n: int) -> float:
    srcs = sandbox.sandbox_sources(state)
    counter = Counter()
    stop = threading.Event()
    if source == "psa":
        cfg = srcs["psa"].model_copy(update={"slot_name": "coexist_bench"})
        reader: Any = DebeziumPostgresReader("psa_alone", cfg, settings.data_dir / "cdc-bench")
        # Streaming only: skip Debezium's snapshot, the bench transaction is what we time.
        reader.extra_properties = {"snapshot.mode": "no_data"}
    else:
        reader = BinlogReader("erp_alone", srcs["erp"])
        conn = reader.connect()
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            head = cur.fetchone()
        conn.close()
        counter.stored["erp_alone"] = {"resume": {"file": head[0], "pos": int(head[1])}, "snapshot_done": True}
    thread = threading.Thread(
        target=reader.run, args=(counter.apply, lambda s, p: counter.stored.get(s), stop, None), daemon=True
    )
    thread.start()
    time.sleep(8 if source == "psa" else 1)  # JVM start and streaming start
    started = time.perf_counter()
    bulk_insert(state, source, first, n)
    wait_for(lambda: counter.events >= n)
    rate = n / (time.perf_counter() - started)
    stop.set()
    thread.join(timeout=60)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sink-events", type=int, default=1_000_000)
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--sink-only", action="store_true", help="measure the sink alone and stop")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cx-bench-cdc-", dir="/tmp"))
    os.chmod(data_dir, 0o755)
    settings = Settings(data_dir=data_dir)
    results: dict[str, dict[str, Any]] = {}
    try:
        # Below a row group (122,880 rows) a batch's rows go through the WAL and a checkpoint; above, DuckDB
        # writes them to the file as it goes: both sizes are printed.
        for per_batch in (100_000, 250_000):
            with console.status(f"sink alone, frames of {per_batch:,}"):
                frame_rate, frame_peak = sink_frames(
                    data_dir / f"frames{per_batch}.duckdb", args.sink_events, per_batch
                )
            console.print(
                f"sink alone, frames: {frame_rate:,.0f} events/s applying {args.sink_events:,} synthetic events "
                f"(half inserts, half updates, {per_batch:,} per batch); peak RSS {frame_peak:,.0f} MB"
            )
        with console.status("sink alone, events"):
            sink_rate = sink_only(data_dir / "sink.duckdb", args.sink_events)
        console.print(
            f"sink alone, ChangeEvents: {sink_rate:,.0f} events/s (20k per batch); peak RSS {peak_mb():,.0f} MB"
        )
        if args.sink_only:
            return
        state = sandbox.up(settings)
        create_bench_tables(state)
        srcs = sandbox.sandbox_sources(state)
        next_id = 1
        for source in ("psa", "erp"):
            with console.status(f"{source}: reader alone"):
                alone = reader_alone(state, settings, source, next_id, args.rows)
            next_id += args.rows
            results[source] = {"alone": alone}

        readers: list[Any] = [
            DebeziumPostgresReader("psa", srcs["psa"], data_dir / "cdc", batch_size=5000),
            BinlogReader("erp", srcs["erp"], batch_size=5000, poll_seconds=0.1),
        ]
        capture = Capture(settings.warehouse_path, readers)
        thread = threading.Thread(target=capture.run, kwargs={"install_signals": False}, daemon=True)
        thread.start()
        with console.status("initial snapshot"):
            time.sleep(10)
            wait_for(lambda: all(p.batches > 0 for p in capture.progress.values()))
            time.sleep(3)
        for source in ("psa", "erp"):
            with console.status(f"{source}: end to end"):
                before = capture.progress[source].applied
                started = time.perf_counter()
                bulk_insert(state, source, next_id, args.rows)
                wait_for(lambda s=source, b=before: capture.progress[s].applied - b >= args.rows)
                results[source]["e2e"] = args.rows / (time.perf_counter() - started)
                next_id += args.rows

        with console.status(f"steady 1k events/s per source for {args.lag_seconds:.0f} s"):
            lag_first_id = next_id
            stop_at = time.monotonic() + args.lag_seconds
            tick = 0
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                for source in ("psa", "erp"):
                    bulk_insert(state, source, next_id, 100)
                    next_id += 100
                tick += 1
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
            time.sleep(5)
        capture.stop.set()
        thread.join(timeout=60)
        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        for source in ("psa", "erp"):
            lags = (
                [
                    r[0]
                    for r in con.execute(
                        "SELECT epoch_ms(applied_at) - epoch_ms(CAST(after->>'created_at' AS TIMESTAMPTZ)) FROM cdc.changelog "
                        "WHERE source = ? AND table_name = 'bench_events' AND CAST(after->>'id' AS BIGINT) >= ?",
                        [source, lag_first_id],
                    ).fetchall()
                ]
                if source == "psa"
                else [
                    r[0]
                    for r in con.execute(
                        "SELECT epoch_ms(applied_at) - epoch_ms(CAST(after->>'created_at' AS TIMESTAMP)) "
                        "FROM cdc.changelog WHERE source = ? AND table_name = 'bench_events' AND CAST(after->>'id' AS BIGINT) >= ?",
                        [source, lag_first_id],
                    ).fetchall()
                ]
            )
            lags.sort()
            results[source]["lag_p50"] = statistics.median(lags) / 1000 if lags else float("nan")
            results[source]["lag_p95"] = lags[int(len(lags) * 0.95)] / 1000 if lags else float("nan")
            results[source]["lag_events"] = len(lags)
        con.close()
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)

    table = Table(title=f"CDC, {args.rows:,}-row transaction, steady 1k events/s per source")
    for col in (
        "reader",
        "reader alone ev/s",
        "end to end ev/s",
        "e2e / alone",
        "lag p50 s",
        "lag p95 s",
        "lag events",
    ):
        table.add_column(col, justify="right")
    names = {"psa": "PostgreSQL (embedded Debezium)", "erp": "MariaDB (binlog)"}
    for source, r in results.items():
        table.add_row(
            names[source],
            f"{r['alone']:,.0f}",
            f"{r['e2e']:,.0f}",
            f"{r['e2e'] / r['alone']:.0%}",
            f"{r['lag_p50']:.3f}",
            f"{r['lag_p95']:.3f}",
            f"{r['lag_events']:,}",
        )
    console.print(table)
    console.print(f"peak RSS of this process (Python + JVM): {peak_mb():,.0f} MB")


if __name__ == "__main__":
    main()
    leave_jvm(0)  # the JVM's shutdown would wait on Debezium's threads (the readers alone and the capture's)

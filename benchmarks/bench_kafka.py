"""Kafka path: publish and consume rates, and end-to-end lag through the broker at a steady 1k events/s.

Run: .venv/bin/python benchmarks/bench_kafka.py [--rows 50000] [--lag-seconds 20]

A private sandbox and a private tansu broker (loopback). `cdc publish` readers (embedded Debezium
for PostgreSQL, the binlog reader for MariaDB) feed a transactional producer; one consumer-group
member applies the topics to a DuckDB warehouse.
- publish: events/s from a `--rows`-row insert in each database until the last event is committed
  to Kafka (reading included);
- consume: events/s applying everything in the topics to the warehouse (group join excluded);
- lag: source commit to warehouse commit, through the broker, at 1k events/s (500/s per database).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cdc import bulk_insert, create_bench_tables, peak_mb, wait_for  # noqa: E402

from cdc.binlog import BinlogReader  # noqa: E402
from cdc.debezium import DebeziumPostgresReader  # noqa: E402
from cdc.kafka import KafkaPublishSink, KafkaReader  # noqa: E402
from cdc.runner import Capture  # noqa: E402
from coexist import sandbox  # noqa: E402
from coexist.config import KafkaSource, MariaDBSource, PostgresSource, PublishSettings, Settings  # noqa: E402
from tests.conftest import tansu_broker  # noqa: E402

console = Console()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cx-bench-kafka-", dir="/tmp"))
    os.chmod(data_dir, 0o755)
    settings = Settings(data_dir=data_dir)
    out: dict[str, Any] = {}
    try:
        with tansu_broker() as broker:
            state = sandbox.up(settings)
            create_bench_tables(state)
            srcs = sandbox.sandbox_sources(state)
            pg, my = srcs["psa"].model_copy(update={"slot_name": "coexist_publish"}), srcs["erp"]
            assert isinstance(pg, PostgresSource) and isinstance(my, MariaDBSource)
            publisher = Capture(
                KafkaPublishSink(PublishSettings(bootstrap_servers=broker)),
                [
                    DebeziumPostgresReader("psa", pg, data_dir / "publish", batch_size=5000),
                    BinlogReader("erp", my, batch_size=5000, poll_seconds=0.1),
                ],
            )
            pub_thread = threading.Thread(target=publisher.run, kwargs={"install_signals": False}, daemon=True)
            pub_thread.start()
            with console.status("publisher: JVM start, slot active"):

                def slot_active() -> bool:
                    with sandbox.pg_app_connect(state) as conn:
                        row = conn.execute(
                            "SELECT active FROM pg_replication_slots WHERE slot_name = 'coexist_publish'"
                        ).fetchone()
                    return bool(row and row[0])

                wait_for(slot_active, 180)
                time.sleep(2)
            next_id = 1
            for source in ("psa", "erp"):
                with console.status(f"publish {args.rows:,} rows from {source}"):
                    before = publisher.progress[source].applied
                    started = time.perf_counter()
                    bulk_insert(state, source, next_id, args.rows)
                    wait_for(lambda s=source, b=before: publisher.progress[s].applied - b >= args.rows)
                    out[f"publish_{source}"] = args.rows / (time.perf_counter() - started)
                    next_id += args.rows

            consumer = KafkaReader(
                "bus",
                KafkaSource(kind="kafka", bootstrap_servers=broker, topic_pattern=r"(psa|erp)\..*"),
                batch_size=5000,
            )
            capture = Capture(settings.warehouse_path, [consumer])
            con_thread = threading.Thread(target=capture.run, kwargs={"install_signals": False}, daemon=True)
            total = sum(p.applied for p in publisher.progress.values())
            con_thread.start()
            with console.status(f"consume {total:,} events"):
                wait_for(lambda: capture.progress["bus"].applied > 0, 120)
                first, started = capture.progress["bus"].applied, time.perf_counter()
                wait_for(lambda: capture.progress["bus"].applied >= total)
                out["consume"] = (capture.progress["bus"].applied - first) / (time.perf_counter() - started)

            with console.status(f"steady 1k events/s through the broker for {args.lag_seconds:.0f} s"):
                lag_first_id = next_id
                stop_at = time.monotonic() + args.lag_seconds
                while time.monotonic() < stop_at:
                    t0 = time.monotonic()
                    for source in ("psa", "erp"):
                        bulk_insert(state, source, next_id, 50)
                        next_id += 50
                    time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
                time.sleep(8)
            capture.stop.set()
            publisher.stop.set()
            con_thread.join(timeout=60)
            pub_thread.join(timeout=60)
            con = duckdb.connect(str(settings.warehouse_path), read_only=True)
            for source, kind in (("psa", "TIMESTAMPTZ"), ("erp", "TIMESTAMP")):
                lags = sorted(
                    r[0]
                    for r in con.execute(
                        f"SELECT epoch_ms(applied_at) - epoch_ms(CAST(after->>'created_at' AS {kind})) FROM cdc.changelog "
                        "WHERE source = ? AND table_name = 'bench_events' AND CAST(after->>'id' AS BIGINT) >= ?",
                        [source, lag_first_id],
                    ).fetchall()
                )
                out[f"lag_{source}"] = (
                    (statistics.median(lags) / 1000, lags[int(len(lags) * 0.95)] / 1000, len(lags))
                    if lags
                    else (float("nan"), float("nan"), 0)
                )
            con.close()
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)

    table = Table(title=f"Kafka path (tansu on loopback), {args.rows:,}-row insert per database")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("publish, PostgreSQL (Debezium) -> Kafka", f"{out['publish_psa']:,.0f} events/s")
    table.add_row("publish, MariaDB (binlog) -> Kafka", f"{out['publish_erp']:,.0f} events/s")
    table.add_row("consume, Kafka -> DuckDB (one member)", f"{out['consume']:,.0f} events/s")
    for source in ("psa", "erp"):
        p50, p95, n = out[f"lag_{source}"]
        table.add_row(
            f"end-to-end lag {source}, p50 / p95",
            f"{p50:.3f} s / {p95:.3f} s ({n:,} events, {n / args.lag_seconds:,.0f}/s)",
        )
    console.print(table)
    console.print(f"peak RSS of this process (Python + JVM, publisher and consumer): {peak_mb():,.0f} MB")


if __name__ == "__main__":
    main()

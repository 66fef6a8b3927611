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
import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cdc import bulk_insert, create_bench_tables, peak_mb, wait_for  # noqa: E402

from cdc.binlog import BinlogReader  # noqa: E402
from cdc.config import KafkaSource, MariaDBSource, PostgresSource, PublishSettings  # noqa: E402
from cdc.debezium import DebeziumPostgresReader  # noqa: E402
from cdc.events import DebeziumDecoder  # noqa: E402
from cdc.kafka import Encoder, KafkaPublishSink, KafkaReader  # noqa: E402
from cdc.runner import Capture  # noqa: E402
from cdc.sink import Batch, Offset  # noqa: E402
from coexist.config import Settings  # noqa: E402
from coexist.sandbox import servers as sandbox  # noqa: E402
from tests.harness import tansu_broker  # noqa: E402

console = Console()


FIELDS = (
    [("id", "int64"), ("customer", "string"), ("project", "string"), ("resource", "string")]
    + [(f"attr_{i:02d}", "string") for i in range(14)]
    + [("hours", "string"), ("amount", "string"), ("work_date", "int32"), ("updated_at", "int64")]
)


def synthetic_event(i: int) -> tuple[bytes, bytes]:
    """A Debezium PostgreSQL change with its schema, about 3.5 KB as the connector writes them."""
    names = {"work_date": "io.debezium.time.Date", "updated_at": "io.debezium.time.MicroTimestamp"}
    row_fields = [
        {"type": t, "optional": f != "id", "field": f} | ({"name": names[f], "version": 1} if f in names else {})
        for f, t in FIELDS
    ]
    row_schema = {"type": "struct", "fields": row_fields, "optional": True, "name": "bench.public.time_entries.Value"}
    source_fields = (
        [{"type": "string", "optional": False, "field": f} for f in ("version", "connector", "name")]
        + [
            {"type": "int64", "optional": False, "field": "ts_ms"},
            {
                "type": "string",
                "optional": True,
                "name": "io.debezium.data.Enum",
                "version": 1,
                "parameters": {
                    "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"
                },
                "default": "false",
                "field": "snapshot",
            },
        ]
        + [{"type": "string", "optional": False, "field": f} for f in ("db", "schema", "table")]
        + [{"type": "int64", "optional": True, "field": f} for f in ("txId", "lsn", "xmin")]
    )
    schema = {
        "type": "struct",
        "fields": [
            dict(row_schema, field="before"),
            dict(row_schema, field="after"),
            {
                "type": "struct",
                "fields": source_fields,
                "optional": False,
                "name": "io.debezium.connector.postgresql.Source",
                "field": "source",
            },
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
        "optional": False,
        "name": "bench.public.time_entries.Envelope",
        "version": 2,
    }
    after = {"id": i, "customer": f"C{i % 9973:06d}", "project": f"PRJ-{i % 500:05d}", "resource": f"EMP{i % 800:04d}"}
    after |= {f"attr_{k:02d}": f"value {k} of row {i} with some text" for k in range(8)}
    after |= {
        "hours": "7.50",
        "amount": "1125.00",
        "work_date": 20000 + i % 300,
        "updated_at": 1_764_000_000_000_000 + i,
    }
    payload = {
        "before": None,
        "after": after,
        "source": {
            "version": "3.6.3.Final",
            "connector": "postgresql",
            "name": "bench",
            "ts_ms": 1_764_000_000_000,
            "snapshot": "false",
            "db": "psa",
            "schema": "public",
            "table": "time_entries",
            "txId": 1000 + i,
            "lsn": 100_000 + i,
            "xmin": None,
        },
        "op": "c",
        "ts_ms": 1_764_000_000_000,
    }
    key = {
        "schema": {
            "type": "struct",
            "fields": [{"type": "int64", "optional": False, "field": "id"}],
            "optional": False,
            "name": "bench.public.time_entries.Key",
        },
        "payload": {"id": i},
    }
    return orjson.dumps(key), orjson.dumps({"schema": schema, "payload": payload})


def consume_synthetic(n: int, partitions: int, data_dir: Path, batch_size: int) -> None:
    """Consume n synthetic 3.5 KB events from 4 partitions: the raw client, the raw client with JSON
    decoding in Python, and coexist (bulk decode + sink into a warehouse), on the same topic."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    results: dict[str, tuple[float, float]] = {}
    with tansu_broker() as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker)
        admin.create_topics([NewTopic("bench.public.time_entries", partitions, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=broker, linger_ms=20, batch_size=1 << 20, acks=1)
        size = 0
        with console.status(f"producing {n:,} events"):
            for i in range(n):
                key, value = synthetic_event(i)
                size += len(value)
                producer.send("bench.public.time_entries", key=key, value=value, partition=i % partitions)
            producer.flush()
            producer.close()
        console.print(f"{n:,} events of {size / n:,.0f} bytes on average in {partitions} partitions")

        def raw(decode: bool) -> float:
            consumer = KafkaConsumer(
                "bench.public.time_entries",
                bootstrap_servers=broker,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                group_id=None,
                max_poll_records=5000,
            )
            seen = 0
            started = time.perf_counter()
            while seen < n:
                for records in consumer.poll(timeout_ms=1000).values():
                    seen += len(records)
                    if decode:
                        for r in records:
                            orjson.loads(r.value)
            rate = n / (time.perf_counter() - started)
            consumer.close()
            return rate

        def confluent(decode: bool) -> float | None:
            try:
                from confluent_kafka import Consumer
            except ImportError:
                return None
            consumer = Consumer(
                {
                    "bootstrap.servers": broker,
                    "group.id": f"bench-confluent-{decode}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
            consumer.subscribe(["bench.public.time_entries"])
            seen, started = 0, None
            while seen < n:
                # consume() waits its whole timeout when fewer than num_messages are fetched: keep it short.
                batch = consumer.consume(num_messages=5000, timeout=0.05)
                if batch and started is None:
                    started = time.perf_counter()  # the group join is not counted
                for message in batch:
                    if message.error() is None:
                        seen += 1
                        if decode:
                            orjson.loads(message.value())
            rate = n / (time.perf_counter() - (started or time.perf_counter()))
            consumer.close()
            return rate

        results["kafka-python, raw"] = (raw(False), peak_mb())
        results["kafka-python + orjson decode per event"] = (raw(True), peak_mb())
        for decode in (False, True):
            rate = confluent(decode)
            if rate is not None:
                label = "confluent-kafka (librdkafka), " + ("+ orjson decode per event" if decode else "raw")
                results[label] = (rate, peak_mb())
        for client in ("kafka-python", "confluent-kafka"):
            reader = KafkaReader(
                "bench",
                KafkaSource(
                    kind="kafka",
                    bootstrap_servers=broker,
                    topics=["bench.public.time_entries"],
                    group_id=f"bench-coexist-{client}",
                    client=client,
                ),
                batch_size=batch_size,
            )
            capture = Capture(data_dir / f"consume-{client}.duckdb", [reader])
            thread = threading.Thread(target=capture.run, kwargs={"install_signals": False}, daemon=True)
            thread.start()
            wait_for(lambda c=capture: c.progress["bench"].applied > 0, 120)  # the group join is not counted
            first, started = capture.progress["bench"].applied, time.perf_counter()
            wait_for(lambda c=capture: c.progress["bench"].applied >= n, 600)
            rate = (n - first) / (time.perf_counter() - started)
            results[f"coexist with {client}: consume, decode, apply to DuckDB"] = (rate, peak_mb())
            capture.stop.set()
            thread.join(timeout=60)
        publish_synthetic(broker, [synthetic_event(i) for i in range(n)])
    print_rates(
        f"consuming {n:,} Debezium JSON events with schemas, {partitions} partitions, one member", "reader", results
    )
    for client, raw in (
        ("kafka-python", "kafka-python + orjson decode per event"),
        ("confluent-kafka", "confluent-kafka (librdkafka), + orjson decode per event"),
    ):
        ours = results[f"coexist with {client}: consume, decode, apply to DuckDB"][0]
        console.print(f"coexist with {client} / ({raw}): {ours / results[raw][0]:.2f}")


def print_rates(title: str, what: str, results: dict[str, tuple[float, float]]) -> None:
    table = Table(title=title)
    table.add_column(what)
    table.add_column("events/s", justify="right")
    table.add_column("peak RSS MB (process)", justify="right")
    for name, (rate, peak) in results.items():
        table.add_row(name, f"{rate:,.0f}", f"{peak:,.0f}")
    console.print(table)


def publish_synthetic(broker: str, messages: list[tuple[bytes, bytes]], batch_size: int = 5000) -> None:
    """The publisher alone on the synthetic events, decoded as a database reader hands them over
    (ChangeEvents in batches of 5,000): coexist's transactional sink on each client, next to the raw
    confluent-kafka producer sending the same bytes (no transaction)."""
    from confluent_kafka import Producer

    decoder = DebeziumDecoder("bench")
    events = [e for e in (decoder.decode(k, v) for k, v in messages) if e is not None]
    batches = [
        Batch(events=events[i : i + batch_size], offsets=[Offset("bench", "", events[i : i + batch_size][-1].position)])
        for i in range(0, len(events), batch_size)
    ]
    results: dict[str, tuple[float, float]] = {}
    encoded = [Encoder().encode(e) for e in events]
    raw = Producer({"bootstrap.servers": broker, "linger.ms": 5, "acks": "all", "partitioner": "murmur2_random"})
    started = time.perf_counter()
    for topic, key, value in encoded:
        while True:
            try:
                raw.produce("raw." + topic, key=key, value=value)
                break
            except BufferError:
                raw.poll(0.05)
    raw.flush()
    results["confluent-kafka raw producer, the same bytes, no transaction"] = (
        len(encoded) / (time.perf_counter() - started),
        peak_mb(),
    )
    del encoded, raw
    for client in ("kafka-python", "confluent-kafka"):
        sink = KafkaPublishSink(
            PublishSettings(bootstrap_servers=broker, client=client, transactional_id=f"bench-{client}")  # type: ignore[arg-type]
        )
        sink.apply(batches[0])  # topics created, producer connected
        with console.status(f"publishing {len(events):,} events with {client}"):
            started = time.perf_counter()
            for batch in batches[1:]:
                sink.apply(batch)
            rate = sum(len(b.events) for b in batches[1:]) / (time.perf_counter() - started)
        sink.close()
        results[f"coexist publisher with {client}: encode, one transaction per batch"] = (rate, peak_mb())
    print_rates(
        f"publishing {len(events):,} events (batches of {batch_size:,}), the publisher alone", "producer", results
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--synthetic", type=int, default=60_000, help="events for the consume comparison (0: skip)")
    parser.add_argument("--synthetic-only", action="store_true", help="run the consume comparison only")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=KafkaSource.model_fields["batch_size"].default,
        help="coexist's events per batch",
    )
    args = parser.parse_args()
    if args.synthetic:
        scratch = Path(tempfile.mkdtemp(prefix="cx-bench-kafka-synthetic-"))
        try:
            consume_synthetic(args.synthetic, 4, scratch, args.batch_size)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if args.synthetic_only:
            return
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
                source := KafkaSource(kind="kafka", bootstrap_servers=broker, topic_pattern=r"(psa|erp)\..*"),
                batch_size=source.batch_size,
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

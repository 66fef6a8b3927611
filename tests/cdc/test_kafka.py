"""Kafka both ways, through a real Kafka-protocol broker (tansu): real Debezium JSON in; `cdc publish`
from both sandbox databases out, two consumers in one group, one SIGKILLed, the replica still equal."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from coexist.config import Settings
from coexist.sandbox import generator, workload
from coexist.sandbox import servers as sandbox
from tests.cdc.test_events import fixture, strip_schema
from tests.harness import assert_changelog_exactly_once, cli, make_data_dir, tansu_broker


@pytest.mark.slow
@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_real_debezium_json_through_the_broker(tmp_path: Path, client: str) -> None:
    with tansu_broker() as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker)
        admin.create_topics([NewTopic("psa.public.projects", 2, 1), NewTopic("legacy.erp.projects", 1, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=broker)
        key, value = fixture("pg_u.json")
        producer.send("psa.public.projects", key=key.encode(), value=value.encode() if value else None)
        tomb_key, tomb = fixture("pg_tombstone.json")
        producer.send("psa.public.projects", key=tomb_key.encode(), value=tomb)
        producer.send("psa.public.projects", key=b'{"id": 9}', value=b'{"not": "an envelope"')
        my_key, my_value = fixture("mariadb_u.json")
        assert my_value is not None
        producer.send("legacy.erp.projects", key=strip_schema(my_key).encode(), value=strip_schema(my_value).encode())
        my_tomb_key, my_tomb = fixture("mariadb_tombstone.json")
        producer.send("legacy.erp.projects", key=my_tomb_key.encode(), value=my_tomb)
        producer.flush()
        producer.close()
        (tmp_path / "coexist.toml").write_text(f"""
warehouse = "{tmp_path / "wh.duckdb"}"
[sources.bus]
kind = "kafka"
bootstrap_servers = "{broker}"
group_id = "fixtures"
client = "{client}"
topic_pattern = '(psa|legacy)\\..*'
tables = {{ "legacy.erp.projects" = "erp_legacy.projects" }}
""")
        env = {"COEXIST_CONFIG": str(tmp_path / "coexist.toml")}
        first = cli(tmp_path, "cdc", "run", "--until-idle", "--idle-seconds", "2", "--json", env=env, timeout=120)
        assert [(r["source"], r["applied"]) for r in json.loads(first.stdout)] == [("bus", 2)], first.stderr
        again = cli(tmp_path, "cdc", "run", "--until-idle", "--idle-seconds", "2", "--json", env=env, timeout=120)
        assert [(r["source"], r["applied"]) for r in json.loads(again.stdout)] == [("bus", 0)], again.stderr
        status = json.loads(cli(tmp_path, "cdc", "status", "--json", env=env).stdout)
        bus = next(s for s in status if s["source"] == "bus")
        assert bus["reachable"] and bus["lag_total"] == 0 and len(bus["partitions"]) == 3

    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        pg = con.execute("SELECT id, name, budget FROM replica_psa.projects").fetchall()
        assert len(pg) == 1 and pg[0][0] == 1 and pg[0][1].endswith("(renamed)")
        assert isinstance(pg[0][2], decimal.Decimal) and pg[0][2] != decimal.Decimal("12500.50")
        budget_type = con.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = "
            "'replica_psa' AND table_name = 'projects' AND column_name = 'budget'"
        ).fetchall()[0][0]
        assert budget_type == "DECIMAL(12,2)"
        mapped = con.execute("SELECT id, name FROM replica_erp_legacy.projects").fetchall()
        assert len(mapped) == 1 and mapped[0][1].endswith("(renamed)")
        dead = con.execute("SELECT source, reason, partition FROM cdc.dead_letter").fetchall()
        assert len(dead) == 1 and dead[0][0] == "psa" and "not JSON" in dead[0][1]
        assert dead[0][2].startswith("kafka:psa.public.projects:")
        log = con.execute("SELECT source, table_name, op FROM cdc.changelog ORDER BY 1").fetchall()
        assert log == [("erp_legacy", "projects", "u"), ("psa", "projects", "u")]
    finally:
        con.close()


@pytest.mark.slow
def test_publish_two_consumers_one_killed_replica_equals_source() -> None:
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tansu_broker() as broker:
            state = sandbox.up(settings)
            generator.seed(state, generator.Scale.named("tiny", seed=13), data_dir / "manifest")
            (data_dir / "coexist.toml").write_text(f"""
[publish]
bootstrap_servers = "{broker}"
[sources.kafka]
kind = "kafka"
bootstrap_servers = "{broker}"
topic_pattern = '(psa|erp)\\..*'
hold_seconds = 0.5
max_poll_interval_ms = 10000
batch_size = 500
""")
            env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")} | {
                "COEXIST_DATA_DIR": str(data_dir),
                "COEXIST_CDC__BATCH_SIZE": "500",
            }

            def start(name: str, *args: str) -> subprocess.Popen[bytes]:
                with open(data_dir / f"{name}.log", "wb") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "coexist", *args], cwd=data_dir, env=env, stdout=log, stderr=log
                    )
                procs.append(proc)
                return proc

            def logs(name: str) -> str:
                return (data_dir / f"{name}.log").read_text(errors="replace")

            publisher = start("publisher", "cdc", "publish")
            # Members join once the publisher has created the topics (its snapshot is in them).
            admin = KafkaAdminClient(bootstrap_servers=broker)
            try:  # closed even when this fails: its thread would log into the next test's capture
                deadline = time.monotonic() + 120
                while len([t for t in admin.list_topics() if re.match(r"(psa|erp)\.", t)]) < 19:
                    assert time.monotonic() < deadline and publisher.poll() is None, logs("publisher")[-2000:]
                    time.sleep(0.5)
            finally:
                admin.close()
            consumer_a = start("a", "cdc", "run")
            consumer_b = start("b", "cdc", "run", "--until-idle", "--idle-seconds", "10")
            stop = threading.Event()
            stats: dict[str, workload.WorkloadStats] = {}
            worker = threading.Thread(
                target=lambda: stats.update(workload.run(state, stop, tx_per_second=25, seed=13, ddl_after=1e9))
            )
            worker.start()
            try:
                # Kill A mid-stream, while both members own partitions and the group is settled: tansu
                # wedges the group for good when a member dies half-way through a rebalance.
                def settled(name: str) -> bool:
                    moves = [line for line in logs(name).splitlines() if "partitions " in line]
                    if not moves or "assigned: ['" not in moves[-1]:
                        return False
                    at = dt.datetime.strptime(moves[-1][:23], "%Y-%m-%d %H:%M:%S,%f")
                    return (dt.datetime.now() - at).total_seconds() > 8

                deadline = time.monotonic() + 150
                while not (settled("a") and settled("b")) and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert settled("a") and settled("b"), (logs("a")[-1500:], logs("b")[-1500:])
                assert consumer_a.poll() is None, logs("a")[-3000:]
                consumer_a.send_signal(signal.SIGKILL)
                consumer_a.wait()
                time.sleep(12)
            finally:
                stop.set()
                worker.join()
            assert stats["psa"].transactions > 50 and stats["erp"].transactions > 50
            try:
                code_b = consumer_b.wait(timeout=150)
            except subprocess.TimeoutExpired:
                consumer_b.send_signal(signal.SIGUSR1)
                time.sleep(1)
                if os.environ.get("CX_KEEP"):
                    shutil.copytree(
                        data_dir, os.environ["CX_KEEP"], dirs_exist_ok=True, ignore=shutil.ignore_patterns("sandbox")
                    )
                raise AssertionError("consumer B never went idle:\n" + logs("b")[-6000:]) from None
            assert code_b == 0, logs("b")[-3000:]
            publisher.send_signal(signal.SIGTERM)
            assert publisher.wait(timeout=60) == 0, logs("publisher")[-3000:]

            assigned_a = [
                len(re.findall(r"'[^']+'", line)) for line in logs("a").splitlines() if "partitions assigned" in line
            ]
            assigned_b = [
                len(re.findall(r"'[^']+'", line)) for line in logs("b").splitlines() if "partitions assigned" in line
            ]
            assert assigned_a and max(assigned_a) > 0, logs("a")[-2000:]
            assert len(assigned_b) >= 2 and assigned_b[-1] > max(assigned_b[:-1]), assigned_b  # B took A's over

            verify = cli(data_dir, "cdc", "verify", "--json", check=False)
            diffs = json.loads(verify.stdout)
            if os.environ.get("CX_KEEP"):
                shutil.copytree(
                    data_dir, os.environ["CX_KEEP"], dirs_exist_ok=True, ignore=shutil.ignore_patterns("sandbox")
                )  # CX_KEEP=dir keeps the logs to read
            assert verify.returncode == 0 and all(d["equal"] for d in diffs), (
                [
                    (d["source"], d["table"], d["missing"][:5], d["extra"][:5], d["different"][:5])
                    for d in diffs
                    if not d["equal"]
                ],
                logs("b")[-2000:],
            )
            assert {("psa", "time_entries"), ("erp", "labor_postings")} <= {(d["source"], d["table"]) for d in diffs}
        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        try:
            assert_changelog_exactly_once(con)
            partitions = con.execute("SELECT count(*) FROM cdc.offsets WHERE partition LIKE 'kafka:%'").fetchall()
            assert partitions[0][0] >= 30
        finally:
            con.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_kafka_client_checks_crcs_in_c() -> None:
    """The pure-Python CRC32C fallback holds consuming to ~2k events/s; the dependency must be there."""
    from cdc.kafka import crc_is_slow

    assert not crc_is_slow()


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_the_publisher_commits_each_batch_with_its_position_on_either_client(client: str) -> None:
    """Both producer libraries: one transaction per batch (an aborted one stays invisible), keys on
    the partition the Java client would choose (murmur2), values that decode to what was published,
    and the position read back by the next publisher."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.partitioner.default import murmur2

    from cdc.config import PublishSettings
    from cdc.events import ChangeEvent, DebeziumDecoder, position_key
    from cdc.kafka import KafkaPublishSink
    from cdc.sink import Batch, Offset

    columns: dict[str, Any] = {"id": "BIGINT", "name": "VARCHAR", "budget": "DECIMAL(12,2)"}
    events = [
        ChangeEvent(
            "psa",
            "projects",
            "c" if i < 40 else "u",
            {"id": i % 40},
            None,
            {"id": i % 40, "name": f'Ünïcode "{i}" \\ {"x" * (i % 7)}', "budget": f"{i * 1000}.5{i % 10}"},
            position_key(1, i),
            1_700_000_000_000 + i,
            source_info={"schema": "public"},
            columns=columns,
        )
        for i in range(60)
    ]
    with tansu_broker() as broker:
        settings = PublishSettings(bootstrap_servers=broker, client=client, partitions=3)  # type: ignore[arg-type]
        sink = KafkaPublishSink(settings)
        assert sink.offset("psa") is None
        assert sink.apply(Batch(events=events[:30], offsets=[Offset("psa", "", events[29].position)])).applied == 30
        sink.producer.begin_transaction()
        sink.producer.send("psa.public.projects", key=b'{"id":999}', value=b'{"aborted": true}')
        sink.producer.abort_transaction()
        assert sink.apply(Batch(events=events[30:], offsets=[Offset("psa", "", events[-1].position)])).applied == 30
        sink.close()

        again = KafkaPublishSink(settings)
        stored = again.offset("psa")
        again.close()
        assert stored is not None and stored["position"] == events[-1].position

        consumer = KafkaConsumer(
            bootstrap_servers=broker,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        parts = [TopicPartition("psa.public.projects", p) for p in range(3)]
        consumer.assign(parts)
        received: list[Any] = []
        deadline = time.monotonic() + 30
        while len(received) < 60 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(records)
        time.sleep(1)
        received.extend(r for records in consumer.poll(timeout_ms=1000).values() for r in records)
        consumer.close()

    assert len(received) == 60
    decoder = DebeziumDecoder("psa")
    by_position = {e.position: e for e in events}
    seen = set()
    for record in received:
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 3
        event = decoder.decode(record.key, record.value)
        assert event is not None
        published = by_position[event.source_info["coexist_position"]]
        seen.add(published.position)
        assert (event.op, event.key, event.after, event.ts_ms) == (
            published.op,
            published.key,
            published.after,
            published.ts_ms,
        )
        assert {name: kind.replica for name, kind in event.columns.items()} == {
            "id": "BIGINT",
            "name": "VARCHAR",
            "budget": "DECIMAL(12,2)",
        }
    assert len(seen) == 60
    by_partition: dict[int, list[str]] = {}
    for record in received:
        by_partition.setdefault(record.partition, []).append(_published_position(record.value))
    assert all(positions == sorted(positions) for positions in by_partition.values())


def _published_position(value: bytes) -> str:
    return str(json.loads(value)["payload"]["source"]["coexist_position"])


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_polls_waiting_behind_a_slow_apply_go_in_together_and_change_nothing(tmp_path: Path, client: str) -> None:
    """Group commit: polls that arrive while a batch is applied wait and are applied after it, as one
    batch where they hold frames only, one batch each where a poll has changes decoded one by one
    (tombstones, TRUNCATE, placeholders, ...). A slow sink ends with the same warehouse as a fast one:
    the same replica, changelog, dead letters and counts, every change once, and nothing left to read."""
    import random

    from cdc.config import KafkaSource
    from cdc.kafka import KafkaReader
    from cdc.sink import Batch, DuckDBSink
    from tests.cdc.test_frames import contents, envelope, row_of, stream

    rng = random.Random(11)

    def partition(key: str | bytes | None) -> int:
        """A key's changes stay in one partition, as a producer keeps them (order holds within one only)."""
        try:
            return int(json.loads(key or "{}").get("id", 0)) % 2
        except (ValueError, AttributeError):
            return 0

    messages = [
        (m.partition.split(":")[1], partition(m.key), m.key, m.value)
        for m in stream(7, 600)
        if m.key is not None or m.value is not None  # a keyless tombstone is nothing a broker carries
    ]
    for offset in range(600, 1800):  # plain changes: the polls that can be joined
        row = row_of("orders", rng.randint(0, 300), rng)
        key = json.dumps({"id": row["id"]})
        messages.append(("orders", partition(key), key, envelope("orders", "c", None, row, offset)))

    def as_bytes(text: str | bytes | None) -> bytes | None:
        return text.encode() if isinstance(text, str) else text

    with tansu_broker() as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker)
        admin.create_topics([NewTopic(f"src.public.{t}", 2, 1) for t in ("orders", "notes", "docs")])
        admin.close()

        def produce(reader: Any) -> None:
            """The messages in bursts of 30, 50 ms apart, once `reader` has its partitions (a live stream:
            polls smaller than a batch). The first burst goes before: the member has something to read
            when it joins, so it does not go idle while the stream starts."""
            producer = KafkaProducer(bootstrap_servers=broker, linger_ms=0)
            for start in range(0, len(messages), 30):
                for table, partition, key, value in messages[start : start + 30]:
                    producer.send(f"src.public.{table}", key=as_bytes(key), value=as_bytes(value), partition=partition)
                producer.flush()
                deadline = time.monotonic() + 60
                while not reader.assigned and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.05)
            producer.close()

        def capture(name: str, pause: float, feed: Any = None) -> tuple[list[int], list[int], int]:
            """A member run until idle (fed by `feed`), then another of its group: the changes in each
            batch each applied, and how many polls the first joined to the poll before them."""
            config = KafkaSource(
                kind="kafka", bootstrap_servers=broker, group_id=name, topic_pattern=r"src\..*", client=client
            )  # type: ignore[call-arg]
            runs: tuple[list[int], list[int]] = ([], [])
            joined = 0
            with DuckDBSink(tmp_path / f"{name}.duckdb") as sink:
                for sizes in runs:

                    def apply(batch: Batch, sizes: list[int] = sizes) -> Any:
                        time.sleep(pause)
                        sizes.append(len(batch.events) + sum(len(f) for f in batch.frames))
                        return sink.apply(batch)

                    reader = KafkaReader(name, config, batch_size=1000)
                    side = threading.Thread(target=feed, args=(reader,)) if feed is not None else None
                    if side is not None:
                        side.start()
                    reader.run(apply, sink.offset, threading.Event(), 2)
                    joined = joined or reader.joined
                    if side is not None:
                        side.join()
                    feed = None
            return (*runs, joined)

        slow, slow_again, joined = capture("slow", 0.4, produce)
        fast, fast_again, _ = capture("fast", 0.0)
    assert joined > 0, (slow, fast)  # polls that came while a batch was applied went in together
    assert sum(fast) == sum(slow) and sum(fast_again) == sum(slow_again) == 0  # nothing was left to read
    reference, joined = contents(tmp_path / "fast.duckdb"), contents(tmp_path / "slow.duckdb")
    for part in reference:
        if part != "tables":  # which copy of a keyless table's identical rows stays depends on the batches
            assert joined[part] == reference[part], part
    for table in reference["tables"]:
        sql = f"SELECT * EXCLUDE (_cdc_position, _cdc_ts_ms) FROM replica_src.{table} ORDER BY ALL"
        with (
            duckdb.connect(str(tmp_path / "fast.duckdb"), read_only=True) as a,
            duckdb.connect(str(tmp_path / "slow.duckdb"), read_only=True) as b,
        ):
            assert a.execute(sql).fetchall() == b.execute(sql).fetchall(), table
    assert reference["tables"]["orders"] and reference["dead"]
    with duckdb.connect(str(tmp_path / "slow.duckdb"), read_only=True) as con:  # each message's change once
        twice = "SELECT partition, position FROM cdc.changelog GROUP BY ALL HAVING count(*) > 1"
        assert con.execute(twice).fetchall() == []

"""Kafka, both ways: Debezium topics in (a consumer group) and Debezium topics out (`cdc publish`).

In: `KafkaReader` consumes `<prefix>.<db>.<table>` topics (JSON with or without schemas,
tombstones skipped) and hands batches to the same DuckDB sink as every reader. Each Kafka
partition is a partition of its source in `cdc.offsets` (`kafka:<topic>:<n>`) with the next
offset to read in `resume`; on assignment the reader seeks to the warehouse's offsets, not the
broker's, and commits to Kafka only after the warehouse has committed. A crash between the
two commits therefore re-reads nothing twice into the warehouse and skips nothing.

Out: `KafkaPublishSink` takes the batches of the database readers and writes them as Debezium
JSON (with schemas) under Debezium topic names, keyed by primary key, in one Kafka transaction
per batch together with the reader's position (in a compacted offsets topic, as Kafka Connect
does); a restart reads its position back from that topic, so it neither skips nor repeats.
Events published by coexist carry their source position, and a partition's events are
position-checked by the sink, a second guard against a repeat.
"""

from __future__ import annotations

import contextlib
import decimal
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from cdc import confluent
from cdc.config import KafkaSource, PublishSettings
from cdc.events import (
    ChangeEvent,
    DeadLetter,
    DebeziumDecoder,
    dumps,
    dumps_bytes,
    position_key,
)
from cdc.frame import BulkDecoder, EventFrame, Message
from cdc.sink import ApplyStats, Batch, Offset
from cdc.types import ColumnType, connect_schema, of_replica

log = logging.getLogger("coexist.kafka")


def crc_is_slow() -> bool:
    """kafka-python checks every record batch's CRC32C: with the `crc32c` C extension missing it
    falls back to pure Python, which holds consuming to about 2,000 events/s."""
    from kafka.record import util

    return getattr(util, "crc32c_c", None) is None


def _warn_if_slow_crc() -> None:
    if crc_is_slow():
        log.warning(
            "kafka-python is using its pure-Python CRC32C (about 25x slower): install the crc32c "
            "package (`pip install crc32c`; ./dev installs it) for full speed"
        )


@dataclass(slots=True)
class _TablePlan:
    value_schema: dict[str, Any]
    key_schema: dict[str, Any]
    value_head: bytes = b""
    """`{"schema":<value schema>,"payload":` as bytes: JsonConverter's layout, serialised once."""
    key_head: bytes = b""

    def __post_init__(self) -> None:
        self.value_head = b'{"schema":' + dumps_bytes(self.value_schema) + b',"payload":'
        self.key_head = b'{"schema":' + dumps_bytes(self.key_schema) + b',"payload":'


def topic_name(event: ChangeEvent) -> str:
    """Debezium's `<topic.prefix>.<schema or database>.<table>`, with the source name as the prefix."""
    middle = event.source_info.get("schema") or event.source_info.get("db") or "default"
    return f"{event.source}.{middle}.{event.table}"


class Encoder:
    """ChangeEvents to Debezium key/value JSON with schemas; one plan per table schema.

    Values go out in their wire form with the schema that describes it: a PostgreSQL column with
    Debezium's own field schema, a MariaDB/MySQL column with coexist's (`io.coexist.mysql`), so a
    coexist reader decodes them exactly as the database reader would have."""

    def __init__(self) -> None:
        self._plans: dict[tuple[str, int, tuple[str, ...]], _TablePlan] = {}

    def _plan(self, topic: str, event: ChangeEvent) -> _TablePlan:
        columns = event.columns or {k: "VARCHAR" for k in (event.row or {})}
        cache = (topic, id(event.columns), tuple(event.key))
        plan = self._plans.get(cache)
        if plan is None:
            fields = []
            for name, kind in columns.items():
                column = kind if isinstance(kind, ColumnType) else of_replica(kind)
                fields.append(connect_schema(column) | {"optional": name not in event.key, "field": name})
            row = {"type": "struct", "fields": fields, "optional": True, "name": f"{topic}.Value"}
            source = {
                "type": "struct",
                "optional": False,
                "name": "io.debezium.connector.coexist.Source",
                "field": "source",
                "fields": [
                    {"type": "string", "optional": True, "field": f}
                    for f in ("version", "connector", "name", "db", "schema", "table", "snapshot", "coexist_position")
                ],
            }
            value_schema = {
                "type": "struct",
                "optional": False,
                "name": f"{topic}.Envelope",
                "version": 1,
                "fields": [
                    row | {"field": "before"},
                    row | {"field": "after"},
                    source,
                    {"type": "string", "optional": False, "field": "op"},
                    {"type": "int64", "optional": True, "field": "ts_ms"},
                ],
            }
            key_schema = {
                "type": "struct",
                "optional": False,
                "name": f"{topic}.Key",
                "fields": [f for f in fields if f["field"] in event.key],
            }
            plan = self._plans[cache] = _TablePlan(value_schema, key_schema)
        return plan

    def encode(self, event: ChangeEvent) -> tuple[str, bytes, bytes]:
        """(topic, key, value) for one event."""
        topic = topic_name(event)
        plan = self._plan(topic, event)
        source = {k: v for k, v in event.source_info.items() if not k.startswith("_")}
        source |= {"name": event.source, "table": event.table, "coexist_position": event.position}
        if event.snapshot is not None and "snapshot" not in source:  # a frame's event carries no source block
            source["snapshot"] = event.snapshot
        payload = {
            "before": event.before,
            "after": event.after,
            "source": source,
            "op": event.op,
            "ts_ms": event.ts_ms,
        }
        # The schemas are serialised once per plan; each event adds only its payload.
        key = plan.key_head + dumps_bytes(event.key or None) + b"}"
        return topic, key, plan.value_head + dumps_bytes(payload) + b"}"


# ---------------------------------------------------------------- publishing


class KafkaPublishSink:
    """The sink of `cdc publish`: one Kafka transaction per batch, data and reader position together."""

    def __init__(self, settings: PublishSettings, client_id: str = "coexist-publisher") -> None:
        self.settings = settings
        _warn_if_slow_crc()
        self.encoder = Encoder()
        self.admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id=client_id)
        self._topics: set[str] = set(self.admin.list_topics())
        self._ensure_topics([settings.offsets_topic], partitions=1, compact=True)
        self.positions = self._read_positions()
        self.producer: Any
        if settings.client == "confluent-kafka":
            self.producer = confluent.ConfluentProducer(
                settings.bootstrap_servers, client_id, settings.transactional_id
            )
        else:
            self.producer = KafkaProducer(
                bootstrap_servers=settings.bootstrap_servers,
                client_id=client_id,
                transactional_id=settings.transactional_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                max_in_flight_requests_per_connection=5,
            )
        self.producer.init_transactions()

    def _ensure_topics(self, names: list[str], partitions: int, compact: bool = False) -> None:
        missing = [n for n in names if n not in self._topics]
        if not missing:
            return
        configs = {"cleanup.policy": "compact"} if compact else {}
        with contextlib.suppress(TopicAlreadyExistsError):
            self.admin.create_topics([NewTopic(n, partitions, 1, topic_configs=configs) for n in missing])
        self._topics.update(missing)

    def _read_positions(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The last committed position per (source, partition), from the offsets topic."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        try:
            tp = TopicPartition(self.settings.offsets_topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            positions: dict[tuple[str, str], dict[str, Any]] = {}
            quiet = 0
            while quiet < 2:
                records = consumer.poll(timeout_ms=500)
                if not records:
                    high = consumer.highwater(tp)
                    if high is not None and consumer.position(tp) >= high:
                        break
                    quiet += 1
                    continue
                quiet = 0
                for message in records.get(tp, []):
                    if message.value:
                        doc = orjson.loads(message.value)
                        positions[(doc["source"], doc["partition"])] = doc
            return positions
        finally:
            consumer.close()

    def offset(self, source: str, partition: str = "") -> dict[str, Any] | None:
        return self.positions.get((source, partition))

    def apply(self, batch: Batch) -> ApplyStats:
        started = time.perf_counter()
        # Changes of a source transaction still open are published as they come (in order);
        # whoever consumes the topics sees Debezium's transaction block on each of them.
        events = [e for frame in batch.frames for e in frame.to_events()] + batch.events + batch.held
        events += [e for frame in batch.held_frames for e in frame.to_events()]
        stats = ApplyStats(received=len(events))
        encoded = []
        dead = list(batch.dead_letters)
        for event in events:
            try:
                encoded.append(self.encoder.encode(event))
            except (TypeError, ValueError, AttributeError, decimal.InvalidOperation) as exc:
                dead.append(
                    DeadLetter(
                        event.source,
                        event.table,
                        f"cannot encode for Kafka: {exc}",
                        dumps({"key": event.key, "after": event.after}),
                        event.position,
                        event.partition,
                    )
                )
        self._ensure_topics(sorted({t for t, _, _ in encoded}), self.settings.partitions)
        if dead:
            self._ensure_topics([self.settings.dead_letter_topic], 1)
        self.producer.begin_transaction()
        try:
            for topic, key, value in encoded:
                self.producer.send(topic, key=key, value=value)
            for d in dead:
                self.producer.send(
                    self.settings.dead_letter_topic,
                    value=orjson.dumps(
                        {"source": d.source, "table": d.table, "reason": d.reason, "raw": d.raw, "position": d.position}
                    ),
                )
            docs: list[dict[str, Any]] = [
                {
                    "source": o.source,
                    "partition": o.partition,
                    "position": o.position,
                    "resume": o.resume,
                    "snapshot_done": o.snapshot_done,
                }
                for o in batch.offsets
            ]
            for doc in docs:
                self.producer.send(
                    self.settings.offsets_topic,
                    key=f"{doc['source']}|{doc['partition']}".encode(),
                    value=orjson.dumps(doc),
                )
            self.producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(KafkaError):
                self.producer.abort_transaction()
            raise
        for doc in docs:
            self.positions[(doc["source"], doc["partition"])] = doc
        stats.applied = len(encoded)
        stats.dead_letters = len(dead)
        stats.seconds = time.perf_counter() - started
        newest = max((e.ts_ms for e in events), default=0)
        stats.lag_ms = int(time.time() * 1000) - newest if newest else None
        return stats

    def close(self) -> None:
        self.producer.close(timeout=10)
        self.admin.close()


# ---------------------------------------------------------------- consuming


def _kafka_position(info: dict[str, Any], partition: str) -> str:
    """Events published by coexist keep their source position; any other topic orders by offset."""
    published = info.get("coexist_position")
    if published:
        return str(published)
    return position_key(int(info["kafka_offset"]))


def partition_id(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


@dataclass
class _Poll:
    """One poll's records, their decoding (a future: it runs beside the apply) and the consumer's
    position per partition after it."""

    decoded: futures.Future[Batch]
    records: dict[TopicPartition, list[Any]]
    positions: dict[TopicPartition, int]
    events: int = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.events = sum(len(of_tp) for of_tp in self.records.values())
        self.size = sum(len(m.value or b"") for of_tp in self.records.values() for m in of_tp)


def _merged(batches: list[Batch]) -> Batch:
    """Decoded polls as one batch: a table's frames of the same row schema joined in order."""
    if len(batches) == 1:
        return batches[0]
    merged = Batch()
    last: dict[tuple[str, str], int] = {}
    for batch in batches:
        merged.events += batch.events
        merged.dead_letters += batch.dead_letters
        for frame in batch.frames:
            at = last.get((frame.source, frame.table), -1)
            previous = merged.frames[at] if at >= 0 else None
            if (
                previous is not None
                and previous.columns == frame.columns
                and previous.key_columns == frame.key_columns
                and previous.checked == frame.checked
            ):
                data = pa.concat_tables([previous.data, frame.data])
                merged.frames[at] = EventFrame(
                    frame.source, frame.table, frame.columns, frame.key_columns, data, frame.checked
                )
            else:
                last[(frame.source, frame.table)] = len(merged.frames)
                merged.frames.append(frame)
    return merged


class _Assignments(ConsumerRebalanceListener):
    """Seeks newly assigned partitions to the offsets committed in the warehouse."""

    def __init__(self, reader: KafkaReader, consumer: KafkaConsumer, stored: Callable[..., Any]) -> None:
        self.reader, self.consumer, self.stored = reader, consumer, stored

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.reader.flush()  # the batch in flight and the polls waiting were polled while they were ours
        self.reader.assigned -= set(revoked)
        log.info("partitions revoked: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.reader.flush()  # the warehouse offsets read next include them
        for tp in assigned:
            source = self.reader.source_for(tp.topic)[0]
            state = self.stored(source, partition_id(tp.topic, tp.partition))
            if state and state.get("resume") and "offset" in state["resume"]:
                self.consumer.seek(tp, int(state["resume"]["offset"]))
                self.reader.committed[tp] = (state["position"], int(state["resume"]["offset"]))
        self.reader.assigned = set(assigned)
        log.info("partitions assigned: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class KafkaReader:
    """A member of a consumer group applying Debezium topics to the warehouse."""

    def __init__(
        self,
        name: str,
        config: KafkaSource,
        batch_size: int = 5000,
        on_lag: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.batch_size = batch_size
        self.on_lag = on_lag
        self.assigned: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, tuple[str, int]] = {}
        """Per partition: (last position, next offset) as committed in the warehouse."""
        self._decoders: dict[str, DebeziumDecoder] = {}
        self.bulk = BulkDecoder(self._decoder)
        self._topic_cache: dict[str, tuple[str, str | None]] = {}
        self._in_flight: futures.Future[dict[TopicPartition, int]] | None = None
        self._waiting: list[_Poll] = []
        """Polls decoded (or being decoded) while a batch was in flight: applied together after it."""
        self._apply_next: Callable[[], None] = lambda: None
        self.joined = 0
        """Polls applied in the same batch as the poll before them (group commit), since start."""
        self.release: Callable[[], None] | None = None
        """Set by a shared warehouse: called when the reader is idle so another member can write."""

    def source_for(self, topic: str) -> tuple[str, str | None]:
        """(source, table or None = the event's own table) for a topic."""
        cached = self._topic_cache.get(topic)
        if cached is None:
            if topic in self.config.tables:
                source, table = self.config.tables[topic].split(".")
                cached = (_safe(source), table)
            else:
                prefix = topic.split(".", 1)[0]
                cached = (_safe(self.config.prefix_sources.get(prefix, prefix)), None)
            self._topic_cache[topic] = cached
        return cached

    def _decoder(self, source: str) -> DebeziumDecoder:
        decoder = self._decoders.get(source)
        if decoder is None:
            decoder = self._decoders[source] = DebeziumDecoder(source, position_of=_kafka_position)
        return decoder

    def _consumer(self) -> Any:
        """A kafka-python consumer, or confluent-kafka's behind the same calls (`cdc.confluent`)."""
        cfg = self.config
        if cfg.client == "confluent-kafka":
            return confluent.ConfluentConsumer(
                confluent.consumer_config(
                    cfg.bootstrap_servers,
                    cfg.group_id,
                    f"coexist-{self.name}",
                    cfg.session_timeout_ms,
                    cfg.heartbeat_interval_ms,
                    cfg.max_poll_interval_ms,
                    cfg.metadata_max_age_ms,
                    cfg.fetch_max_bytes,
                )
            )
        _warn_if_slow_crc()
        return KafkaConsumer(
            bootstrap_servers=cfg.bootstrap_servers,
            group_id=cfg.group_id,
            client_id=f"coexist-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_records=self.batch_size,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            metadata_max_age_ms=cfg.metadata_max_age_ms,
            fetch_max_bytes=cfg.fetch_max_bytes,
            max_partition_fetch_bytes=max(1 << 20, cfg.fetch_max_bytes // 4),
        )

    def decode(self, records: dict[TopicPartition, list[Any]]) -> Batch:
        """A poll's records as frames (and events, dead letters), without offsets: this needs no state
        of the batches before it, so it can run while the one before is applied."""
        batch = Batch()
        messages: list[Message] = []
        for tp, records_of_tp in records.items():
            source, table = self.source_for(tp.topic)
            part = partition_id(tp.topic, tp.partition)
            messages += [Message(source, table, part, m.offset, m.key, m.value) for m in records_of_tp]
        batch.frames, batch.events, batch.dead_letters = self.bulk.decode(messages)
        return batch

    def with_offsets(
        self, batch: Batch, records: dict[TopicPartition, list[Any]], positions: dict[TopicPartition, int] | None
    ) -> tuple[Batch, dict[TopicPartition, int]]:
        """The decoded batch with each partition's offset, and the next offset per partition (read when
        the batch before is committed: a partition without a change keeps its committed position)."""
        next_offsets: dict[TopicPartition, int] = {}
        last: dict[str, str] = {}  # per partition: the highest change position (snapshot reads can share one)
        for frame in batch.frames:
            data = frame.data
            changes = data.filter(pc.not_equal(data["op"], "r"))
            if changes.num_rows:
                for row in changes.group_by("partition").aggregate([("position", "max")]).to_pylist():
                    last[row["partition"]] = max(last.get(row["partition"], ""), row["position_max"])
        for event in batch.events:
            if event.op != "r":
                last[event.partition] = max(last.get(event.partition, ""), event.position)
        for tp, records_of_tp in records.items():
            if not records_of_tp:
                continue
            source, _ = self.source_for(tp.topic)
            part = partition_id(tp.topic, tp.partition)
            # The consumer's position can be past the last record: transaction markers take offsets too.
            next_offset = max(records_of_tp[-1].offset + 1, (positions or {}).get(tp, 0))
            next_offsets[tp] = next_offset
            # Positions of one partition are all source positions (published by coexist) or all offsets.
            position = last.get(part) or self.committed.get(tp, ("", 0))[0]
            batch.offsets.append(
                Offset(source, part, position, {"topic": tp.topic, "partition": tp.partition, "offset": next_offset})
            )
        return batch, next_offsets

    def _markers_batch(self, consumer: KafkaConsumer) -> tuple[Batch, dict[TopicPartition, int]]:
        """Offsets only, for partitions whose position moved past trailing transaction markers."""
        batch = Batch()
        moved: dict[TopicPartition, int] = {}
        for tp in self.assigned:
            if tp not in self.committed:
                continue
            position, next_offset = self.committed[tp]
            try:
                now = consumer.position(tp)
            except KafkaError:
                continue
            if now > next_offset:
                moved[tp] = now
                batch.offsets.append(
                    Offset(
                        self.source_for(tp.topic)[0],
                        partition_id(tp.topic, tp.partition),
                        position,
                        {"topic": tp.topic, "partition": tp.partition, "offset": now},
                    )
                )
        return batch, moved

    def run(
        self,
        apply: Callable[[Batch], ApplyStats],
        stored: Callable[..., Any],
        stop: threading.Event,
        idle_seconds: float | None,
    ) -> None:
        """Poll, decode and apply as a pipeline: while a batch is applied (a worker thread), the polls
        after it are decoded (another) as they come (this thread). Polls that arrive while a batch is in
        flight wait and are applied together after it, up to `batch_size` events and `fetch_max_bytes`
        (group commit: a warehouse commit costs less per event in a bigger batch, so the sink catches up
        under load). DuckDB works without the GIL. Only this thread touches the consumer: a batch's Kafka
        commit follows its warehouse commit, and a rebalance waits for the batch in flight and the polls
        waiting."""
        consumer = self._join(stored)
        worker = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-apply-{self.name}")
        decoder = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-decode-{self.name}")

        def apply_next() -> None:
            waiting, self._waiting = self._waiting, []
            self._in_flight = worker.submit(self._apply_decoded, apply, waiting)

        self._apply_next = apply_next
        last_record = unassigned_since = time.monotonic()
        # A rebalance may wait up to the rebalance timeout (max_poll_interval_ms) for a member that died.
        stuck_after = (2 * self.config.max_poll_interval_ms + self.config.session_timeout_ms) / 1000
        try:
            while not stop.is_set():
                if self.assigned:
                    unassigned_since = time.monotonic()
                elif time.monotonic() - unassigned_since > stuck_after:
                    # A group join that never completes (seen with some brokers after a member dies): start over.
                    log.warning("no partitions for %.0f s: leaving and rejoining the group", stuck_after)
                    self.flush(consumer)
                    consumer.close(autocommit=False)
                    consumer = self._join(stored)
                    unassigned_since = time.monotonic()
                # While a batch is in flight, polls wait for it (briefly: the poll returns when it has records).
                records = consumer.poll(timeout_ms=100 if self._waiting else 500, max_records=self.batch_size)
                if records:
                    positions = {tp: consumer.position(tp) for tp in records}
                    self._waiting.append(_Poll(decoder.submit(self.decode, records), records, positions))
                    last_record = time.monotonic()
                busy = self._in_flight is not None and not self._in_flight.done()
                if self._waiting and not (busy and self._room()):
                    self.drain(consumer)
                    self._apply_next()
                elif not records and not self._waiting:
                    self.drain(consumer)
                    batch, moved = self._markers_batch(consumer)
                    if batch.offsets:
                        apply(batch)
                        self._remember(batch)
                        self._commit(consumer, moved)
                    if self.release is not None:
                        self.release()
                lag = self._report_lag(consumer)
                if (
                    idle_seconds is not None
                    and not records
                    and not self._waiting
                    and self.assigned
                    and lag == 0
                    and time.monotonic() - last_record >= idle_seconds
                ):
                    return
            self.flush(consumer)
        finally:
            self._waiting = []
            if self._in_flight is not None:  # an error on the way out: let the batch in flight end first
                futures.wait([self._in_flight])
                self._in_flight = None
            worker.shutdown(wait=True)
            decoder.shutdown(wait=True)
            consumer.close(autocommit=False)

    def _room(self) -> bool:
        """Whether the polls waiting leave room for another (in events and in bytes)."""
        events = sum(poll.events for poll in self._waiting)
        size = sum(poll.size for poll in self._waiting)
        return events < self.batch_size and size < self.config.fetch_max_bytes

    def _apply_decoded(self, apply: Callable[[Batch], ApplyStats], polls: list[_Poll]) -> dict[TopicPartition, int]:
        """Apply polls in order, as one batch where they hold frames only (a table's changes in a batch
        are frames or events, never both), else one batch each. Returns the next offset per partition."""
        decoded = [poll.decoded.result() for poll in polls]
        groups = [polls] if all(not batch.events for batch in decoded) else [[poll] for poll in polls]
        next_offsets: dict[TopicPartition, int] = {}
        for group in groups:
            records: dict[TopicPartition, list[Any]] = {}
            positions: dict[TopicPartition, int] = {}
            for poll in group:
                for tp, of_tp in poll.records.items():
                    records.setdefault(tp, []).extend(of_tp)
                positions.update(poll.positions)
            merged = _merged([poll.decoded.result() for poll in group])
            self.joined += len(group) - 1
            batch, offsets = self.with_offsets(merged, records, positions)
            apply(batch)
            self._remember(batch)  # before the next group's offsets, which start from these
            next_offsets.update(offsets)
        return next_offsets

    def flush(self, consumer: KafkaConsumer | None = None) -> None:
        """Apply the batch in flight and the polls waiting, and commit them (`drain`)."""
        self.drain(consumer)
        if self._waiting:
            self._apply_next()
            self.drain(consumer)

    def drain(self, consumer: KafkaConsumer | None) -> None:
        """Wait for the batch in flight (its error, if any, is raised here) and commit it to Kafka
        (not from a rebalance callback, `consumer` None: it may not block on the broker)."""
        pending, self._in_flight = self._in_flight, None
        if pending is not None:
            self._commit(consumer, pending.result())

    def _remember(self, batch: Batch) -> None:
        """A batch is in the warehouse: where each of its partitions stands now."""
        for off in batch.offsets:
            assert off.resume is not None
            tp = TopicPartition(off.resume["topic"], off.resume["partition"])
            self.committed[tp] = (off.position, int(off.resume["offset"]))

    def _commit(self, consumer: KafkaConsumer | None, next_offsets: dict[TopicPartition, int]) -> None:
        """Tell the broker where the partitions stand (the warehouse already holds it)."""
        if consumer is None:
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in next_offsets.items()})
        except KafkaError as exc:  # the warehouse holds the truth; the broker's copy can lag
            log.warning("kafka commit failed (the warehouse offsets stand): %s", exc)

    def _join(self, stored: Callable[..., Any]) -> KafkaConsumer:
        consumer = self._consumer()
        listener = _Assignments(self, consumer, stored)
        self.assigned = set()
        if self.config.topic_pattern:
            consumer.subscribe(pattern=self.config.topic_pattern, listener=listener)
        else:
            consumer.subscribe(topics=self.config.topics, listener=listener)
        return consumer

    def _report_lag(self, consumer: KafkaConsumer) -> int | None:
        """Sum of high-water mark minus position over the assigned partitions (None while unknown)."""
        total = 0
        known = True
        for tp in self.assigned:
            high = consumer.highwater(tp)
            if high is None:
                known = False
                continue
            try:
                lag = max(0, high - consumer.position(tp))
            except KafkaError:
                known = False
                continue
            total += lag
            if self.on_lag is not None:
                self.on_lag(tp.topic, tp.partition, lag)
        return total if known else None


def partition_lag(config: KafkaSource, committed: dict[str, int]) -> list[dict[str, Any]]:
    """Per partition: the broker's high-water mark and the lag behind it of the warehouse's next offset.

    `committed` maps `kafka:<topic>:<n>` to the next offset the warehouse will apply.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        request_timeout_ms=10000,
    )
    try:
        pattern = re.compile(config.topic_pattern) if config.topic_pattern else None
        topics = [
            t
            for t in consumer.topics()
            if (config.topics and t in config.topics) or (pattern is not None and pattern.fullmatch(t))
        ]
        tps = [TopicPartition(t, p) for t in sorted(topics) for p in sorted(consumer.partitions_for_topic(t) or [])]
        if not tps:
            return []
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, committed.get(partition_id(tp.topic, tp.partition), 0))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            consumer.poll(timeout_ms=300, max_records=1)
            for tp in tps:  # the poll may have moved the position: put it back
                consumer.seek(tp, committed.get(partition_id(tp.topic, tp.partition), 0))
        rows = []
        for tp in tps:
            high = consumer.highwater(tp)
            next_offset = committed.get(partition_id(tp.topic, tp.partition), 0)
            rows.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "next_offset": next_offset,
                    "high_water": high,
                    "lag": None if high is None else max(0, high - next_offset),
                }
            )
        return rows
    finally:
        consumer.close()

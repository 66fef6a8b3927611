"""confluent-kafka (librdkafka) behind the parts of kafka-python's consumer and producer that
`KafkaReader` and `KafkaPublishSink` use.

librdkafka fetches in its own threads and hands over messages 3 to 4 times faster than kafka-python
decodes them (`benchmarks/bench_kafka.py`); a source takes it with `client = "confluent-kafka"`.
The reader's bookkeeping stays in kafka-python's `TopicPartition`; errors come out as
kafka-python's `KafkaError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

_TOP_UP_SECONDS = 0.05
"""How long a poll that has messages waits for more to fill its batch (librdkafka fetches ahead)."""
_LOG = logging.getLogger("coexist.kafka.librdkafka")
"""librdkafka's own log lines (connection losses, retries) go to the service log, not to stderr."""


@dataclass(slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class ConfluentConsumer:
    """A consumer-group member with kafka-python's calls: subscribe with a rebalance listener, poll
    (records per partition), position, seek, commit, highwater, close."""

    def __init__(self, config: dict[str, Any]) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(config)
        self._listener: Any = None
        self._seeks: dict[TopicPartition, int] = {}
        self._assigning = False

    @staticmethod
    def _native(tp: TopicPartition, offset: int | None = None) -> Any:
        from confluent_kafka import TopicPartition as NativeTopicPartition

        return (
            NativeTopicPartition(tp.topic, tp.partition)
            if offset is None
            else NativeTopicPartition(tp.topic, tp.partition, offset)
        )

    def subscribe(self, topics: list[str] | None = None, pattern: str | None = None, listener: Any = None) -> None:
        self._listener = listener
        names = list(topics or []) if pattern is None else ["^" + pattern.removeprefix("^")]
        self._consumer.subscribe(names, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        assigned = [TopicPartition(p.topic, p.partition) for p in partitions]
        self._seeks = {}
        self._assigning = True
        try:
            if self._listener is not None:
                self._listener.on_partitions_assigned(assigned)  # calls seek() for the warehouse's offsets
        finally:
            self._assigning = False
        consumer.assign([self._native(tp, self._seeks.get(tp)) for tp in assigned])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self._listener is not None:
            self._listener.on_partitions_revoked([TopicPartition(p.topic, p.partition) for p in partitions])
        consumer.unassign()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Inside the assignment callback: where the partition starts (taken by assign()); later: a seek."""
        if self._assigning:
            self._seeks[tp] = offset
        else:
            self._consumer.seek(self._native(tp, offset))

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[TopicPartition, list[Record]]:
        from confluent_kafka import KafkaError as NativeError

        records: dict[TopicPartition, list[Record]] = {}
        for message in self._messages(timeout_ms / 1000, max_records):
            error = message.error()
            if error is not None:
                if error.code() == NativeError._PARTITION_EOF:
                    continue
                raise KafkaError(str(error))
            topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
            records.setdefault(TopicPartition(topic, partition), []).append(
                Record(topic, partition, offset, message.key(), message.value())
            )
        return records

    def _messages(self, timeout: float, max_records: int) -> list[Any]:
        """Up to `max_records` messages, as kafka-python's poll gives them: waiting up to `timeout` for
        the first, then only for what librdkafka has fetched or is about to. `consume` alone waits the
        whole timeout whenever fewer than `max_records` are there, as at the end of a backlog or while
        the fetcher is behind."""
        messages = list(self._consumer.consume(num_messages=max_records, timeout=0))
        if not messages:
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            messages = [first]
        while len(messages) < max_records:
            wanted = max_records - len(messages)
            more = self._consumer.consume(num_messages=wanted, timeout=_TOP_UP_SECONDS)
            messages += more
            if len(more) < wanted:
                break
        return messages

    def position(self, tp: TopicPartition) -> int:
        """The next offset to fetch; before the first fetch, where the partition starts (a seek, the
        group's committed offset, else the earliest, as `auto.offset.reset` says)."""
        from confluent_kafka import KafkaException

        try:
            found = self._consumer.position([self._native(tp)])
            offset = found[0].offset if found else -1
            if offset is not None and offset >= 0:
                return int(offset)
            if tp in self._seeks:
                return self._seeks[tp]
            committed = self._consumer.committed([self._native(tp)], timeout=5)
            if committed and committed[0].offset is not None and committed[0].offset >= 0:
                return int(committed[0].offset)
            low, _ = self._consumer.get_watermark_offsets(self._native(tp), timeout=5)
            return int(low)
        except KafkaException as exc:
            raise KafkaError(str(exc)) from None

    def highwater(self, tp: TopicPartition) -> int | None:
        """From the last fetch response (no broker round trip); None until there is one."""
        from confluent_kafka import KafkaException

        try:
            _, high = self._consumer.get_watermark_offsets(self._native(tp), cached=True)
        except KafkaException:
            return None
        return None if high is None or high < 0 else int(high)

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        from confluent_kafka import KafkaException

        try:
            self._consumer.commit(
                offsets=[self._native(tp, meta.offset) for tp, meta in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            raise KafkaError(str(exc)) from None

    def close(self, autocommit: bool = False) -> None:
        self._consumer.close()


def consumer_config(
    bootstrap_servers: str,
    group_id: str,
    client_id: str,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    max_poll_interval_ms: int,
    metadata_max_age_ms: int,
    fetch_max_bytes: int,
) -> dict[str, Any]:
    """librdkafka's settings for what kafka-python is told in `KafkaReader._consumer`."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": heartbeat_interval_ms,
        "max.poll.interval.ms": max_poll_interval_ms,
        "topic.metadata.refresh.interval.ms": metadata_max_age_ms,
        "fetch.max.bytes": fetch_max_bytes,
        "max.partition.fetch.bytes": max(1 << 20, fetch_max_bytes // 4),
        "enable.partition.eof": False,
        "logger": _LOG,
    }


class ConfluentProducer:
    """A transactional producer with the part of kafka-python's `KafkaProducer` that
    `KafkaPublishSink` uses: init/begin/commit/abort a transaction, send, close.

    Keys are partitioned with murmur2, as kafka-python and the Java client do, so a key lands on the
    same partition whichever client published it (librdkafka's own default is CRC32)."""

    def __init__(self, bootstrap_servers: str, client_id: str, transactional_id: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                "transactional.id": transactional_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1 << 20,
                "logger": _LOG,
            }
        )
        self._failed: str | None = None

    def _call(self, method: str, *args: Any) -> None:
        from confluent_kafka import KafkaException

        try:
            getattr(self._producer, method)(*args)
        except KafkaException as exc:
            raise KafkaError(str(exc)) from None

    def init_transactions(self) -> None:
        self._call("init_transactions", 30)

    def begin_transaction(self) -> None:
        self._failed = None
        self._call("begin_transaction")

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None and self._failed is None:
            self._failed = str(error)

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                return
            except BufferError:  # the local queue is full: let librdkafka send some
                self._producer.poll(0.05)

    def commit_transaction(self) -> None:
        """Flushes, then commits; a message that failed to deliver fails the commit."""
        self._call("flush")
        if self._failed is not None:
            raise KafkaError(f"a message was not delivered: {self._failed}")
        self._call("commit_transaction", 60)

    def abort_transaction(self) -> None:
        self._call("abort_transaction", 30)

    def close(self, timeout: float = 10) -> None:
        self._producer.flush(timeout)
        if hasattr(self._producer, "close"):  # confluent-kafka >= 2.13; before, the object just goes
            self._producer.close()

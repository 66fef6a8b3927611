"""A Debezium batch crosses the JVM boundary in one call each way (`cdc.jvmbatch`), with the real JVM
and the shipped `coexist.JsonBatch` class: every string arrives as it left, and a batch is committed
record by record, in order, only when its handler succeeded."""

from __future__ import annotations

from typing import Any

import pytest

from cdc import jvmbatch
from cdc.debezium import start_jvm
from tests.cdc.test_frames import _Record, debezium_records


@pytest.fixture(scope="module")
def jpype() -> Any:
    start_jvm(256)
    import jpype

    return jpype


def java_list(jpype: Any, records: list[_Record]) -> Any:
    """The records as Debezium hands them over: a Java `List<ChangeEvent<String, String>>`."""
    listed = jpype.JClass("java.util.ArrayList")()
    for record in records:
        listed.add(jpype.JProxy("io.debezium.engine.ChangeEvent", inst=record))
    return listed


def test_every_key_value_and_destination_arrives_as_it_left(jpype: Any) -> None:
    records = debezium_records(3, 400) + [
        _Record(None, None, "src.public.tombstone"),
        _Record("", "", "src.public.empty"),
        _Record('{"id":"ü€😀\\u0000"}', '{"payload":{"after":{"t":"ü€😀 \u0000 \u2028"}}}', "src.public.ünï"),
        _Record('{"id":1}', '{"payload":"' + "x" * 1_000_000 + '"}', "src.public.wide"),
    ]
    assert len(records) > 400
    expected = [(r.key(), r.value(), r.destination()) for r in records]
    assert jvmbatch.rows(java_list(jpype, records)) == expected
    assert jvmbatch.rows(java_list(jpype, [])) == []


class _Committer:
    def __init__(self) -> None:
        self.marked: list[str | None] = []
        self.finished = 0

    def markProcessed(self, record: Any) -> None:  # noqa: N802 (Debezium's name)
        import jpype

        self.marked.append(jpype.JProxy.unwrap(record).key())

    def markBatchFinished(self) -> None:  # noqa: N802
        self.finished += 1


def test_a_batch_is_committed_after_its_handler_and_not_when_it_fails(jpype: Any) -> None:
    records = [_Record(f'{{"id":{i}}}', "{}", "src.public.t") for i in range(5)]
    seen: list[list[tuple[Any, ...]]] = []

    class Handler:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def handleJsonBatch(self, batch: Any) -> None:  # noqa: N802
            seen.append(jvmbatch.rows(batch))
            if self.fail:
                raise ValueError("the warehouse said no")

    committer = _Committer()
    proxy = jpype.JProxy("io.debezium.engine.DebeziumEngine$RecordCommitter", inst=committer)
    consumer = jvmbatch.consumer()
    consumer.handler = Handler(fail=False)
    consumer.handleBatch(java_list(jpype, records), proxy)
    consumer.raise_if_failed()
    assert seen == [[(r.key(), r.value(), r.destination()) for r in records]]
    assert (committer.marked, committer.finished) == ([r.key() for r in records], 1)

    failing = jvmbatch.consumer()
    failing.handler = Handler(fail=True)
    failing.handleBatch(java_list(jpype, records), proxy)
    thread = jpype.JClass("java.lang.Thread")
    assert thread.interrupted()  # the engine's thread is told to stop (and the flag is cleared here)
    with pytest.raises(ValueError, match="the warehouse said no"):
        failing.raise_if_failed()
    assert (len(committer.marked), committer.finished) == (5, 1)  # nothing more was committed

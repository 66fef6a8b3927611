"""A warehouse shared by several capture processes, one writer at a time.

DuckDB lets one process write a database file. Members of a Kafka consumer group each own
some partitions; they take turns with the file: a member takes an exclusive lock
(`<warehouse>.lock`), opens the warehouse, applies its batches for up to `hold_seconds` (or
until it is idle), then closes it and lets the lock go. A member killed while holding it loses
the lock with its process; DuckDB's write-ahead log rolls back any batch it had not committed.
So consuming and decoding scale out, and a member's partitions move to the others when it
dies; applying stays one writer's throughput.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any

from cdc.sink import ApplyStats, Batch, DuckDBSink


class HandoffSink:
    def __init__(self, path: Path, hold_seconds: float = 2.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hold_seconds = hold_seconds
        self._fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        self._sink: DuckDBSink | None = None
        self._since = 0.0
        self._mutex = threading.RLock()
        self.turns = 0

    def _acquire(self) -> DuckDBSink:
        if self._sink is None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._sink = DuckDBSink(self.path)
            except BaseException:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                raise
            self._since = time.monotonic()
            self.turns += 1
        return self._sink

    def release(self) -> None:
        """Close the warehouse and let another member in."""
        with self._mutex:
            if self._sink is not None:
                self._sink.close()
                self._sink = None
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def apply(self, batch: Batch) -> ApplyStats:
        with self._mutex:
            stats = self._acquire().apply(batch)
            if time.monotonic() - self._since >= self.hold_seconds:
                self.release()
            return stats

    def offset(self, source: str, partition: str = "") -> dict[str, Any] | None:
        with self._mutex:
            return self._acquire().offset(source, partition)

    def close(self) -> None:
        self.release()
        os.close(self._fd)

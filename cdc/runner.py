"""Wires readers to the one DuckDB sink: each reader in its own thread, applies serialised.

A reader is anything with `name` and `run(apply, stored, stop, idle_seconds)`; it calls
`apply(batch)` for each batch and returns when `stop` is set or, with `idle_seconds`, when its
source has been quiet that long. `apply` commits the batch (data + positions) before returning,
so a reader acknowledges its source only after the warehouse has committed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import duckdb
import kafka.errors
import psycopg
import pymysql

from cdc import requests
from cdc.sink import ApplyStats, Batch, DuckDBSink, resnapshot
from core import warehouse
from core.errors import SourceUnavailable, WarehouseError

log = logging.getLogger("coexist.cdc")

Apply = Callable[[Batch], ApplyStats]
Stored = Callable[[str, str], "dict[str, Any] | None"]


TRANSIENT = (
    SourceUnavailable,
    psycopg.OperationalError,
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    ConnectionError,
    OSError,
    kafka.errors.BrokerNotAvailableError,
    kafka.errors.KafkaConnectionError,
    kafka.errors.KafkaTimeoutError,
)


class Sink(Protocol):
    """Where batches go: the DuckDB warehouse, a shared warehouse, or Kafka (`cdc publish`)."""

    def apply(self, batch: Batch) -> ApplyStats: ...

    def offset(self, source: str, partition: str = "") -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class Reader(Protocol):
    name: str

    def run(self, apply: Apply, stored: Stored, stop: threading.Event, idle_seconds: float | None) -> None: ...


@dataclass
class SourceProgress:
    batches: int = 0
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    error: str | None = None
    retries: int = 0
    last_retry_error: str | None = None
    lag_ms: int | None = None
    last_batch_at: float | None = None
    finished: bool = False


class Capture:
    """Runs readers against one warehouse until stopped or idle."""

    def __init__(
        self,
        warehouse: Path | Sink,
        readers: list[Reader],
        on_batch: Callable[[str, ApplyStats], None] | None = None,
        retry_seconds: float = 120.0,
    ) -> None:
        self.retry_seconds = retry_seconds
        self.sink: Any = DuckDBSink(warehouse) if isinstance(warehouse, Path) else warehouse
        self.readers = readers
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.progress = {r.name: SourceProgress() for r in readers}
        self.on_batch = on_batch
        self._request: threading.Thread | None = None

    def _apply_for(self, name: str) -> Apply:
        def apply(batch: Batch) -> ApplyStats:
            with self.lock:
                stats = self.sink.apply(batch)
            progress = self.progress[name]
            progress.batches += 1
            progress.received += stats.received
            progress.applied += stats.applied
            progress.duplicates += stats.duplicates
            progress.dead_letters += stats.dead_letters
            if stats.lag_ms is not None:
                progress.lag_ms = stats.lag_ms
            progress.last_batch_at = time.time()
            if self.on_batch:
                self.on_batch(name, stats)
            return stats

        return apply

    def _stored(self, source: str, partition: str = "") -> dict[str, Any] | None:
        with self.lock:
            return self.sink.offset(source, partition)

    def _run_one(self, reader: Reader, idle_seconds: float | None) -> None:
        """Run a reader; a source that goes away (restart, network) is retried with backoff for a while."""
        delay = 1.0
        deadline = time.monotonic() + self.retry_seconds
        try:
            while True:
                try:
                    reader.run(self._apply_for(reader.name), self._stored, self.stop, idle_seconds)
                    return
                except duckdb.Error as exc:
                    raise WarehouseError(
                        f"{warehouse.explain(exc, getattr(self.sink, 'path', ''))}. Nothing was half-applied: "
                        "once that is dealt with, run again to resume from the last commit."
                    ) from exc
                except TRANSIENT as exc:
                    if self.stop.is_set() or time.monotonic() + delay > deadline:
                        raise
                    log.warning("source %s unavailable (%s); retrying in %.0f s", reader.name, exc, delay)
                    self.progress[reader.name].retries += 1
                    self.progress[reader.name].last_retry_error = f"{type(exc).__name__}: {exc}"
                    if self.stop.wait(delay):
                        return
                    delay = min(delay * 2, 15.0)
        except Exception as exc:  # surfaced to the caller, which decides the exit code
            log.error("reader %s failed: %s", reader.name, exc)
            self.progress[reader.name].error = f"{type(exc).__name__}: {exc}"
            self.stop.set()
        finally:
            self.progress[reader.name].finished = True

    def _serve_requests(self) -> None:
        """Start the oldest re-snapshot request of a source (one at a time) while capture goes on."""
        path = getattr(self.sink, "path", None)
        if path is None or (self._request is not None and self._request.is_alive()):
            return
        for reader in self.readers:
            if not hasattr(reader, "snapshot_batches"):
                continue
            for request in requests.pending(path, reader.name):
                self._request = threading.Thread(
                    target=self._resnapshot, args=(reader, request, path), name=f"resnapshot-{reader.name}", daemon=True
                )
                self._request.start()
                return

    def _resnapshot(self, reader: Any, request: requests.ResnapshotRequest, path: Path) -> None:
        try:
            loaded = resnapshot(
                self._apply_for(reader.name), reader.snapshot_batches(request.tables), reader.name, request.tables
            )
            request.rows, request.dead_letters = loaded.rows, loaded.dead_letters
        except Exception as exc:  # reported to whoever asked; capture goes on
            request.error = f"{type(exc).__name__}: {exc}"
            log.error("re-snapshot of %s %s failed: %s", reader.name, request.tables, exc)
        finally:
            requests.finish(path, request)

    def run(self, idle_seconds: float | None = None, install_signals: bool = True) -> dict[str, SourceProgress]:
        threads = [
            threading.Thread(target=self._run_one, args=(r, idle_seconds), name=f"cdc-{r.name}", daemon=True)
            for r in self.readers
        ]
        previous: dict[signal.Signals, Any] = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self.stop.set())
        try:
            for thread in threads:
                thread.start()
            ticks = 0
            while any(t.is_alive() for t in threads):
                time.sleep(0.1)
                ticks += 1
                if hasattr(self.sink, "flush_status"):
                    with self.lock:
                        self.sink.flush_status()
                if ticks % 5 == 0:
                    self._serve_requests()
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=30)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sink.close()
        return self.progress

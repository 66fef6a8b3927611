"""Health and Prometheus metrics over HTTP, on loopback.

`GET /metrics` is the Prometheus text format; `GET /healthz` is JSON (200 when every reader
is running, 503 when one has stopped). Actions the service offers (`POST /cdc/resnapshot?source=S&
table=T`, its state at `GET /cdc/resnapshot/ID`) need an `X-Coexist-Action` header, which a web page
cannot send to another origin without asking first. The numbers live in a `CollectorRegistry` the service
updates as batches commit and jobs finish, so a scrape never touches the warehouse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()
log = logging.getLogger("coexist.http")


class Metrics:
    """Every metric the service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "coexist_cdc_events_applied", "Change events applied to the warehouse", ["source"], registry=r
        )
        self.duplicates = Counter(
            "coexist_cdc_duplicates_skipped", "Replayed events skipped by position", ["source"], registry=r
        )
        self.dead_letters = Counter(
            "coexist_cdc_dead_letters", "Events sent to cdc.dead_letter", ["source"], registry=r
        )
        self.batches = Counter("coexist_cdc_batches", "Batches committed", ["source"], registry=r)
        self.lag = Gauge(
            "coexist_cdc_lag_seconds",
            "Commit time minus source time of the newest applied event",
            ["source"],
            registry=r,
        )
        self.reader_up = Gauge("coexist_cdc_reader_up", "1 while the source's reader runs", ["source"], registry=r)
        self.kafka_lag = Gauge(
            "coexist_kafka_consumer_lag",
            "High-water mark minus next offset to apply",
            ["topic", "partition"],
            registry=r,
        )
        self.job_runs = Counter("coexist_job_runs", "Scheduled job runs", ["job", "outcome"], registry=r)
        self.job_seconds = Gauge("coexist_job_last_seconds", "Duration of the job's last run", ["job"], registry=r)
        self.recon_last_run = Gauge(
            "coexist_recon_last_run_timestamp_seconds", "When the reconciliation last ran", ["recon"], registry=r
        )
        self.recon_breaks = Gauge(
            "coexist_recon_breaks", "Breaks found by the reconciliation's last run", ["recon"], registry=r
        )
        self.recon_new_breaks = Gauge(
            "coexist_recon_new_breaks", "New breaks in the reconciliation's last run", ["recon"], registry=r
        )
        self.snapshot_published = Gauge(
            "coexist_snapshot_published_timestamp_seconds", "When the analyst snapshot was last published", registry=r
        )
        self.alerts = Counter("coexist_alerts_raised", "Alerts raised", ["kind"], registry=r)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class HttpServer:
    """/metrics and /healthz on loopback: one event-loop thread, whatever the number of clients.

    Each connection must send its request head within `timeout` seconds or is closed; above
    `max_connections` the oldest connection still waiting for its request is dropped, so half-open
    clients can neither multiply threads nor keep /healthz from answering. A client that goes away
    costs one debug line, not a traceback.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        timeout: float = 5.0,
        max_connections: int = 256,
        actions: dict[str, Callable[[str, dict[str, list[str]]], tuple[int, dict[str, Any]]]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.actions = actions or {}
        """Path prefix -> handler(method, query) -> (status, JSON document)."""
        self.timeout = timeout
        self.max_connections = max_connections
        self.waiting: OrderedDict[asyncio.StreamWriter, None] = OrderedDict()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="http", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, sock=self.sock))
        try:
            self.loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def _action(self, method: str, target: str, head: bytes) -> tuple[bytes, int, str] | None:
        path, _, query = target.partition("?")
        for prefix, handler in self.actions.items():
            if path == prefix or path.startswith(prefix + "/"):
                if b"\r\nx-coexist-action:" not in head.lower():
                    return b'{"error": "send the X-Coexist-Action header"}', 403, "application/json"
                status, doc = handler(method, urllib.parse.parse_qs(query) | {"_path": [path[len(prefix) :]]})
                return json.dumps(doc, default=str).encode(), status, "application/json"
        return None

    def _route(self, path: str) -> tuple[bytes, int, str]:
        path = path.split("?")[0]
        if path == "/metrics":
            return self.metrics.text(), 200, CONTENT_TYPE_LATEST
        if path in ("/healthz", "/health", "/"):
            ok, detail = self.health()
            return json.dumps(detail, default=str).encode(), (200 if ok else 503), "application/json"
        return b"not found\n", 404, "text/plain"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.waiting[writer] = None
        while len(self.waiting) > self.max_connections:
            oldest, _ = self.waiting.popitem(last=False)
            oldest.transport.abort()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            action = self._action(parts[0], parts[1], head) if len(parts) >= 2 else None
            if action is not None:
                body, status, kind = action
            elif len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                body, status, kind = b"only GET\n", 405, "text/plain"
            else:
                body, status, kind = self._route(parts[1])
            reason = {
                200: "OK",
                202: "Accepted",
                400: "Bad Request",
                403: "Forbidden",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + (body if parts[0] != "HEAD" else b"")
            )
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            log.debug("http client dropped: %s", type(exc).__name__)
        finally:
            self.waiting.pop(writer, None)
            writer.close()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        else:
            self.sock.close()

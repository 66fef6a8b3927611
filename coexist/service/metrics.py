"""Health and Prometheus metrics over HTTP, on loopback.

`GET /metrics` is the Prometheus text format; `GET /healthz` is JSON (200 when every reader
is running, 503 when one has stopped). The numbers live in a `CollectorRegistry` the service
updates as batches commit and jobs finish, so a scrape never touches the warehouse.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    """A small threaded HTTP server for /metrics and /healthz, bound to loopback."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Callable[[], tuple[bool, dict[str, Any]]]):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] == "/metrics":
                    body, status, kind = owner.metrics.text(), 200, CONTENT_TYPE_LATEST
                elif self.path.split("?")[0] in ("/healthz", "/health", "/"):
                    ok, detail = owner.health()
                    body = json.dumps(detail, default=str).encode()
                    status, kind = (200 if ok else 503), "application/json"
                else:
                    body, status, kind = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.metrics = metrics
        self.health = health
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

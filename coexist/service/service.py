"""`coexist run`: capture every source and run the scheduled jobs, in one process.

DuckDB has one writer per file, so capture and the jobs share the warehouse through one
database instance: readers apply through the sink's connection; each job works on a cursor
of its own and holds the capture lock while it writes, so a batch and a job never interleave
(capture pauses for the job; its lag shows it). The analyst snapshot is copied in one read
transaction without the lock. Shutdown (SIGINT/SIGTERM) lets the running job finish, stops
the readers between batches and closes the warehouse: nothing is half-written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from cdc.runner import Capture, Reader
from cdc.sink import ApplyStats
from coexist import sources, tasks
from coexist.analyst import snapshot
from coexist.config import Settings
from coexist.service import alerts as alerts_module
from coexist.service import jobs
from coexist.service.metrics import HttpServer, Metrics
from coexist.service.scheduler import all_jobs, build_scheduler, register
from coexist.web import notify
from coexist.web.app import Database, create_app
from coexist.web.server import WebServer
from reconcile.engine import RunResult

log = logging.getLogger("coexist.service")


@dataclass
class JobRecord:
    runs: int = 0
    failures: int = 0
    last_started: float | None = None
    last_seconds: float | None = None
    last_error: str | None = None
    last_result: dict[str, Any] = field(default_factory=dict)


class Service:
    def __init__(self, settings: Settings, readers: list[Reader] | None = None) -> None:
        self.settings = settings
        self.capture = Capture(
            settings.warehouse_path,
            readers if readers is not None else sources.readers(settings),
            on_batch=self._on_batch,
            retry_seconds=float("inf"),
        )
        self.capture.sink.drop_columns = settings.cdc.dropped_columns == "drop"
        self.metrics = Metrics()
        self.alerts = alerts_module.Alerts(settings.alerts)
        self.jobs: dict[str, JobRecord] = {}
        self.stopping = threading.Event()
        self.started_at = time.time()
        self._dead_seen: dict[str, int] = {}
        self.http = HttpServer(
            settings.service.http_host,
            settings.service.http_port,
            self.metrics,
            self.health,
            actions={"/cdc/resnapshot": self.resnapshot_request},
        )
        self.scheduler = build_scheduler(settings)
        self.web: WebServer | None = None
        if settings.web.enabled:
            database = Database(self.capture.sink.con, self.capture.lock)
            self.web = WebServer(create_app(settings, database, self.job_records), settings.web)
        for name in self.capture.progress:
            self.metrics.reader_up.labels(name).set(1)
        for reader in self.capture.readers:
            if hasattr(reader, "on_lag"):
                reader.on_lag = lambda topic, part, lag: self.metrics.kafka_lag.labels(topic, str(part)).set(lag)

    # ------------------------------------------------------------ capture

    def resnapshot_request(self, method: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """`POST /cdc/resnapshot?source=S&table=T[&table=U]`: the running capture re-snapshots the
        tables (see `cdc.requests`); `GET /cdc/resnapshot/ID` tells how it went."""
        from cdc import requests

        path = self.settings.warehouse_path
        request_id = query.get("_path", [""])[0].strip("/")
        if method == "GET" and request_id:
            found = requests.status(path, request_id)
            return (200, asdict(found)) if found is not None else (404, {"error": f"no request {request_id}"})
        if method != "POST":
            return 405, {"error": "POST to ask for a re-snapshot, GET /cdc/resnapshot/ID for its state"}
        source = (query.get("source") or [""])[0]
        tables = [t for t in query.get("table", []) if t]
        if source not in self.capture.progress or not tables:
            return 400, {"error": f"name a source ({', '.join(self.capture.progress)}) and at least one table"}
        request = requests.submit(path, source, tables)
        return 202, {"id": request.id, "state": f"/cdc/resnapshot/{request.id}"}

    def _on_batch(self, name: str, stats: ApplyStats) -> None:
        self.metrics.batches.labels(name).inc()
        self.metrics.events.labels(name).inc(stats.applied)
        self.metrics.duplicates.labels(name).inc(stats.duplicates)
        self.metrics.dead_letters.labels(name).inc(stats.dead_letters)
        if stats.lag_ms is not None:
            self.metrics.lag.labels(name).set(stats.lag_ms / 1000)
        log.debug("batch applied", extra={"source": name, "applied": stats.applied, "lag_ms": stats.lag_ms})

    # ------------------------------------------------------------ jobs

    @contextlib.contextmanager
    def _cursor(self, locked: bool = True) -> Iterator[Any]:
        """A cursor of the warehouse's database instance; `locked` keeps capture out meanwhile."""
        with self.capture.lock if locked else contextlib.nullcontext():
            cur = self.capture.sink.con.cursor()
            try:
                yield cur
            finally:
                cur.close()

    def _job(self, job: str, work: Any, locked: bool = True) -> Any:
        """Run one job on its own cursor, record its outcome, then publish the snapshot."""
        record = self.jobs.setdefault(job, JobRecord())
        record.last_started = time.time()
        started = time.perf_counter()
        try:
            with self._cursor(locked) as cur:
                result = work(cur)
        except Exception as exc:
            record.failures += 1
            record.last_error = f"{type(exc).__name__}: {exc}"
            self.metrics.job_runs.labels(job, "failed").inc()
            log.error("job %s failed: %s", job, exc, extra={"job": job})
            return None
        record.runs += 1
        record.last_error = None
        record.last_seconds = time.perf_counter() - started
        self.metrics.job_runs.labels(job, "ok").inc()
        self.metrics.job_seconds.labels(job).set(record.last_seconds)
        return result

    def sources_ready(self) -> bool:
        """True once every source has committed its initial snapshot: before that, a reconciliation
        would report every row not yet copied as missing."""
        with self._cursor() as cur:
            done = dict(
                cur.execute("SELECT source, bool_and(snapshot_done) FROM cdc.offsets GROUP BY source").fetchall()
            )
        return all(done.get(name) for name in self.capture.progress)

    def run_reconciliation(self, name: str, trigger: str = "schedule") -> RunResult | None:
        if name not in self.settings.all_reconciliations():
            log.error("reconciliation %s is no longer configured", name)
            return None
        if not self.sources_ready():
            log.info("reconciliation %s deferred: initial snapshot still running", name, extra={"job": name})
            return None

        def work(cur: Any) -> RunResult:
            result = tasks.reconcile(cur, self.settings, [name], trigger=trigger)[0]
            found = [self.alerts.observe("new_breaks", name, result.new_breaks, f"{name}: new breaks")]
            if name == "time":
                unposted = cur.execute(
                    "SELECT count(*) FROM recon.break_state WHERE recon = 'time' AND "
                    "break_type = 'missing_in_erp' AND status = 'open'"
                ).fetchall()[0][0]
                found.append(self.alerts.observe("failed_postings", name, unposted, "approved time not posted"))
            self._record_alerts(cur, found)
            if result.new_breaks and self.settings.web.notify:
                notify.new_breaks(cur, self.settings.web.notify, name, result.run_id)
            return result

        result: RunResult | None = self._job(f"reconcile:{name}", work)
        if result is not None:
            self.jobs[f"reconcile:{name}"].last_result = {
                "breaks": result.breaks,
                "new": result.new_breaks,
                "resolved": result.resolved_breaks,
                "by_type": result.counts_by_type,
                "run_id": result.run_id,
            }
            self.metrics.recon_last_run.labels(name).set(time.time())
            self.metrics.recon_breaks.labels(name).set(result.breaks)
            self.metrics.recon_new_breaks.labels(name).set(result.new_breaks)
            jobs.log_run(result)
            self.publish_snapshot()
        return result

    def refresh_masterdata(self) -> None:
        if not self.sources_ready():
            log.info("master data deferred: initial snapshot still running", extra={"job": "masterdata"})
            return

        def work(cur: Any) -> dict[str, int]:
            return {r.entity: r.clusters for r in tasks.refresh_masterdata(cur, self.settings)}

        result = self._job("masterdata", work)
        if result is not None:
            self.jobs["masterdata"].last_result = result
            log.info("master data refreshed: %s", result, extra={"job": "masterdata", "golden": result})
            self.publish_snapshot()

    def publish_snapshot(self) -> None:
        def work(cur: Any) -> snapshot.Published:
            return tasks.publish_snapshot(cur, self.settings)

        published = self._job("snapshot", work, locked=False)
        if published is not None:
            self.metrics.snapshot_published.set(time.time())
            log.info(
                "snapshot published: %d tables, %d views in %.2f s",
                published.tables,
                published.views,
                published.seconds,
                extra={"job": "snapshot", "path": str(published.path)},
            )

    def check_alerts(self) -> None:
        def work(cur: Any) -> None:
            found = []
            for name, p in self.capture.progress.items():
                if p.lag_ms is not None:
                    found.append(self.alerts.observe("lag_seconds", name, p.lag_ms / 1000, f"{name}: capture lag s"))
                new = p.dead_letters - self._dead_seen.get(name, 0)
                self._dead_seen[name] = p.dead_letters
                found.append(self.alerts.observe("dead_letters", name, new, f"{name}: new dead letters"))
            self._record_alerts(cur, found)

        self._job("alerts", work)

    def _record_alerts(self, cur: Any, found: list[alerts_module.Alert | None]) -> None:
        raised = [a for a in found if a is not None]
        for a in raised:
            if a.state == "raised":
                self.metrics.alerts.labels(a.kind).inc()
        alerts_module.record(cur, raised)
        for a in raised:
            if a.state == "raised" and self.settings.web.notify:
                notify.send(cur, self.settings.web.notify, "alert", a.subject, f"coexist alert: {a.kind}", a.message)

    def job_records(self) -> list[dict[str, Any]]:
        """The jobs as the workbench's operations page lists them."""
        return [{"name": name} | vars(record) for name, record in sorted(self.jobs.items())]

    # ------------------------------------------------------------ health

    def health(self) -> tuple[bool, dict[str, Any]]:
        readers = {}
        ok = True
        for name, p in self.capture.progress.items():
            up = not p.finished and p.error is None
            ok = ok and up
            self.metrics.reader_up.labels(name).set(1 if up else 0)
            readers[name] = {
                "up": up,
                "applied": p.applied,
                "batches": p.batches,
                "dead_letters": p.dead_letters,
                "lag_seconds": p.lag_ms / 1000 if p.lag_ms is not None else None,
                "retries": p.retries,
                "last_retry_error": p.last_retry_error,
                "error": p.error,
            }
        detail = {
            "status": "ok" if ok else "degraded",
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "readers": readers,
            "jobs": {k: vars(v) for k, v in self.jobs.items()},
            "active_alerts": sorted(f"{k}:{s}" for k, s in self.alerts.active),
        }
        return ok, detail

    # ------------------------------------------------------------ lifecycle

    def _register_jobs(self) -> list[str]:
        return register(self.scheduler, all_jobs(self.settings))

    def request_stop(self, *_: Any) -> None:
        if not self.stopping.is_set():
            log.info("shutting down: finishing the running job and the batch in flight")
        self.stopping.set()

    def run(self, install_signals: bool = True) -> int:
        """Run until SIGINT/SIGTERM (or `request_stop`); returns the exit code."""
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGTERM, self.request_stop)
        jobs.bind(self)
        self.http.start()
        if self.web is not None:
            self.web.start()
        state_file = self.settings.data_dir / "service.json"
        state_file.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "http": f"http://{self.settings.service.http_host}:{self.http.port}",
                    "web": self.web.url if self.web is not None else None,
                    "started_at": self.started_at,
                }
            )
        )
        capture = threading.Thread(
            target=self.capture.run, kwargs={"install_signals": False}, name="capture", daemon=True
        )
        capture.start()
        self.scheduler.start()
        registered = self._register_jobs()
        log.info(
            "service started",
            extra={
                "http_port": self.http.port,
                "web": self.web.url if self.web else None,
                "jobs": registered,
                "sources": list(self.capture.progress),
            },
        )
        code = 0
        try:
            while not self.stopping.wait(0.5):
                if not capture.is_alive():
                    errors = {n: p.error for n, p in self.capture.progress.items() if p.error}
                    log.error("capture stopped: %s", errors)
                    code = 2
                    break
        finally:
            self.scheduler.shutdown(wait=True)
            self.capture.stop.set()
            capture.join(timeout=60)
            self.http.stop()
            if self.web is not None:
                self.web.stop()
            jobs.bind(None)
            state_file.unlink(missing_ok=True)
            log.info("service stopped", extra={"exit_code": code})
        return code

"""The service end to end: `coexist run` as a subprocess on a seeded sandbox, live changes, scheduled
reconciliations, the analyst snapshot read by another process while the service writes, metrics,
alerts, a clean SIGTERM; and the HTML report rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import polars as pl
import pytest

from coexist.config import Settings
from coexist.sandbox import demo, generator
from coexist.sandbox import servers as sandbox
from tests.harness import cli, make_data_dir
from tests.reconcile.test_reconcile import as_sets

CONFIG = """
[scheduler.schedules]
time = "*/3 * * * * *"
invoices = "*/3 * * * * *"
margin = "*/5 * * * * *"

[service]
http_port = 0
snapshot_seconds = 2
masterdata_schedule = "*/4 * * * * *"

[alerts]
check_seconds = 1

[web]
port = 0
"""


def wait_for(what: str, check: Callable[[], Any], timeout: float, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"service exited ({proc.returncode}) while waiting for {what}")
        try:
            value = check()
        except (OSError, duckdb.Error, KeyError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def snapshot_rows(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _rows_apart(state: sandbox.SandboxState, snap: Path) -> str:
    """Which rows of rs_busy the snapshot holds differently from the source (for a failure's message)."""
    with sandbox.pg_app_connect(state) as pg:
        source = {r[0]: r[1] for r in pg.execute("SELECT id, v FROM rs_busy").fetchall()}
    replica = {r[0]: r[1] for r in snapshot_rows(snap, "SELECT id, v FROM replica_psa.rs_busy")}
    missing = sorted(set(source) - set(replica))
    extra = sorted(set(replica) - set(source))
    different = sorted(k for k in set(source) & set(replica) if source[k] != replica[k])
    return f"missing {missing[:20]} ({len(missing)}), extra {extra[:20]} ({len(extra)}), different {different[:20]} ({len(different)})"


def _resnapshot_through_http(
    state: sandbox.SandboxState, url: str, snap: Path, proc: subprocess.Popen[str]
) -> dict[str, Any]:
    """Re-snapshot a table through the service's HTTP endpoint while a writer changes it; returns
    the request's outcome and how many reconciliations ran meanwhile."""
    with sandbox.pg_app_connect(state) as pg:
        pg.execute("CREATE TABLE rs_busy (id serial PRIMARY KEY, v int)")
        pg.execute("INSERT INTO rs_busy (v) SELECT i FROM generate_series(1, 20000) i")
    count = "SELECT count(*) FROM replica_psa.rs_busy"
    wait_for("the new table in the snapshot", lambda: snapshot_rows(snap, count)[0][0] == 20000, 60, proc)
    halt = threading.Event()
    writes = [0]

    def writer() -> None:
        rnd = random.Random(5)
        with sandbox.pg_app_connect(state) as pg:
            while not halt.is_set():
                pg.execute("INSERT INTO rs_busy (v) VALUES (%s)", [rnd.randint(0, 9)])
                pg.execute("UPDATE rs_busy SET v = v + 1 WHERE id = %s", [rnd.randint(1, 20000)])
                pg.execute("DELETE FROM rs_busy WHERE id = %s", [rnd.randint(1, 20000)])
                writes[0] += 3
                halt.wait(0.02)  # over 100 changes a second: a backlog a loaded machine still catches up on

    runs = "SELECT count(*) FROM recon.runs"
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        halt.wait(1.0)
        runs_before = snapshot_rows(snap, runs)[0][0]
        asked_at = time.time()
        asked = urllib.request.Request(
            f"{url}/cdc/resnapshot?source=psa&table=rs_busy", method="POST", headers={"X-Coexist-Action": "yes"}
        )
        with urllib.request.urlopen(asked, timeout=10) as response:
            accepted = response.status, json.loads(response.read())
        asked_state = urllib.request.Request(url + accepted[1]["state"], headers={"X-Coexist-Action": "yes"})

        def finished() -> dict[str, Any] | None:
            with urllib.request.urlopen(asked_state, timeout=10) as response:
                doc: dict[str, Any] = json.loads(response.read())
            return doc if doc.get("done") else None

        done = wait_for("the online re-snapshot", finished, 180, proc)
        done_at = time.time()
        halt.wait(2.0)  # writes go on after the swap too
    finally:
        halt.set()
        thread.join(timeout=30)
    with sandbox.pg_app_connect(state) as pg:
        at_source = pg.execute("SELECT count(*), sum(v) FROM rs_busy").fetchone()
    sums = "SELECT count(*), sum(v) FROM replica_psa.rs_busy"
    # The writer may have run well ahead of capture on a busy machine: the wait is for the backlog.
    try:
        wait_for(
            "the writes to reach the snapshot", lambda: tuple(snapshot_rows(snap, sums)[0]) == at_source, 180, proc
        )
    except AssertionError as exc:
        apart = _rows_apart(state, snap)
        raise AssertionError(
            f"{exc}: source {at_source}, snapshot {snapshot_rows(snap, sums)[0]} after {writes[0]} writes; {apart}"
        ) from None
    runs_during = wait_for("a reconciliation after the swap", lambda: snapshot_rows(snap, runs)[0][0] - runs_before, 60)
    return {
        "accepted": accepted,
        "done": done,
        "runs_during": runs_during,
        "writes": writes[0],
        "window": (asked_at, done_at),
    }


@pytest.fixture(scope="module")
def service_run() -> Iterator[dict[str, Any]]:
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    (data_dir / "coexist.toml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")}
    env["COEXIST_DATA_DIR"] = str(data_dir)
    proc: subprocess.Popen[str] | None = None
    log = data_dir / "service.log"
    try:
        state = sandbox.up(settings)
        generator.seed(state, generator.Scale.named("tiny", seed=41), data_dir / "manifest")
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "coexist", "run"],
                cwd=data_dir,
                env=env,
                text=True,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        url = wait_for("service.json", lambda: json.loads((data_dir / "service.json").read_text())["http"], 60, proc)
        wait_for(
            "both snapshots applied",
            lambda: all(r["applied"] > 0 for r in json.loads(get(f"{url}/healthz")[1])["readers"].values()),
            120,
            proc,
        )
        changed_at = time.time()
        changes = demo._live_changes(state)
        snap = settings.snapshot_path
        dup_key = str(changes["approved_and_double_posted"])

        def duplicate_in_snapshot() -> bool:
            rows = snapshot_rows(
                snap,
                "SELECT count(*) FROM recon.break_state WHERE recon = 'time' AND "
                f"break_type = 'duplicate_posting' AND key = '{dup_key}' AND status = 'open'",
            )
            return rows[0][0] == 1

        wait_for("the live duplicate posting in the snapshot", duplicate_in_snapshot, 120, proc)
        paid = str(changes["paid_invoice"])

        def paid_in_both() -> bool:
            """The PSA marks the invoice paid and the ERP records its payment: two databases, two
            streams. A run between the two sees a status mismatch that is real for that moment."""
            rows = snapshot_rows(
                snap,
                "SELECT (SELECT count(*) FROM replica_psa.invoices WHERE invoice_number = ? AND status = 'paid'), "
                "(SELECT count(*) FROM replica_erp.payments p JOIN replica_erp.ar_invoices a USING (invoice_no) "
                "WHERE a.psa_invoice_ref = ?)",
                [paid, paid],
            )
            return rows[0][0] == 1 and rows[0][1] > 0

        wait_for("the paid invoice on both sides in the snapshot", paid_in_both, 120, proc)
        both_at = time.time()
        wait_for(
            "an invoices run after both sides of the payment",
            lambda: (
                snapshot_rows(
                    snap,
                    "SELECT count(*) FROM recon.runs WHERE recon = 'invoices' AND epoch(started_at) > ?",
                    [both_at],
                )[0][0]
                > 0
            ),
            60,
            proc,
        )
        wait_for(
            "golden records in the snapshot",
            lambda: snapshot_rows(snap, "SELECT count(*) FROM mdm.golden_customer")[0][0] > 0,
            60,
            proc,
        )
        # Another process (this one) reads the snapshot while the service keeps writing.
        seen = {
            recon: snapshot_rows(snap, f"SELECT * FROM recon.break_state WHERE recon = '{recon}' AND status = 'open'")
            for recon in ("time", "invoices")
        }
        con = duckdb.connect(str(snap), read_only=True)
        frames = {
            recon: con.sql(f"SELECT * FROM recon.break_state WHERE recon = '{recon}' AND status = 'open'").pl()
            for recon in ("time", "invoices")
        }
        runs_after = con.execute(
            "SELECT count(*) FROM recon.runs WHERE recon = 'time' AND trigger = 'schedule' AND epoch(started_at) > ?",
            [changed_at],
        ).fetchall()[0][0]
        views = {
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'analytics'").fetchall()
        }
        alerts = con.execute("SELECT kind, state FROM ops.alerts").fetchall()
        golden = con.execute("SELECT count(*) FROM mdm.golden_customer").fetchall()[0][0]
        runs_read = con.execute("SELECT count(*) FROM recon.runs").fetchall()[0][0]
        con.close()
        status, health = get(f"{url}/healthz")
        metrics = get(f"{url}/metrics")[1]
        # The service goes on: a later snapshot, with more runs, replaces the one just read.
        later = (
            wait_for(
                "a later snapshot with more runs",
                lambda: n if (n := snapshot_rows(snap, "SELECT count(*) FROM recon.runs")[0][0]) > runs_read else None,
                60,
                proc,
            )
            or 0
        )
        online = _resnapshot_through_http(state, url, snap, proc)
        web = _workbench_of_the_service(data_dir, dup_key)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
        verify = cli(data_dir, "cdc", "verify", "--json", check=False)
        yield {
            "settings": settings,
            "frames": frames,
            "seen": seen,
            "runs_after": runs_after,
            "views": views,
            "alerts": alerts,
            "golden": golden,
            "health": (status, json.loads(health)),
            "metrics": metrics,
            "later_runs": later,
            "runs_read": runs_read,
            "exit_code": code,
            "verify": verify,
            "dup_key": dup_key,
            "log": log.read_text(),
            "data_dir": data_dir,
            "online": online,
            "web": web,
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


def _workbench_of_the_service(data_dir: Path, dup_key: str) -> dict[str, Any]:
    """A user added from the command line while the service runs signs in to the service's workbench."""
    web = json.loads((data_dir / "service.json").read_text())["web"]
    cli(
        data_dir,
        "users",
        "add",
        "fin",
        "--role",
        "operator",
        "--password-env",
        "CX_PW",
        env={"CX_PW": "a long password"},
    )
    with httpx.Client(base_url=web, timeout=10) as client:
        anonymous = client.get("/breaks", follow_redirects=False)
        token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text)
        assert token
        client.post("/login", data={"name": "fin", "password": "a long password", "login_token": token.group(1)})
        listed = client.get("/breaks", params={"recon": "time", "break_type": "duplicate_posting"})
    return {"anonymous": anonymous.status_code, "listed": listed.status_code, "has_dup": dup_key in listed.text}


@pytest.mark.slow
def test_the_service_serves_the_workbench(service_run: dict[str, Any]) -> None:
    assert service_run["web"] == {"anonymous": 303, "listed": 200, "has_dup": True}
    assert "a long password" not in service_run["log"]  # nor the hash: users are not in the service's files
    assert "argon2" not in service_run["log"]


@pytest.mark.slow
def test_scheduled_breaks_in_the_snapshot_equal_the_planted_ones(service_run: dict[str, Any]) -> None:
    manifest = pl.read_parquet(service_run["settings"].data_dir / "manifest" / "breaks.parquet")
    assert service_run["runs_after"] >= 1, "no scheduled time reconciliation ran after the live changes"
    for recon in ("time", "invoices"):
        got = as_sets(service_run["frames"][recon], "key", "right_id")
        want = as_sets(manifest.filter(pl.col("recon") == recon), "left_key", "right_key")
        if recon == "time":
            want.setdefault("duplicate_posting", set()).add(service_run["dup_key"])
        assert got == want, (recon, {k: (sorted(got.get(k, set()) ^ v)[:5]) for k, v in want.items()})


@pytest.mark.slow
def test_service_publishes_views_metrics_alerts_and_stops_cleanly(service_run: dict[str, Any]) -> None:
    assert {
        "open_breaks",
        "open_breaks_by_age",
        "unposted_approved_time",
        "unbilled_time",
        "invoice_status",
        "margin_by_project_period",
        "golden_xref",
        "cdc_freshness",
    } <= service_run["views"]
    assert service_run["golden"] > 0, "the scheduled master-data refresh did not run"
    assert ("failed_postings", "raised") in service_run["alerts"]
    # Reconciliations wait for the initial snapshots: no run saw half-copied replicas.
    planted = len(service_run["seen"]["time"]) - 1
    runs = [json.loads(line)["breaks"] for line in service_run["log"].splitlines() if "reconciliation time:" in line]
    assert runs and set(runs) <= {planted, planted + 1}, runs
    status, health = service_run["health"]
    assert status == 200 and health["status"] == "ok" and set(health["readers"]) == {"psa", "erp"}
    metrics = service_run["metrics"]
    time_breaks = len(service_run["seen"]["time"])
    assert 'coexist_cdc_reader_up{source="psa"} 1.0' in metrics
    applied = [
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("coexist_cdc_events_applied_total")
    ]
    assert len(applied) == 2 and min(applied) > 0
    assert 'coexist_recon_breaks{recon="time"}' in metrics and "coexist_snapshot_published_timestamp_seconds" in metrics
    assert time_breaks > 0
    assert service_run["later_runs"] > service_run["runs_read"]
    assert service_run["exit_code"] == 0, service_run["log"][-3000:]
    lines = [json.loads(line) for line in service_run["log"].splitlines() if line.startswith("{")]
    assert any(line["message"] == "service stopped" for line in lines)
    assert service_run["verify"].returncode == 0, service_run["verify"].stdout[-2000:]


@pytest.mark.slow
def test_service_resnapshots_a_table_online_and_goes_on_capturing_and_reconciling(
    service_run: dict[str, Any],
) -> None:
    """`POST /cdc/resnapshot` on the running service, under writes to that table: swapped in, no change
    lost (the fixture's `cdc verify` after the stop compares every table, this one included), and the
    scheduled reconciliations kept running meanwhile."""
    online = service_run["online"]
    assert online["accepted"][0] == 202, online
    assert online["done"]["error"] is None and online["done"]["rows"] >= 20000, online
    assert online["writes"] > 300 and online["runs_during"] > 0, online
    verify = {d["table"]: d for d in json.loads(service_run["verify"].stdout) if d["source"] == "psa"}
    assert verify["rs_busy"]["equal"], verify["rs_busy"]
    con = duckdb.connect(str(service_run["settings"].warehouse_path), read_only=True)
    try:
        reads = con.execute(
            "SELECT count(*) FROM cdc.changelog WHERE table_name = 'rs_busy' AND snapshot = 'resnapshot'"
        ).fetchall()[0][0]
        # While the table loaded: its own changes kept being applied, and reconciliations ran.
        during = con.execute(
            "SELECT count(*) FROM cdc.changelog WHERE table_name = 'rs_busy' AND op <> 'r' "
            "AND epoch(applied_at) BETWEEN ? AND ?",
            list(online["window"]),
        ).fetchall()[0][0]
        runs = con.execute(
            "SELECT count(*) FROM recon.runs WHERE epoch(started_at) BETWEEN ? AND ?", list(online["window"])
        ).fetchall()[0][0]
    finally:
        con.close()
    took = online["window"][1] - online["window"][0]
    assert reads >= 20000 and during > 0, (reads, during, took)
    assert runs > 0 or took < 7, (runs, took)  # scheduled every 3 s


@pytest.mark.slow
def test_report_renders_in_headless_chromium(service_run: dict[str, Any], tmp_path: Path) -> None:
    from PIL import Image

    data_dir = service_run["data_dir"]
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    cli(data_dir, "report", "--snapshot", "--out", str(page), "--png", str(png))
    text = page.read_text()
    assert text.count("<svg") >= 4 and "<script" not in text
    assert not any(f'{attr}="{scheme}' in text for attr in ("src", "href") for scheme in ("http", "//")), (
        "the page loads something from outside"
    )
    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert image.size[0] >= 1000 and len(colours) > 50
    non_white = sum(n for n, rgb in colours if rgb != (255, 255, 255))
    assert non_white > 0.05 * image.size[0] * image.size[1]

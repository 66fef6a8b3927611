"""The demo: the main job on the local sandbox, from nothing to findings, with progress bars.

Sandbox up, seed a firm, capture both systems into DuckDB, then a stream of live changes (time
approved and posted, an invoice paid, a customer renamed, a duplicate posting) captured as it
happens, golden records resolved, every reconciliation run, and a short summary printed.
Running it again reseeds and starts from a fresh warehouse.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from cdc.runner import Capture
from coexist import sources, tasks
from coexist.analyst import report
from coexist.config import Settings
from coexist.sandbox import generator
from coexist.sandbox import servers as sandbox
from core import warehouse
from core.errors import TerminalError


def _live_changes(state: sandbox.SandboxState) -> dict[str, Any]:
    """What happens in both systems while capture runs."""
    with sandbox.pg_app_connect(state) as pg, sandbox.my_app_connect(state) as my, my.cursor() as cur:
        entry = pg.execute(
            "SELECT entry_id, project_id, resource_id, work_date, hours, amount, cost_amount, currency "
            "FROM time_entries WHERE status = 'submitted' ORDER BY entry_id LIMIT 1"
        ).fetchone()
        assert entry is not None
        entry_id = entry[0]
        pg.execute(
            "UPDATE time_entries SET status = 'approved', approved_at = now(), updated_at = now() WHERE entry_id = %s",
            (entry_id,),
        )
        cur.execute("SELECT proj_no, emp_no, company_code FROM labor_postings LIMIT 1")
        proj_no, emp_no, company = cur.fetchone()
        cur.execute("SELECT coalesce(max(posting_id), 0) + 1 FROM labor_postings")
        next_posting = int(cur.fetchone()[0])
        for offset in (0, 1):  # posted, and (the interface retried) posted again
            cur.execute(
                "INSERT INTO labor_postings (posting_id, psa_entry_ref, proj_no, emp_no, company_code, work_date, "
                "fiscal_period, hours, rate, amount, cost_amount, currency, posted_at) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, 150, %s, %s, %s, NOW(6))",
                (
                    next_posting + offset,
                    entry_id,
                    proj_no,
                    emp_no,
                    company,
                    entry[3],
                    entry[3].strftime("%Y-%m"),
                    entry[4],
                    entry[5],
                    entry[6],
                    entry[7],
                ),
            )
        invoice = pg.execute(
            "SELECT invoice_number FROM invoices WHERE status = 'sent' ORDER BY invoice_id LIMIT 1"
        ).fetchone()
        assert invoice is not None
        cur.execute(
            "SELECT invoice_no, cust_no, gross_amount, currency FROM ar_invoices WHERE psa_invoice_ref = %s",
            (invoice[0],),
        )
        ar = cur.fetchone()
        if ar is not None:
            cur.execute(
                "INSERT INTO payments VALUES (%s, %s, %s, CURDATE(), %s, %s)",
                (90_000_000 + next_posting, ar[0], ar[1], ar[2], ar[3]),
            )
        pg.execute("UPDATE invoices SET status = 'paid', updated_at = now() WHERE invoice_number = %s", (invoice[0],))
        client = pg.execute("SELECT client_id, client_name FROM clients ORDER BY client_id LIMIT 1").fetchone()
        assert client is not None
        pg.execute(
            "UPDATE clients SET client_name = %s, updated_at = now() WHERE client_id = %s",
            (f"{client[1]} (renamed)", client[0]),
        )
    return {"approved_and_double_posted": entry_id, "paid_invoice": invoice[0], "renamed_client": client[0]}


def _captured(capture: Capture, changes: dict[str, Any]) -> bool:
    with capture.lock:
        cur = capture.sink.con.cursor()
        try:
            renamed = cur.execute(
                "SELECT count(*) FROM replica_psa.clients WHERE client_id = ? AND client_name LIKE '%(renamed)'",
                [changes["renamed_client"]],
            ).fetchall()[0][0]
            postings = cur.execute(
                "SELECT count(*) FROM replica_erp.labor_postings WHERE psa_entry_ref = ?",
                [changes["approved_and_double_posted"]],
            ).fetchall()[0][0]
        except duckdb.Error:
            return False
        finally:
            cur.close()
    return bool(renamed) and postings >= 2


def run(settings: Settings, scale: str = "small", console: Console | None = None) -> dict[str, float]:
    console = console or Console()
    timings: dict[str, float] = {}
    started = time.monotonic()

    def lap(name: str, since: float) -> float:
        timings[name] = time.monotonic() - since
        return time.monotonic()

    with console.status("sandbox up"):
        state = sandbox.up(settings)
    console.print(f"[green]sandbox[/] PostgreSQL :{state.postgres.port}  MariaDB :{state.mariadb.port}")
    mark = lap("sandbox", started)
    summary = generator.seed(state, generator.Scale.named(scale), settings.data_dir / "manifest", console=console)
    planted = {k: v for k, v in summary.items() if k.startswith("planted")}
    console.print(
        f"[green]seeded[/] {summary['psa.time_entries']:,} time entries, "
        f"{summary['erp.labor_postings']:,} postings, {sum(planted.values()):,} planted breaks"
    )
    mark = lap("seed", mark)

    # A fresh warehouse each run: the demo's sources were just reseeded.
    for stale in (settings.warehouse_path, settings.warehouse_path.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(settings.data_dir / "cdc", ignore_errors=True)
    readers = sources.readers(settings)
    capture = Capture(settings.warehouse_path, readers)
    changes: dict[str, Any] = {}
    with console.status("capturing both systems (snapshot, then live changes)") as status:
        worker = threading.Thread(target=capture.run, kwargs={"install_signals": False}, daemon=True)
        worker.start()
        while not all(p.batches > 0 for p in capture.progress.values()) and worker.is_alive():
            time.sleep(0.2)
        status.update("snapshot applied; making live changes in the PSA and the ERP")
        changes = _live_changes(state)
        # Wait for the last change in each system to be in the replica (a quiet spell is no proof on a
        # busy machine): the renamed client (PSA) and the second posting (ERP).
        deadline = time.monotonic() + 120
        while worker.is_alive() and time.monotonic() < deadline and not _captured(capture, changes):
            time.sleep(0.5)
        time.sleep(1.0)
        capture.stop.set()
        worker.join()
    errors = {name: p.error for name, p in capture.progress.items() if p.error}
    if errors:
        raise TerminalError(f"capture failed: {errors}")
    applied = sum(p.applied for p in capture.progress.values())
    console.print(f"[green]captured[/] {applied:,} change events into {settings.warehouse_path}")
    mark = lap("capture", mark)

    con = warehouse.connect(settings.warehouse_path)
    try:
        with console.status("resolving golden records"):
            golden = {r.entity: r for r in tasks.refresh_masterdata(con, settings, incremental=False)}
        mark = lap("masterdata", mark)
        with console.status("reconciling time, invoices and margin"):
            results = {r.recon: r for r in tasks.reconcile(con, settings, trigger="demo")}
        mark = lap("reconcile", mark)
        with console.status("writing the report"):
            report_path = report.write(con, settings.data_dir / "report.html")
        mark = lap("report", mark)
        duplicate_seen = con.execute(
            "SELECT count(*) FROM recon.break_state WHERE recon = 'time' AND "
            "break_type = 'duplicate_posting' AND key = ?",
            [str(changes["approved_and_double_posted"])],
        ).fetchall()[0][0]
    finally:
        con.close()

    table = Table(title="what coexist found")
    table.add_column("area")
    table.add_column("result")
    for name, r in golden.items():
        table.add_row(
            f"golden {name}s",
            f"{r.records:,} source records -> {r.clusters:,} golden records ({r.reviews:,} pairs to review)",
        )
    for name, run in results.items():
        table.add_row(
            f"reconcile {name}",
            f"{run.breaks:,} breaks: " + ", ".join(f"{k} {v:,}" for k, v in sorted(run.counts_by_type.items())),
        )
    table.add_row("live duplicate posting", "caught" if duplicate_seen else "[red]missed[/]")
    console.print(table)
    timings["total"] = time.monotonic() - started
    console.print(
        f"demo finished in {timings['total']:.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in timings.items() if k != 'total')})"
    )
    console.print(f"report: {report_path} (open it in a browser)")
    console.print(
        "next: coexist run (the service) | coexist reconcile breaks --open "
        "| coexist masterdata review | coexist cdc status"
    )
    console.print(
        "work the breaks in a browser: coexist users add me --role approver && coexist web "
        "(then http://127.0.0.1:8470/)"
    )
    return timings

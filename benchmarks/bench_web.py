"""The workbench with many open breaks: server time of the list page, its filters and a break page.

Run: .venv/bin/python benchmarks/bench_web.py [--breaks 100000] [--repeat 20]

Builds a warehouse with N open breaks (two replica tables that differ on every row, their
changelog as capture writes it, one full reconciliation run), gives a tenth of them an owner and a
state, starts the real workbench (uvicorn on a loopback port), signs in and requests each page
`--repeat` times. Prints the server time (the `Server-Timing` header: from the request's arrival to
the response, sessions and rendering included) and the wall time at the client, median and p95.
Target: the list page under 300 ms server time at 100k open breaks.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from coexist.config import Settings
from coexist.web.app import Database, create_app
from coexist.web.server import WebServer
from coexist.web.users import Users
from core import warehouse
from reconcile.engine import Engine

console = Console()
PASSWORD = "benchmark password"

BUILD = """
CREATE SCHEMA replica_psa; CREATE SCHEMA replica_erp;
CREATE TABLE replica_psa.lines AS
  SELECT i AS line_id, 'P-' || (i % 500) AS project, 'LE' || (i % 7) AS company,
         '2026-' || lpad(CAST(1 + i % 12 AS VARCHAR), 2, '0') AS period, (100 + i % 900)::DECIMAL(12,2) AS amount
  FROM range(1, {n} + 1) t(i);
CREATE TABLE replica_erp.postings AS
  SELECT 10000000 + i AS posting_id, i AS line_ref, 'P-' || (i % 500) AS project, 'LE' || (i % 7) AS company,
         '2026-' || lpad(CAST(1 + i % 12 AS VARCHAR), 2, '0') AS period,
         (100 + i % 900 + 1 + i % 50)::DECIMAL(12,2) AS amount
  FROM range(1, {n} + 1) t(i);
CREATE SCHEMA cdc;
CREATE TABLE cdc.changelog (
    source VARCHAR, table_name VARCHAR, op VARCHAR, key JSON, before JSON, after JSON,
    position VARCHAR, partition VARCHAR, ts_ms BIGINT, snapshot VARCHAR, batch_id VARCHAR, applied_at TIMESTAMPTZ);
INSERT INTO cdc.changelog SELECT 'psa', 'lines', 'r', json_object('line_id', line_id), NULL, to_json(t),
    lpad(CAST(line_id AS VARCHAR), 20, '0'), '', 0, 'true', 'b0', TIMESTAMPTZ '2026-11-01 00:00:00+00'
    FROM replica_psa.lines t;
INSERT INTO cdc.changelog SELECT 'erp', 'postings', 'r', json_object('posting_id', posting_id), NULL, to_json(p),
    lpad(CAST(posting_id AS VARCHAR), 20, '0'), '', 0, 'true', 'b0', TIMESTAMPTZ '2026-11-01 00:00:00+00'
    FROM replica_erp.postings p;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--breaks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cx-bench-web-"))
    settings = Settings(
        data_dir=data_dir,
        builtin_reconciliations=False,
        builtin_entities=False,
        reconciliations={
            "ledger": {
                "left": {"table": "replica_psa.lines"},
                "right": {"table": "replica_erp.postings"},
                "keys": [["line_id", "line_ref"]],
                "row_id": ["line_id", "posting_id"],
                "measures": [{"left": "amount", "right": "amount", "abs_tol": 0.01}],
                "context": {
                    "project": ["project", "project"],
                    "period": ["period", "period"],
                    "legal_entity": ["company", "company"],
                },
                "history": {"left": "psa.lines.line_id", "right": "erp.postings.posting_id"},
            }
        },
        web={"port": 0},
    )
    con = warehouse.connect(settings.warehouse_path)
    server = None
    try:
        started = time.perf_counter()
        con.execute(BUILD.format(n=args.breaks))
        result = Engine(con).run("ledger", settings.all_reconciliations()["ledger"])
        console.print(f"{result.breaks:,} open breaks built and reconciled in {time.perf_counter() - started:.1f} s")
        Users(settings.users_path).add("bench", "approver", PASSWORD, "benchmark")
        server = WebServer(create_app(settings, Database(con)), settings.web)
        server.start()
        con.execute(
            "INSERT INTO work.break_work SELECT break_id, 'bench', 'investigating', NULL, now(), 'bench' "
            "FROM recon.break_state USING SAMPLE 10 PERCENT (bernoulli, 7)"
        )
        one = con.execute("SELECT break_id FROM recon.break_state ORDER BY break_id LIMIT 1").fetchall()[0][0]
        client = httpx.Client(base_url=server.url, timeout=60)
        token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text)
        assert token
        client.post("/login", data={"name": "bench", "password": PASSWORD, "login_token": token.group(1)})
        pages = {
            "list (default: active, oldest first)": "/breaks",
            "list, largest difference first": "/breaks?sort=amount",
            "list, filtered by type, owner, state": "/breaks?recon=ledger&break_type=amount_mismatch&owner=bench"
            "&state=investigating",
            "list, legal entity + period": "/breaks?legal_entity=LE3&period=2026-05",
            "list, text search on key/code": "/breaks?q=P-42",
            "list, page 500": f"/breaks?offset={min(50_000, args.breaks // 2)}",
            "break page (history, runs, audit)": f"/breaks/{one}",
            "operations": "/ops",
        }
        table = Table(title=f"workbench, {result.breaks:,} open breaks, {args.repeat} requests each")
        for column in ("page", "server median ms", "server p95 ms", "client median ms"):
            table.add_column(column, justify="left" if column == "page" else "right")
        for label, path in pages.items():
            server_ms, client_ms = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                response = client.get(path)
                client_ms.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, (path, response.status_code)
                server_ms.append(float(response.headers["server-timing"].split("dur=")[1]))
            server_ms.sort()
            p95 = server_ms[max(0, int(len(server_ms) * 0.95) - 1)]
            table.add_row(
                label, f"{statistics.median(server_ms):.0f}", f"{p95:.0f}", f"{statistics.median(client_ms):.0f}"
            )
        console.print(table)
        console.print(f"peak RSS {psutil.Process().memory_info().rss / 2**20:,.0f} MB (process, warehouse included)")
    finally:
        if server is not None:
            server.stop()
        con.close()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

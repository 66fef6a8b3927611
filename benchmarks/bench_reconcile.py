"""Reconciliation at scale: coexist vs one plain DuckDB statement vs datacompy (Polars), one run.

Run: .venv/bin/python benchmarks/bench_reconcile.py [--rows 10000000] [--datacompy-python PATH]

Generates N PSA time entries and about N ERP postings as Parquet (about 1% breaks of six kinds,
and rounding noise below the tolerance on 5% of rows), then runs each contender in its own process
and prints wall time and peak RSS side by side (and coexist's second run on the same inputs, the
scheduled case), for both kinds of input coexist reads: the Parquet
files themselves (a `path` rule) and warehouse tables (the same rows loaded into the DuckDB file
first; loading is not timed). coexist runs with the project's default DuckDB limits
(`[duckdb] memory_limit`), the plain statement with the same limit. datacompy needs polars<1.45,
so it runs from its own virtualenv (`--datacompy-python`, default /tmp/venv-datacompy/bin/python;
the row says so when that interpreter is missing) and reads the Parquet files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from _child import run_child
from rich.console import Console
from rich.table import Table

from coexist.config import DuckDBSettings

console = Console()

GENERATE = """
COPY (
  SELECT i AS entry_id, (1 + i % 8)::DECIMAL(6,2) AS hours, ((1 + i % 8) * 150)::DECIMAL(14,2) AS amount,
         '2026-' || lpad(CAST(1 + i % 12 AS VARCHAR), 2, '0') AS period, 'P-26-' || lpad(CAST(i % 5000 AS VARCHAR), 4, '0')
         AS project_code
  FROM range(1, {n} + 1) t(i)
) TO '{left}' (FORMAT parquet);
COPY (
  WITH base AS (
    SELECT i, hash(i) % 10000 AS h FROM range(1, {n} + 1) t(i)
  )
  SELECT 5000000000 + i AS posting_id, i AS psa_entry_ref,
         (1 + i % 8 + CASE WHEN h BETWEEN 30 AND 49 THEN 1 ELSE 0 END)::DECIMAL(8,2) AS hours,
         ((1 + i % 8) * 150 + CASE WHEN h BETWEEN 50 AND 69 THEN 25 WHEN h >= 9500 THEN 0.004 ELSE 0 END)::DECIMAL(14,3)
           AS amount,                                              -- 5% within 0.01: rounding, not a break
         CASE WHEN h BETWEEN 70 AND 79 THEN '2027-01' ELSE '2026-' || lpad(CAST(1 + i % 12 AS VARCHAR), 2, '0') END
           AS fiscal_period
  FROM base WHERE NOT (h < 30)                                     -- 0.3% never posted
  UNION ALL
  SELECT 6000000000 + i, i, (1 + i % 8)::DECIMAL(8,2), ((1 + i % 8) * 150)::DECIMAL(14,3),
         '2026-' || lpad(CAST(1 + i % 12 AS VARCHAR), 2, '0')
  FROM base WHERE h BETWEEN 80 AND 99                              -- 0.2% posted twice
  UNION ALL
  SELECT 7000000000 + i, {n} + i, 1.00, 150.00, '2026-01'
  FROM base WHERE h BETWEEN 100 AND 109                            -- 0.1% with no PSA entry
) TO '{right}' (FORMAT parquet);
"""

EXPECTED = """
WITH base AS (SELECT i, hash(i) % 10000 AS h FROM range(1, {n} + 1) t(i))
SELECT CASE WHEN h < 30 THEN 'missing_in_erp' WHEN h BETWEEN 80 AND 99 THEN 'duplicate_posting'
            WHEN h BETWEEN 30 AND 49 THEN 'quantity_mismatch' WHEN h BETWEEN 50 AND 69 THEN 'amount_mismatch'
            WHEN h BETWEEN 70 AND 79 THEN 'period_mismatch' END AS t, count(*)
FROM base WHERE h < 100 GROUP BY 1
UNION ALL SELECT 'missing_in_psa', count(*) FROM base WHERE h BETWEEN 100 AND 109
"""

COEXIST = """
import json, sys, time
from _child import peak_rss_mb
from pathlib import Path
from coexist.config import DuckDBSettings
from core import warehouse
from reconcile.engine import Engine
from reconcile.rules import Rule
left, right, db = sys.argv[1:4]
side = lambda x: {{"path": x}} if x.endswith(".parquet") else {{"table": x}}
rule = Rule.model_validate({{
    "left": side(left), "right": side(right), "left_name": "PSA", "right_name": "ERP",
    "keys": [["entry_id", "psa_entry_ref"]], "row_id": ["entry_id", "posting_id"],
    "measures": [{{"left": "hours", "right": "hours", "abs_tol": 0.01, "break_type": "quantity_mismatch"}},
                 {{"left": "amount", "right": "amount", "abs_tol": 0.01, "break_type": "amount_mismatch"}}],
    "attributes": [{{"left": "period", "right": "fiscal_period", "break_type": "period_mismatch"}}],
}})
warehouse.configure(DuckDBSettings().limits(Path(db).parent))
con = warehouse.connect(db)
name = "bench_" + ("parquet" if left.endswith(".parquet") else "tables")
t = time.perf_counter()
result = Engine(con).run(name, rule)
wall = time.perf_counter() - t
t = time.perf_counter()
again = Engine(con).run(name, rule)  # the scheduled case: the same inputs again, every break already known
repeat = time.perf_counter() - t
print(json.dumps({{"wall": wall, "rss_mb": peak_rss_mb(),
                  "counts": result.counts_by_type, "repeat": repeat, "repeat_new": again.new_breaks}}))
"""

PLAIN = """
import json, sys, time, duckdb
from _child import peak_rss_mb
left, right, db, memory = sys.argv[1:5]
con = duckdb.connect(db)
con.execute("SET enable_progress_bar = false")
con.execute(f"SET memory_limit = '{{memory}}'")
rel = lambda x: f"read_parquet('{{x}}')" if x.endswith(".parquet") else x
t = time.perf_counter()
rows = con.execute(f'''
  SELECT CASE WHEN r.psa_entry_ref IS NULL THEN 'missing_in_erp' WHEN l.entry_id IS NULL THEN 'missing_in_psa'
              WHEN abs(l.hours - r.hours) > 0.01 THEN 'quantity_mismatch'
              WHEN abs(l.amount - r.amount) > 0.01 THEN 'amount_mismatch'
              WHEN l.period <> r.fiscal_period THEN 'period_mismatch' END AS t, count(*)
  FROM {{rel(left)}} l FULL OUTER JOIN {{rel(right)}} r ON l.entry_id = r.psa_entry_ref
  GROUP BY 1''').fetchall()
wall = time.perf_counter() - t
print(json.dumps({{"wall": wall, "rss_mb": peak_rss_mb(),
                  "counts": {{str(k): v for k, v in rows if k}}}}))
"""

DATACOMPY = """
import json, sys, time
from _child import peak_rss_mb
import polars as pl
import datacompy
left, right = sys.argv[1:3]
t = time.perf_counter()
df1 = pl.read_parquet(left).with_columns(pl.col("hours").cast(pl.Float64), pl.col("amount").cast(pl.Float64))
df2 = pl.read_parquet(right).rename({{"psa_entry_ref": "entry_id", "fiscal_period": "period"}}).with_columns(
    pl.col("hours").cast(pl.Float64), pl.col("amount").cast(pl.Float64))
cmp = datacompy.PolarsCompare(df1, df2, join_columns=["entry_id"], abs_tol=0.01)
unequal = {{c["column"]: c["unequal_cnt"] for c in cmp.column_stats}}
counts = {{"left_only": cmp.df1_unq_rows.height, "right_only": cmp.df2_unq_rows.height, **unequal}}
wall = time.perf_counter() - t
print(json.dumps({{"wall": wall, "rss_mb": peak_rss_mb(),
                  "counts": counts}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--datacompy-python", default="/tmp/venv-datacompy/bin/python")
    parser.add_argument("--only", choices=("parquet", "tables"), help="one kind of input (default: both)")
    args = parser.parse_args()
    memory = DuckDBSettings().memory_limit
    work = Path(tempfile.mkdtemp(prefix="cx-bench-recon-"))
    left, right = work / "psa_time.parquet", work / "erp_postings.parquet"
    db = work / "bench_warehouse.duckdb"
    with console.status(f"generating {args.rows:,} entries and their postings as Parquet, and as tables"):
        con = duckdb.connect(str(db))
        con.execute(GENERATE.format(n=args.rows, left=left, right=right))
        con.execute(f"CREATE TABLE psa_time AS FROM read_parquet('{left}')")
        con.execute(f"CREATE TABLE erp_postings AS FROM read_parquet('{right}')")
        expected = {t: c for t, c in con.execute(EXPECTED.format(n=args.rows)).fetchall()}
        right_rows = con.execute("SELECT count(*) FROM erp_postings").fetchall()[0][0]
        con.close()
    results: dict[str, dict[str, object]] = {}
    kinds = [args.only] if args.only else ["parquet", "tables"]
    for kind in kinds:
        lhs, rhs = (str(left), str(right)) if kind == "parquet" else ("psa_time", "erp_postings")
        with console.status(f"coexist on {kind}"):
            results[f"coexist ({kind})"] = run_child(sys.executable, COEXIST.format(), lhs, rhs, str(db))
        with console.status(f"plain DuckDB statement on {kind}"):
            results[f"plain DuckDB join ({kind})"] = run_child(
                sys.executable, PLAIN.format(), lhs, rhs, str(db), memory
            )
    if Path(args.datacompy_python).exists():
        with console.status("datacompy (Polars)"):
            results["datacompy Polars (parquet)"] = run_child(
                args.datacompy_python, DATACOMPY.format(), str(left), str(right)
            )
    else:
        results["datacompy Polars (parquet)"] = {"error": f"no interpreter at {args.datacompy_python}"}

    table = Table(title=f"{args.rows:,} PSA time entries vs {right_rows:,} ERP postings, memory_limit {memory}")
    for col in ("engine", "wall s", "peak RSS MB", "vs plain statement", "vs datacompy"):
        table.add_column(col)
    datacompy_wall = results["datacompy Polars (parquet)"].get("wall")
    for name, r in results.items():
        if "error" in r:
            table.add_row(name, "-", "-", "-", f"error: {r['error']}")
            continue
        wall = float(r["wall"])  # type: ignore[arg-type]
        kind = name.rsplit("(", 1)[1].rstrip(")")
        plain_wall = results.get(f"plain DuckDB join ({kind})", {}).get("wall")
        ratio = f"{wall / float(plain_wall):.2f}x" if isinstance(plain_wall, float) else "-"
        faster = f"{float(datacompy_wall) / wall:.1f}x faster" if isinstance(datacompy_wall, float) else "-"
        table.add_row(name, f"{wall:.2f}", f"{float(r['rss_mb']):,.0f}", ratio, faster)  # type: ignore[arg-type]
    console.print(table)
    for name, r in results.items():
        if "repeat" in r:
            console.print(
                f"{name}: the same run again (nothing changed, {r['repeat_new']} new breaks): {float(r['repeat']):.2f} s"  # type: ignore[arg-type]
            )
    for name, r in results.items():
        counts = r.get("counts", {})
        assert isinstance(counts, dict)
        console.print(f"{name}: {', '.join(f'{k} {v:,}' for k, v in sorted(counts.items()))}")
    console.print(f"planted: {', '.join(f'{k} {v:,}' for k, v in sorted(expected.items()))}")
    for kind in kinds:
        found = results[f"coexist ({kind})"].get("counts", {})
        console.print(
            f"coexist on {kind} found every planted break with its type and nothing else: {found == expected}"
        )
    console.print(
        "The plain statement classifies joined rows and cannot tell a duplicate posting from a match; "
        "datacompy reports per-column unequal counts and one-sided rows and cannot count duplicates either."
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    console.print(f"total {time.perf_counter() - t0:.0f} s")

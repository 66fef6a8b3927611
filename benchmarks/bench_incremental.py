"""Continuous reconciliation at scale: a full run vs an incremental run after a small change.

Run: .venv/bin/python benchmarks/bench_incremental.py [--rows 10000000] [--changed 0.001]

Builds two replica tables (`replica_psa.time_entries`, `replica_erp.labor_postings`) of N rows
each in a warehouse file with their `cdc.changelog` as capture writes it (a snapshot read per row,
then change events with before and after images) and runs the rule fully. Then, for each of two
change sets of a fraction of the rows on both sides, it times an incremental run against a full run
and checks that both leave the same open breaks:
- `breaking`: every change makes or moves a break (updated amounts on one side, re-keyed and deleted
  postings, postings made twice): the worst case, the run writes a break event per changed row;
- `consistent`: the same entries corrected on both sides (amounts changed in the PSA and in the
  ERP): nothing breaks, so the run's cost is finding and re-reading the changed keys.
The replica and changelog are written with SQL in the shape the sink writes (the sink's own speed
is `bench_cdc.py`'s subject).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coexist.config import DuckDBSettings
from core import warehouse
from reconcile.engine import Engine
from reconcile.rules import Rule

console = Console()

BUILD = """
CREATE SCHEMA replica_psa; CREATE SCHEMA replica_erp;
CREATE TABLE replica_psa.time_entries AS
  SELECT i AS entry_id, (1 + i % 8)::DECIMAL(6,2) AS hours, ((1 + i % 8) * 150)::DECIMAL(14,2) AS amount,
         '2026-' || lpad(CAST(1 + i % 12 AS VARCHAR), 2, '0') AS period
  FROM range(1, {n} + 1) t(i);
CREATE TABLE replica_erp.labor_postings AS
  SELECT 5000000000 + i AS posting_id, i AS psa_entry_ref, (1 + i % 8)::DECIMAL(8,2) AS hours,
         ((1 + i % 8) * 150 + CASE WHEN hash(i) % 1000 = 0 THEN 25 ELSE 0 END)::DECIMAL(14,2) AS amount,
         '2026-' || lpad(CAST(1 + i % 12 AS VARCHAR), 2, '0') AS fiscal_period
  FROM range(1, {n} + 1) t(i) WHERE hash(i) % 1000 <> 1;
CREATE SCHEMA cdc;
CREATE TABLE cdc.changelog (
    source VARCHAR, table_name VARCHAR, op VARCHAR, key JSON, before JSON, after JSON,
    position VARCHAR, partition VARCHAR, ts_ms BIGINT, snapshot VARCHAR, batch_id VARCHAR, applied_at TIMESTAMPTZ);
INSERT INTO cdc.changelog SELECT 'psa', 'time_entries', 'r', json_object('entry_id', entry_id), NULL, to_json(t),
    NULL, '', 0, 'true', 'b0', TIMESTAMPTZ '2026-11-01 00:00:00+00' FROM replica_psa.time_entries t;
INSERT INTO cdc.changelog SELECT 'erp', 'labor_postings', 'r', json_object('posting_id', posting_id), NULL, to_json(l),
    NULL, '', 0, 'true', 'b0', TIMESTAMPTZ '2026-11-01 00:00:00+00' FROM replica_erp.labor_postings l;
"""

# Changes on both sides, each written to the replica table and to the changelog (before/after images).
# Sampled PSA entries changed by an amount, with their changelog (batch `n`).
PSA_AMOUNTS = """
CREATE OR REPLACE TEMP TABLE ch_time AS SELECT entry_id FROM replica_psa.time_entries USING SAMPLE {{per_side}} ROWS (reservoir, {seed});
CREATE OR REPLACE TEMP TABLE old_time AS SELECT t.* FROM replica_psa.time_entries t SEMI JOIN ch_time USING (entry_id);
UPDATE replica_psa.time_entries SET amount = amount + {delta} WHERE entry_id IN (SELECT entry_id FROM ch_time);
INSERT INTO cdc.changelog SELECT 'psa', 'time_entries', 'u', json_object('entry_id', o.entry_id), to_json(o), to_json(n),
    NULL, '', {n}, NULL, 'b{n}', now() FROM old_time o JOIN replica_psa.time_entries n USING (entry_id);
"""

CHANGE = (
    PSA_AMOUNTS.format(seed=1, delta=10, n=1)
    + """
CREATE OR REPLACE TEMP TABLE ch_post AS SELECT posting_id FROM replica_erp.labor_postings USING SAMPLE {per_side} ROWS (reservoir, 2);
CREATE OR REPLACE TEMP TABLE old_post AS SELECT l.* FROM replica_erp.labor_postings l SEMI JOIN ch_post USING (posting_id);
-- a third of the sampled postings re-keyed, a third deleted, a third posted twice
UPDATE replica_erp.labor_postings SET psa_entry_ref = psa_entry_ref + 1
  WHERE posting_id IN (SELECT posting_id FROM ch_post WHERE posting_id % 3 = 0);
INSERT INTO cdc.changelog SELECT 'erp', 'labor_postings', 'u', json_object('posting_id', o.posting_id), to_json(o),
    to_json(n), NULL, '', 1, NULL, 'b1', now()
  FROM old_post o JOIN replica_erp.labor_postings n USING (posting_id) WHERE o.posting_id % 3 = 0;
DELETE FROM replica_erp.labor_postings WHERE posting_id IN (SELECT posting_id FROM ch_post WHERE posting_id % 3 = 1);
INSERT INTO cdc.changelog SELECT 'erp', 'labor_postings', 'd', json_object('posting_id', posting_id), to_json(o), NULL,
    NULL, '', 1, NULL, 'b1', now() FROM old_post o WHERE posting_id % 3 = 1;
CREATE OR REPLACE TEMP TABLE new_post AS SELECT posting_id + 100000000000 AS posting_id, psa_entry_ref, hours, amount, fiscal_period
  FROM old_post WHERE posting_id % 3 = 2;
INSERT INTO replica_erp.labor_postings SELECT * FROM new_post;
INSERT INTO cdc.changelog SELECT 'erp', 'labor_postings', 'c', json_object('posting_id', posting_id), NULL, to_json(p),
    NULL, '', 1, NULL, 'b1', now() FROM new_post p;
"""
)

# The same entries corrected on both sides: the changes a reconciliation should find nothing in.
CONSISTENT = (
    PSA_AMOUNTS.format(seed=3, delta=7, n=2)
    + """
CREATE OR REPLACE TEMP TABLE old_post AS SELECT l.* FROM replica_erp.labor_postings l
    WHERE psa_entry_ref IN (SELECT entry_id FROM ch_time);
UPDATE replica_erp.labor_postings SET amount = amount + 7 WHERE psa_entry_ref IN (SELECT entry_id FROM ch_time);
INSERT INTO cdc.changelog SELECT 'erp', 'labor_postings', 'u', json_object('posting_id', o.posting_id), to_json(o),
    to_json(n), NULL, '', 2, NULL, 'b2', now() FROM old_post o JOIN replica_erp.labor_postings n USING (posting_id);
"""
)
CHANGE_SETS = {"breaking": CHANGE, "consistent": CONSISTENT}

RULE = {
    "left": {"table": "replica_psa.time_entries"},
    "right": {"table": "replica_erp.labor_postings"},
    "left_name": "PSA",
    "right_name": "ERP",
    "keys": [["entry_id", "psa_entry_ref"]],
    "row_id": ["entry_id", "posting_id"],
    "measures": [
        {"left": "hours", "right": "hours", "abs_tol": 0.01, "break_type": "quantity_mismatch"},
        {"left": "amount", "right": "amount", "abs_tol": 0.01, "break_type": "amount_mismatch"},
    ],
    "attributes": [{"left": "period", "right": "fiscal_period", "break_type": "period_mismatch"}],
}
OPEN = "SELECT break_type, key, left_id, right_id, delta FROM recon.break_state WHERE recon = ? AND status = 'open'"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--changed", type=float, default=0.001, help="fraction of each side's rows changed")
    parser.add_argument(
        "--changes",
        nargs="+",
        choices=sorted(CHANGE_SETS),
        default=["breaking", "consistent"],
        help="change sets, applied and measured in this order",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cx-bench-inc-"))
    warehouse.configure(DuckDBSettings().limits(work))
    con = warehouse.connect(work / "w.duckdb")
    with console.status(f"building {args.rows:,} x {args.rows:,} replica tables and their changelog"):
        con.execute(BUILD.format(n=args.rows))
        con.execute("CHECKPOINT")
    engine = Engine(con)
    rule = Rule.model_validate(RULE)
    figures: list[tuple[str, float, str]] = []
    with console.status("first full run"):
        first = engine.run("inc", rule)
        engine.run("full", rule)
    figures.append(("full run (before the changes)", first.seconds, f"{first.breaks:,} open breaks"))
    per_side = max(1, int(args.rows * args.changed))
    ratios: list[tuple[str, float, bool]] = []
    for kind in args.changes:
        with console.status(f"{kind} changes to {per_side:,} rows on each side"):
            con.execute(CHANGE_SETS[kind].format(per_side=per_side))
            con.execute("CHECKPOINT")  # capture's own writes are persisted by capture, not by the run timed next
        t = time.perf_counter()
        inc = engine.run("inc", rule)
        inc_wall = time.perf_counter() - t
        figures.append(
            (
                f"{kind}: incremental run",
                inc_wall,
                f"mode {inc.mode}, {inc.new_breaks:,} new, {inc.resolved_breaks:,} resolved",
            )
        )
        t = time.perf_counter()
        full = engine.run("full", rule, full=True)
        full_wall = time.perf_counter() - t
        figures.append((f"{kind}: full run", full_wall, f"{full.breaks:,} open breaks"))
        same = sorted(con.execute(OPEN, ["inc"]).fetchall()) == sorted(con.execute(OPEN, ["full"]).fetchall())
        ratios.append((kind, inc_wall / full_wall, same))
    con.close()

    table = Table(title=f"{args.rows:,} x {args.rows:,} replica rows, memory_limit {DuckDBSettings().memory_limit}")
    for column in ("run", "wall s", "note"):
        table.add_column(column)
    for label, seconds, note in figures:
        table.add_row(label, f"{seconds:.2f}", note)
    console.print(table)
    for kind, ratio, same in ratios:
        console.print(f"{kind}: incremental / full {ratio:.1%} (target <= 5%); open breaks identical: {same}")
    console.print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Customer resolution at 100k and 1M source records: coexist next to a standard Splink pipeline.

Run: .venv/bin/python benchmarks/bench_masterdata.py [--records 100000 1000000] [--splink-python PATH]

Records come from the generator's customer drift (PSA and ERP copies of each company, with
suffix and abbreviation variants, typos, reformatted or missing tax numbers, moved addresses,
generic names shared by different companies, duplicates inside each system). Each contender
runs in its own process; wall time covers standardise -> pairs -> clusters, peak RSS is the
process's, precision/recall/F1 are pairwise against the truth. Splink (5.0, DuckDB backend)
runs from its own virtualenv (default /tmp/venv-splink/bin/python) on coexist's standardised
columns (their time added to its wall) with the built-in entity's blocking rules: unsupervised
training (u by random sampling, EM on two blocking rules), term frequencies on the name, links
at match probability >= 0.9. Each engine gets its own default memory limit (coexist's warehouse
1GB, DuckDB's 80% of RAM for Splink); `--splink-memory-limit 1GB` compares them under one cap.
Issue #5 target: 1M records in at most 45 s, under 3 GB, F1 at least 0.985. "coexist, trained" runs
the built-in customer entity with every weight removed, learned from the records (issue #13: F1 at least Splink's with precision
>= 0.995, at no more than half its time and memory at 1M).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from _child import SPLINK_QUALITY, run_child  # type: ignore[import-not-found]
from rich.console import Console
from rich.table import Table

from coexist.sandbox import generator
from masterdata import standardise
from masterdata.model import builtin_entities

console = Console()

COEXIST = """
import json, sys, time, duckdb, pyarrow.parquet as pq
from _child import peak_rss_mb
from masterdata.evaluate import pairwise_quality
from coexist.sandbox.generator import customer_entity
from masterdata.resolve import Resolver
path, db, trained, limit = sys.argv[1], sys.argv[2], sys.argv[3] == "trained", sys.argv[4]
entity = customer_entity(f"read_parquet('{path}')", learned=trained)
con = duckdb.connect(db)
con.execute("SET enable_progress_bar = false")
con.execute("SET preserve_insertion_order = false")
if limit != "default":
    con.execute(f"SET memory_limit = '{limit}'")
t = time.perf_counter()
result = Resolver(con).resolve("customer", entity)
wall = time.perf_counter() - t
quality = pairwise_quality(con, "customer", pq.read_table(path, columns=["source_system", "source_id", "true_id"]))
# Incremental: 0.1% of the records change (renamed), as after a CDC batch.
changed = path.replace(".parquet", "_changed.parquet")
con.execute(f"COPY (SELECT * REPLACE (CASE WHEN hash(source_id) % 1000 = 0 THEN name || ' Holdings' ELSE name END "
            f"AS name) FROM read_parquet('{path}')) TO '{changed}' (FORMAT parquet)")
for source in entity.sources:
    source.sql = source.sql.replace(path, changed)
t = time.perf_counter()
inc = Resolver(con).resolve("customer", entity, incremental=True)
inc_wall = time.perf_counter() - t
print(json.dumps({"wall": wall, "rss_mb": peak_rss_mb(), **quality,
                  "incremental_wall": inc_wall, "incremental_changed": inc.changed_records,
                  "incremental_touched": inc.touched_clusters}))
"""

SPLINK = (
    """
import json, sys, time, duckdb
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
path, tmp, standardise_seconds, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
blocks = [block_on(*columns) for columns in json.loads(sys.argv[5])]
t = time.perf_counter() - standardise_seconds
con = duckdb.connect()
con.execute(f"SET temp_directory = '{tmp}'")
if limit != "default":
    con.execute(f"SET memory_limit = '{limit}'")
con.execute(f"CREATE TABLE recs AS SELECT * FROM read_parquet('{path}')").fetchall()
db_api = DuckDBAPI(con)
df = db_api.register("recs")
settings = SettingsCreator(
    link_type="dedupe_only",
    blocking_rules_to_generate_predictions=[block_on("tax_std"), *blocks],
    comparisons=[cl.JaroWinklerAtThresholds("name_std", [0.9, 0.96]).configure(term_frequency_adjustments=True),
                 cl.ExactMatch("form_std"), cl.ExactMatch("tax_std"), cl.ExactMatch("postcode_std"),
                 cl.ExactMatch("city_std"), cl.ExactMatch("street_std"), cl.ExactMatch("country_std")],
    retain_intermediate_calculation_columns=False,
)
linker = Linker(df, settings, log_level=40)
linker.training.estimate_probability_two_random_records_match([block_on("tax_std", "country_std")], recall=0.8)
linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=1)
linker.training.estimate_parameters_using_expectation_maximisation(block_on("tax_std"))
linker.training.estimate_parameters_using_expectation_maximisation(blocks[0])
pred = linker.inference.predict(threshold_match_probability=0.9)
clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, 0.9)
clustered = clusters.as_pyarrow_table()
con.register("clustered", clustered)
"""
    + SPLINK_QUALITY
)


def standardise_for_splink(source: Path, target: Path) -> tuple[float, list[list[str]]]:
    """Write the records with the built-in customer entity's standardised columns (empty text as
    NULL, which Splink reads as missing) and its block keys, so the two engines differ in scoring
    and clustering, not in what they compare. Returns the seconds it took (added to Splink's wall)
    and the block-key columns of each blocking rule."""
    entity = builtin_entities()["customer"]
    columns = [f"nullif(CAST({expr} AS VARCHAR), '') AS {name}" for name, expr in entity.standardise.items()]
    blocks = [[f"_b{j}_{i}" for i in range(len(block))] for j, block in enumerate(entity.blocking)]
    keys = [
        f"{expr} AS {name}"
        for block, names in zip(entity.blocking, blocks, strict=True)
        for expr, name in zip(block, names, strict=True)
    ]
    t = time.perf_counter()
    con = duckdb.connect()
    standardise.install(con)
    con.execute(f"""
        COPY (SELECT source_system || ':' || source_id AS unique_id, true_id, {", ".join(columns + keys)}
              FROM read_parquet('{source}')) TO '{target}' (FORMAT parquet)""")
    con.close()
    return time.perf_counter() - t, blocks


def make_records(n_records: int, path: Path, seed: int) -> int:
    """About two source records per company (PSA + ERP, with duplicates): n_records / 1.98 companies."""
    frame = generator.customer_records(max(10, int(n_records / 1.98)), seed)
    frame.write_parquet(path)
    return frame.height


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--splink-python", default="/tmp/venv-splink/bin/python")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument("--memory-limit", default="1GB", help="coexist's DuckDB memory_limit (its warehouse default)")
    parser.add_argument(
        "--splink-memory-limit",
        default="default",
        help="Splink's ('default': DuckDB's own, 80%% of RAM, as Splink runs)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cx-bench-mdm-"))
    table = Table(
        title=f"customer resolution: coexist vs Splink (same records, same run; memory_limit coexist "
        f"{args.memory_limit}, Splink {args.splink_memory_limit})"
    )
    for col in ("records", "engine", "wall s", "peak RSS MB", "precision", "recall", "F1"):
        table.add_column(col, justify="right")
    incremental: list[str] = []
    for n in args.records:
        path = work / f"customers_{n}.parquet"
        with console.status(f"generating {n:,} customer source records"):
            rows = make_records(n, path, args.seed)
        with console.status(f"coexist on {rows:,}"):
            ours = run_child(
                sys.executable, COEXIST, str(path), str(work / f"mdm_{n}.duckdb"), "configured", args.memory_limit
            )
        with console.status(f"coexist (trained weights) on {rows:,}"):
            learned = run_child(
                sys.executable, COEXIST, str(path), str(work / f"mdm_{n}_t.duckdb"), "trained", args.memory_limit
            )
        if args.no_splink:
            theirs = {"error": "skipped (--no-splink)"}
        elif Path(args.splink_python).exists():
            with console.status(f"Splink on {rows:,}"):
                std = work / f"customers_{n}_std.parquet"
                seconds, blocks = standardise_for_splink(path, std)
                theirs = run_child(
                    args.splink_python,
                    SPLINK,
                    str(std),
                    str(work / "splink_tmp"),
                    str(seconds),
                    args.splink_memory_limit,
                    json.dumps(blocks),
                )
        else:
            theirs = {"error": f"no interpreter at {args.splink_python}"}
        if "incremental_wall" in ours:
            incremental.append(
                f"coexist incremental run on {rows:,} records after {ours['incremental_changed']:,} "
                f"changed: {float(ours['incremental_wall']):.1f} s ({ours['incremental_touched']:,} "
                f"clusters touched) vs {float(ours['wall']):.1f} s full"
            )  # type: ignore[arg-type]
        for name, r in (("coexist", ours), ("coexist, trained", learned), ("Splink 5 (DuckDB)", theirs)):
            if "error" in r:
                table.add_row(f"{rows:,}", name, "-", "-", "-", "-", f"error: {r['error']}")
            else:
                table.add_row(
                    f"{rows:,}",
                    name,
                    f"{float(r['wall']):.1f}",
                    f"{float(r['rss_mb']):,.0f}",  # type: ignore[arg-type]
                    f"{float(r['precision']):.4f}",
                    f"{float(r['recall']):.4f}",  # type: ignore[arg-type]
                    f"{float(r['f1']):.4f}",
                )  # type: ignore[arg-type]
        for stale in work.glob(f"*{n}*"):
            stale.unlink()
    console.print(table)
    for line in incremental:
        console.print(line)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    console.print(f"total {time.perf_counter() - t0:.0f} s")

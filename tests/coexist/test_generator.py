"""The generator's manifest must describe exactly what it wrote into the two databases."""

from __future__ import annotations

import json

import polars as pl
import pytest

from coexist.config import Settings
from coexist.sandbox import generator
from coexist.sandbox import servers as sandbox

pytestmark = pytest.mark.slow  # seeds a real sandbox


@pytest.fixture(scope="module")
def seeded(shared_sandbox: Settings) -> tuple[Settings, pl.DataFrame, pl.DataFrame]:
    state = sandbox.require_state(shared_sandbox)
    manifest_dir = shared_sandbox.data_dir / "manifest"
    generator.seed(state, generator.Scale.named("small", time_entries=20_000, seed=11), manifest_dir)
    return (
        shared_sandbox,
        pl.read_parquet(manifest_dir / "entities.parquet"),
        pl.read_parquet(manifest_dir / "breaks.parquet"),
    )


def pg_frame(settings: Settings, query: str) -> pl.DataFrame:
    state = sandbox.require_state(settings)
    with sandbox.pg_app_connect(state) as conn:
        cur = conn.execute(query)
        cols = [d.name for d in cur.description or []]
        return pl.DataFrame(cur.fetchall(), schema=cols, orient="row", infer_schema_length=None)


def my_frame(settings: Settings, query: str) -> pl.DataFrame:
    state = sandbox.require_state(settings)
    with sandbox.my_app_connect(state) as conn, conn.cursor() as cur:
        cur.execute(query)
        cols = [d[0] for d in cur.description]
        return pl.DataFrame(cur.fetchall(), schema=cols, orient="row", infer_schema_length=None)


def test_entities_manifest_covers_every_source_record(seeded) -> None:
    settings, entities, _ = seeded
    sources = {
        ("customer", "psa"): pg_frame(settings, "select client_id::text as id from clients"),
        ("customer", "erp"): my_frame(settings, "select cust_no as id from customers"),
        ("project", "psa"): pg_frame(settings, "select project_id::text as id from projects"),
        ("project", "erp"): my_frame(settings, "select proj_no as id from projects"),
        ("resource", "psa"): pg_frame(settings, "select resource_id::text as id from resources"),
        ("resource", "erp"): my_frame(settings, "select emp_no as id from employees"),
    }
    for (entity, system), frame in sources.items():
        listed = set(entities.filter((pl.col("entity") == entity) & (pl.col("source_system") == system))["source_id"])
        assert listed == set(frame["id"].cast(pl.String)), (entity, system)
    # Duplicates exist inside each system: several source records share a true entity.
    per_true = entities.group_by("entity", "source_system", "true_id").len()
    assert per_true.filter((pl.col("entity") == "customer") & (pl.col("len") > 1)).height > 0
    # Generic names shared by different companies: same cleaned name, different true ids.
    clients = pg_frame(settings, "select client_id::text as source_id, client_name from clients").join(
        entities.filter(pl.col("source_system") == "psa"), on="source_id"
    )
    shared = clients.group_by("client_name").agg(pl.col("true_id").n_unique().alias("n"))
    assert shared["n"].max() > 1


def test_time_breaks_are_in_the_databases(seeded) -> None:
    settings, _, breaks = seeded
    time = pg_frame(
        settings,
        "select entry_id, status::text as status, hours::float8 as hours, "
        "amount::float8 as amount, to_char(work_date, 'YYYY-MM') as period from time_entries",
    )
    posts = my_frame(
        settings,
        "select posting_id, psa_entry_ref, cast(hours as double) as hours, "
        "cast(amount as double) as amount, fiscal_period from labor_postings",
    )
    approved = time.filter(pl.col("status") == "approved")
    per_entry = (
        posts.filter(pl.col("psa_entry_ref").is_not_null())
        .group_by("psa_entry_ref")
        .agg(
            n=pl.len(),
            hours=pl.col("hours").first(),
            amount=pl.col("amount").first(),
            period=pl.col("fiscal_period").first(),
        )
    )
    joined = approved.join(per_entry, left_on="entry_id", right_on="psa_entry_ref", how="left")
    actual = {
        "missing_in_erp": joined.filter(pl.col("n").is_null()),
        "duplicate_posting": joined.filter(pl.col("n") > 1),
        "quantity_mismatch": joined.filter((pl.col("n") == 1) & (pl.col("hours") != pl.col("hours_right"))),
        "amount_mismatch": joined.filter(
            (pl.col("n") == 1)
            & (pl.col("hours") == pl.col("hours_right"))
            & (pl.col("amount") != pl.col("amount_right"))
        ),
        "period_mismatch": joined.filter((pl.col("n") == 1) & (pl.col("period") != pl.col("period_right"))),
    }
    planted = breaks.filter(pl.col("recon") == "time")
    for break_type, frame in actual.items():
        expected = set(planted.filter(pl.col("break_type") == break_type)["left_key"].cast(pl.Int64))
        assert expected, break_type
        assert set(frame["entry_id"]) == expected, break_type
    orphans = posts.join(approved, left_on="psa_entry_ref", right_on="entry_id", how="anti")
    expected_orphans = set(planted.filter(pl.col("break_type") == "missing_in_psa")["right_key"].cast(pl.Int64))
    assert set(orphans["posting_id"]) == expected_orphans and expected_orphans


def test_invoice_breaks_are_in_the_databases(seeded) -> None:
    settings, _, breaks = seeded
    psa = pg_frame(
        settings,
        "select invoice_number, amount::float8 as amount, currency::text as currency, "
        "status, period::text as period from invoices",
    )
    erp = my_frame(
        settings,
        "select invoice_no, psa_invoice_ref, cast(net_amount as double) as net, currency, "
        "status, fiscal_period from ar_invoices",
    )
    planted = breaks.filter(pl.col("recon") == "invoices")
    joined = psa.join(erp, left_on="invoice_number", right_on="psa_invoice_ref", how="left")
    status_map = {"sent": "open", "paid": "paid", "void": "credited"}
    checks = {
        "missing_in_erp": joined.filter(pl.col("invoice_no").is_null()),
        "currency_mismatch": joined.filter(pl.col("currency") != pl.col("currency_right")),
        "amount_mismatch": joined.filter(
            (pl.col("currency") == pl.col("currency_right")) & (pl.col("amount") != pl.col("net"))
        ),
        "status_mismatch": joined.filter(pl.col("status").replace_strict(status_map) != pl.col("status_right")),
        "period_mismatch": joined.filter(pl.col("period") != pl.col("fiscal_period")),
    }
    for break_type, frame in checks.items():
        expected = set(planted.filter(pl.col("break_type") == break_type)["left_key"])
        assert expected and set(frame["invoice_number"]) == expected, break_type
    manual = erp.filter(pl.col("psa_invoice_ref").is_null())
    assert set(manual["invoice_no"]) == set(planted.filter(pl.col("break_type") == "missing_in_psa")["right_key"])


def test_summary_matches_row_counts(seeded) -> None:
    settings, _, _ = seeded
    summary = json.loads((settings.data_dir / "manifest" / "summary.json").read_text())
    counts = sandbox.table_counts(sandbox.require_state(settings))
    assert counts["psa"] == {k: v for k, v in summary["psa"].items()}
    assert counts["erp"] == {k: v for k, v in summary["erp"].items()}


def test_generator_is_deterministic() -> None:
    import numpy as np

    spec = generator.Scale.named("tiny", seed=3)
    first = generator.build_customers(spec, np.random.default_rng(3))[1]
    second = generator.build_customers(spec, np.random.default_rng(3))[1]
    assert first.equals(second)

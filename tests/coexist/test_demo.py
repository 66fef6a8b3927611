"""The README's first command: the demo runs end to end on a fresh data dir, twice."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from coexist.config import Settings
from coexist.sandbox import servers as sandbox
from tests.harness import cli, make_data_dir


@pytest.mark.slow
def test_demo_end_to_end_and_again() -> None:
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    try:
        for _ in range(2):
            out = cli(data_dir, "demo", "--scale", "tiny", timeout=600).stdout
            assert "live duplicate posting" in out and "caught" in out
            assert "demo finished" in out
            report = (data_dir / "report.html").read_text()
            assert report.count("<svg") >= 4 and "Open breaks by type and age" in report
        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        try:
            recons = {r[0] for r in con.execute("SELECT DISTINCT recon FROM recon.runs").fetchall()}
            golden = con.execute("SELECT count(*) FROM mdm.golden_customer").fetchall()[0][0]
            renamed = con.execute(
                "SELECT count(*) FROM replica_psa.clients WHERE client_name LIKE '%(renamed)'"
            ).fetchall()[0][0]
        finally:
            con.close()
        assert recons == {"time", "invoices", "margin"} and golden > 0 and renamed == 1
        # The analyst's side: documented views, read-only queries, Parquet export.
        import json

        open_breaks = json.loads(cli(data_dir, "query", "SELECT * FROM analytics.open_breaks", "--json").stdout)
        assert {(r["recon"], r["break_type"]) for r in open_breaks} >= {("time", "duplicate_posting")}
        unposted = json.loads(
            cli(data_dir, "query", "SELECT count(*) AS n FROM analytics.unposted_approved_time", "--json").stdout
        )
        planted = json.loads(
            cli(
                data_dir,
                "query",
                "SELECT count(*) AS n FROM recon.break_state WHERE recon = 'time' "
                "AND break_type = 'missing_in_erp' AND status = 'open'",
                "--json",
            ).stdout
        )
        assert unposted[0]["n"] == planted[0]["n"] > 0
        bad = cli(data_dir, "query", "SELECT * FROM nowhere", check=False)
        assert bad.returncode == 2 and "query failed" in bad.stderr
        out = data_dir / "export"
        cli(data_dir, "export", "--parquet", str(out))
        assert (out / "analytics.open_breaks.parquet").is_file() and (out / "mdm.xref.parquet").is_file()
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)

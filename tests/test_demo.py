"""The README's first command: the demo runs end to end on a fresh data dir, twice."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from coexist import sandbox
from coexist.config import Settings
from tests.conftest import cli, make_data_dir


@pytest.mark.slow
def test_demo_end_to_end_and_again() -> None:
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    try:
        for _ in range(2):
            out = cli(data_dir, "demo", "--scale", "tiny", timeout=600).stdout
            assert "live duplicate posting" in out and "caught" in out
            assert "demo finished" in out
        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        try:
            recons = {r[0] for r in con.execute("SELECT DISTINCT recon FROM recon.runs").fetchall()}
            golden = con.execute("SELECT count(*) FROM mdm.golden_customer").fetchall()[0][0]
            renamed = con.execute("SELECT count(*) FROM replica_psa.clients WHERE client_name LIKE '%(renamed)'"
                                  ).fetchall()[0][0]
        finally:
            con.close()
        assert recons == {"time", "invoices", "margin"} and golden > 0 and renamed == 1
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)

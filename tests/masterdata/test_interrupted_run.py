"""A master-data run that dies half-way leaves the next incremental run able to finish its work."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from coexist import tasks
from coexist.config import load_settings
from masterdata.resolve import Resolver

ENTITY = """
builtin_entities = false
[entities.crm]
id_prefix = "CRM"
sources = [{{ system = "crm", path = "{csv}", id_column = "account_id", columns = {{ name = "account_name", vat = "vat" }} }}]
standardise = {{ name_std = "cx_company(name)", vat_std = "cx_taxid(vat)" }}
deterministic = [{{ name = "same_vat", condition = "l.vat_std = r.vat_std", block = ["vat_std"] }}]
thresholds = {{ match = 5.0, review = 2.0 }}
survivorship = [{{ field = "name", rule = "most_complete" }}]
"""


def test_a_run_killed_after_reading_its_input_is_redone_by_the_next_incremental_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "crm.csv"
    csv.write_text("account_id,account_name,vat\n1,Acme GmbH,DE123\n2,Other Ltd,GB999\n")
    config = tmp_path / "coexist.toml"
    config.write_text(ENTITY.format(csv=csv))
    settings = load_settings(config)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        tasks.refresh_masterdata(con, settings, incremental=False)
        csv.write_text(csv.read_text() + "3,ACME G.m.b.H.,de 123\n4,New Co,FR777\n")

        def die(self: Resolver, name: str) -> None:
            raise KeyboardInterrupt("killed in the middle of clustering")

        with monkeypatch.context() as patch:
            patch.setattr(Resolver, "_components", die)
            with pytest.raises(KeyboardInterrupt):
                tasks.refresh_masterdata(con, settings, incremental=True)
        unresolved = con.execute("SELECT count(*) FROM mdm.xref WHERE source_id IN ('3', '4')").fetchall()[0][0]
        assert unresolved == 0  # nothing of the dead run was committed

        result = tasks.refresh_masterdata(con, settings, incremental=True)[0]
        assert result.mode == "incremental" and result.changed_records == 2
        ids = dict(con.execute("SELECT source_id, golden_id FROM mdm.xref WHERE entity = 'crm'").fetchall())
        assert set(ids) == {"1", "2", "3", "4"} and ids["3"] == ids["1"] and len(set(ids.values())) == 3
    finally:
        con.close()

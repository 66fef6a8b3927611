"""`masterdata check` (and the start of every run) names the configuration key of each mistake."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.harness import cli

GOOD = """
builtin_entities = false
[entities.crm]
id_prefix = "CRM"
sources = [{{ system = "crm", path = "{csv}", id_column = "account_id", columns = {{ name = "account_name", vat = "vat", employees = "employees" }} }}]
standardise = {{ name_std = "{name_std}", vat_std = "cx_taxid(vat)" }}
deterministic = [{{ name = "same_vat", condition = "{condition}", block = ["vat_std"] }}]
comparisons = [{{ name = "name", levels = [{{ when = "{when}", weight = 4.0, label = "same" }}] }}]
thresholds = {{ match = 5.0, review = 2.0 }}
survivorship = [{{ field = "name", rule = "most_complete" }}, {{ field = "{field}", rule = "{rule}" }}]
"""
OK = {
    "name_std": "cx_company(name)",
    "condition": "l.vat_std = r.vat_std",
    "when": "l.name_std = r.name_std",
    "field": "vat",
    "rule": "most_complete",
}


def configure(tmp_path: Path, **changes: str) -> Path:
    csv = tmp_path / "crm.csv"
    csv.write_text("account_id,account_name,vat,employees\n1,Acme GmbH,DE123,10\n2,ACME G.m.b.H.,de 123,12\n")
    (tmp_path / "coexist.toml").write_text(GOOD.format(csv=csv, **(OK | changes)))
    return tmp_path


def test_a_correct_entity_checks_clean_and_runs(tmp_path: Path) -> None:
    data_dir = configure(tmp_path)
    assert cli(data_dir, "masterdata", "check").stdout.strip() == "ok: crm"
    cli(data_dir, "masterdata", "run")


def test_each_kind_of_mistake_is_named_by_its_key_before_anything_is_written(tmp_path: Path) -> None:
    data_dir = configure(
        tmp_path,
        name_std="cx_company(employees)",  # a text macro on an integer column
        condition="l.vat_std = r.vat_code",  # no such column
        when="l.name_std = = r.name_std",  # not SQL
        field="street",  # no such field
        rule="most_recent",  # needs updated_at, which this source has not
    )
    proc = cli(data_dir, "masterdata", "check", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "entities.crm.standardise.name_std:" in proc.stderr
    # With the standardisation broken nothing downstream compiles; fix it and the rest is reported.
    configure(
        tmp_path,
        condition="l.vat_std = r.vat_code",
        when="l.name_std = = r.name_std",
        field="street",
        rule="most_recent",
    )
    proc = cli(data_dir, "masterdata", "run", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for key in (
        "entities.crm.deterministic[0].condition:",
        "entities.crm.comparisons[0].levels[0].when:",
        "entities.crm.survivorship[1].field:",
        "entities.crm.survivorship[1].rule:",
    ):
        assert key in proc.stderr, (key, proc.stderr)
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'mdm'"
            ).fetchall()
        }
        rows = con.execute("SELECT (SELECT count(*) FROM mdm.xref) + (SELECT count(*) FROM mdm.runs)").fetchall()[0][0]
    finally:
        con.close()
    assert "input_crm" not in tables and "golden_crm" not in tables and rows == 0, "a broken entity wrote master data"


def test_a_missing_source_table_is_named(tmp_path: Path) -> None:
    (tmp_path / "coexist.toml").write_text(
        'builtin_entities = false\n[entities.crm]\nid_prefix = "C"\nsources = [{ system = "crm", table = "nowhere" }]\n'
        "thresholds = { match = 5.0, review = 2.0 }\n"
    )
    proc = cli(tmp_path, "masterdata", "check", check=False)
    assert proc.returncode == 2 and "entities.crm.sources[0]:" in proc.stderr and "nowhere" in proc.stderr


@pytest.mark.parametrize(
    "rules, golden",
    [
        (
            'standardise = { name_std = "cx_company(name)" }\nblocking = [["name_std"]]\n'
            'comparisons = [{ name = "name", levels = [{ when = "l.name_std = r.name_std", weight = 6.0, '
            'label = "same" }] }]\n',
            2,
        ),
        ("", 3),
    ],
    ids=["blocking without deterministic rules", "no rules at all"],
)
def test_entities_without_deterministic_rules_run(tmp_path: Path, rules: str, golden: int) -> None:
    csv = tmp_path / "crm.csv"
    csv.write_text("account_id,account_name\n1,Acme GmbH\n2,ACME G.m.b.H.\n3,Other Ltd\n")
    (tmp_path / "coexist.toml").write_text(
        f'builtin_entities = false\n[entities.crm]\nid_prefix = "C"\nsources = [{{ system = "crm", path = "{csv}", '
        f'id_column = "account_id", columns = {{ name = "account_name" }} }}]\n{rules}'
        "thresholds = { match = 5.0, review = 2.0 }\n"
    )
    cli(tmp_path, "masterdata", "run")
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        ids = dict(con.execute("SELECT source_id, golden_id FROM mdm.xref").fetchall())
    finally:
        con.close()
    assert len(ids) == 3 and len(set(ids.values())) == golden

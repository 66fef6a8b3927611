"""Standardisation macros: countries to ISO codes, legal forms and abbreviations of the main
jurisdictions, and word lists extended from configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from masterdata import standardise
from tests.harness import cli


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    standardise.configure(standardise.Vocabulary())
    c = duckdb.connect()
    standardise.install(c)
    yield c
    c.close()


def one(con: duckdb.DuckDBPyConnection, sql: str, *args: object) -> object:
    return con.execute(sql, list(args)).fetchall()[0][0]


@pytest.mark.parametrize(
    ("written", "iso"),
    [
        ("US", "US"),
        ("USA", "US"),
        ("u.s.a.", "US"),
        ("United States", "US"),
        ("United States of America", "US"),
        ("UK", "GB"),
        ("Great Britain", "GB"),
        ("United Kingdom", "GB"),
        ("GBR", "GB"),
        ("Deutschland", "DE"),
        ("Germany", "DE"),
        ("The Netherlands", "NL"),
        ("Holland", "NL"),
        ("Korea, Republic of", "KR"),
        ("South Korea", "KR"),
        ("Côte d'Ivoire", "CI"),
        ("  france ", "FR"),
        ("Schweiz", "CH"),
        ("España", "ES"),
    ],
)
def test_countries_become_iso_codes(con: duckdb.DuckDBPyConnection, written: str, iso: str) -> None:
    assert one(con, "SELECT cx_country(?)", written) == iso


def test_unknown_and_empty_countries(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "SELECT cx_country('Narnia')") == "NARNIA"  # kept, never dropped
    assert one(con, "SELECT cx_country(NULL)") is None and one(con, "SELECT cx_country('  ')") is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Acme Pty Ltd", "ACME"),
        ("Keller Mgmt Eng. Inds", "Keller Management Engineering Industries"),
        ("Zeta Pharma Dev S.R.L.", "zeta pharmaceuticals development"),
        ("Rossi SpA", "Rossi S.p.A."),
        ("Garcia SL", "Garcia"),
        ("Byrne DAC", "Byrne"),
        ("Nokia Oyj", "Nokia"),
    ],
)
def test_legal_forms_and_abbreviations_of_the_main_jurisdictions(
    con: duckdb.DuckDBPyConnection, a: str, b: str
) -> None:
    assert one(con, "SELECT cx_company(?) = cx_company(?)", a, b), (
        one(con, "SELECT cx_company(?)", a),
        one(con, "SELECT cx_company(?)", b),
    )


@pytest.mark.parametrize(
    ("one_way", "other_way"),
    [
        ("Church Lane 163", "CHURCH LN. 163"),
        ("r. du Moulin 16", "Rue du Moulin 16"),
        ("Hauptstraße 156", "HAUPTSTR. 156"),
        ("Schulstrasse 9", "SCHULSTR 9"),
        ("12 North Avenue", "12 N. Ave"),
        ("Avda. de la Paz 3", "Avenida de la Paz 3"),
    ],
)
def test_street_words_take_one_form(con: duckdb.DuckDBPyConnection, one_way: str, other_way: str) -> None:
    a, b = one(con, "SELECT cx_street(?)", one_way), one(con, "SELECT cx_street(?)", other_way)
    assert a == b and a is not None, (a, b)


def test_street_words_are_whole_words_and_extend_from_configuration() -> None:
    standardise.configure(standardise.Vocabulary(street_words={"Vía": "v"}))
    try:
        c = duckdb.connect()
        standardise.install(c)
        assert one(c, "SELECT cx_street('Via Roma 1') = cx_street('V. Roma 1')") is True
        # A word that merely contains a street word is left alone; an empty street is NULL.
        assert one(c, "SELECT cx_street('Streetford Road')") == "streetford rd"
        assert one(c, "SELECT cx_street('  ')") is None
    finally:
        standardise.configure(standardise.Vocabulary())


def test_word_lists_extend_from_configuration(tmp_path: Path) -> None:
    """`[standardise]` adds legal forms, abbreviations and country names, used by every run."""
    (tmp_path / "crm.csv").write_text(
        "id,name,country\n1,Mehta Pvt Svc,Bharat Ganarajya\n2,Mehta Services,IN\n3,Other Co,Atlantis\n"
    )
    (tmp_path / "coexist.toml").write_text(f"""
builtin_entities = false
[standardise]
legal_forms = {{ pvt = "pvt" }}
abbreviations = {{ svc = "services" }}
countries = {{ "Bharat Ganarajya" = "IN" }}
[entities.crm]
id_prefix = "C"
sources = [{{ system = "crm", path = "{tmp_path / "crm.csv"}", id_column = "id" }}]
standardise = {{ name_std = "cx_company(name)", country_std = "cx_country(country)" }}
deterministic = [{{ name = "same", condition = "l.name_std = r.name_std AND l.country_std = r.country_std", block = ["name_std"] }}]
thresholds = {{ match = 5.0, review = 2.0 }}
""")
    cli(tmp_path, "masterdata", "run")
    rows = json.loads(
        cli(
            tmp_path, "query", "SELECT source_id, golden_id FROM mdm.xref WHERE entity = 'crm' ORDER BY 1", "--json"
        ).stdout
    )
    golden = {r["source_id"]: r["golden_id"] for r in rows}
    assert golden["1"] == golden["2"] != golden["3"], golden
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "coexist.toml").write_text('[standardise]\ncountries = { Atlantis = "atl" }\n')
    proc = cli(bad, "masterdata", "check", check=False)
    assert proc.returncode == 2 and "standardise.countries" in proc.stderr and "'atl'" in proc.stderr, proc.stderr

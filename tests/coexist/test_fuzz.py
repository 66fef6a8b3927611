"""Hostile text in source rows (markup, quotes, `$`, NUL, emoji, SQL, HTML, long values) through the whole
pipeline: capture, master data, every reconciliation, query, explain, report, export. No crash, values verbatim."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coexist.config import Settings
from coexist.sandbox import generator
from coexist.sandbox import servers as sandbox
from tests.harness import cli, make_data_dir

pytestmark = pytest.mark.slow  # a sandbox and the CLI, several times

NASTY = st.one_of(
    st.sampled_from(
        [
            "[/]",
            "[red]not red[/red]",
            "[/bold] x",
            "$x$",
            "$\\alpha$",
            "it's",
            '"quoted"',
            "'; DROP TABLE clients; --",
            "<script>alert(1)</script>",
            "a\x00b",
            "😀" * 20,
            "x" * 190,
            "\\N",
            "NULL",
            "",
            " ",
            "%s %(x)s {}",
            "\t\r\n",
        ]
    ),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
)


@pytest.fixture(scope="module")
def firm() -> Iterator[Settings]:
    data_dir = make_data_dir()
    settings_ = Settings(data_dir=data_dir)
    try:
        state = sandbox.up(settings_)
        generator.seed(state, generator.Scale.named("tiny", seed=3), data_dir / "manifest")
        cli(data_dir, "cdc", "run", "--until-idle")
        cli(data_dir, "masterdata", "run")
        yield settings_
    finally:
        sandbox.down(settings_)
        shutil.rmtree(data_dir, ignore_errors=True)


@settings(max_examples=3, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(NASTY, min_size=5, max_size=5))
def test_hostile_values_pass_through_every_command(firm: Settings, values: list[str]) -> None:
    state = sandbox.require_state(firm)
    psa_names = [v.replace("\x00", "") for v in values[:3]]  # PostgreSQL text cannot hold NUL
    erp_names = values[3:]
    with sandbox.pg_app_connect(state) as pg:
        ids = [r[0] for r in pg.execute("SELECT client_id FROM clients ORDER BY client_id LIMIT 3").fetchall()]
        for client_id, name in zip(ids, psa_names, strict=True):
            pg.execute(
                "UPDATE clients SET client_name = %s, updated_at = now() WHERE client_id = %s", (name, client_id)
            )
        project = pg.execute("SELECT project_id FROM projects ORDER BY project_id LIMIT 1").fetchone()[0]
        pg.execute(
            "UPDATE projects SET project_code = %s WHERE project_id = %s", (f"$P${psa_names[0][:40]}[/]", project)
        )
    with sandbox.my_app_connect(state) as my, my.cursor() as cur:
        cur.execute("SELECT cust_no FROM customers ORDER BY cust_no LIMIT 2")
        customers = [r[0] for r in cur.fetchall()]
        for cust_no, name in zip(customers, erp_names, strict=True):
            cur.execute("UPDATE customers SET name = %s WHERE cust_no = %s", (name, cust_no))

    runs = [
        cli(firm.data_dir, "cdc", "run", "--until-idle", check=False),
        cli(firm.data_dir, "masterdata", "run", "--incremental", check=False),
        cli(firm.data_dir, "reconcile", "run", check=False),
        cli(firm.data_dir, "masterdata", "explain", f"psa:{ids[0]}", "--entity", "customer", check=False),
        cli(firm.data_dir, "masterdata", "review", check=False),
        cli(firm.data_dir, "reconcile", "breaks", "--limit", "0", check=False),
        cli(firm.data_dir, "report", "--out", str(firm.data_dir / "fuzz.html"), check=False),
        cli(firm.data_dir, "export", "--parquet", str(firm.data_dir / "fuzz-export"), check=False),
    ]
    for proc in runs:
        assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, (proc.args, proc.stderr[-2000:])

    psa = json.loads(
        cli(
            firm.data_dir,
            "query",
            "SELECT client_id, client_name FROM replica_psa.clients "
            f"WHERE client_id IN ({', '.join(map(str, ids))}) ORDER BY client_id",
            "--json",
        ).stdout
    )
    assert [r["client_name"] for r in psa] == psa_names
    erp = json.loads(
        cli(
            firm.data_dir,
            "query",
            "SELECT cust_no, name FROM replica_erp.customers WHERE cust_no IN "
            f"({', '.join(repr(c) for c in customers)}) ORDER BY cust_no",
            "--json",
        ).stdout
    )
    assert [r["name"] for r in erp] == erp_names
    shown = cli(firm.data_dir, "query", "SELECT client_name FROM replica_psa.clients ORDER BY client_id LIMIT 3").stdout
    for name in psa_names:
        assert all(part in shown for part in name.split() if part.isprintable()), name

"""The shared warehouse helpers: quoting round-trips any text, transactions roll back, errors say what happened."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import warehouse
from core.errors import NotReady, WarehouseBusy, WarehouseError

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(name=TEXT, value=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_quoted_names_and_literals_round_trip(name: str, value: str) -> None:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t ({warehouse.quote(name)} VARCHAR)")
    con.execute(f"INSERT INTO t VALUES ({warehouse.literal(value)})")
    assert con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 't'").fetchall() == [
        (name,)
    ]
    assert con.execute(f"SELECT {warehouse.quote(name)} FROM t").fetchall() == [(value,)]


def test_transaction_commits_or_rolls_back_whole() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    with warehouse.transaction(con):
        con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(duckdb.ConstraintException), warehouse.transaction(con):
        con.execute("INSERT INTO t VALUES (2)")
        con.execute("INSERT INTO t VALUES (1)")  # aborts the transaction; the rollback must not mask this error
    assert con.execute("SELECT k FROM t").fetchall() == [(1,)]


def test_run_ids_sort_by_time_and_are_unique() -> None:
    import datetime as dt

    early = warehouse.new_run_id(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    late = warehouse.new_run_id(dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    assert early < late and early[:15] == "20260101T000000"
    assert len({warehouse.new_run_id() for _ in range(200)}) == 200


def test_open_errors_are_told_apart(tmp_path: Path) -> None:
    with pytest.raises(NotReady, match="no warehouse"):
        warehouse.connect(tmp_path / "absent.duckdb", read_only=True)
    damaged = tmp_path / "damaged.duckdb"
    damaged.write_bytes(b"this is not a database" * 500)
    with pytest.raises(WarehouseError, match="damaged or not a DuckDB file"):
        warehouse.connect(damaged)
    held = warehouse.connect(tmp_path / "held.duckdb")
    try:
        import subprocess
        import sys

        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from core import warehouse; import sys; warehouse.connect({str(tmp_path / 'held.duckdb')!r})",
            ],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert (
            proc.returncode != 0
            and WarehouseBusy.__name__ in proc.stderr
            and "in use by another process" in proc.stderr
        )
    finally:
        held.close()


def test_confine_allows_the_named_directories_only(tmp_path: Path) -> None:
    (tmp_path / "named").mkdir()
    (tmp_path / "other").mkdir()
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 1 AS a) TO '{tmp_path / 'named' / 'a.csv'}'")
    con.execute(f"COPY (SELECT 2 AS a) TO '{tmp_path / 'other' / 'b.csv'}'")
    warehouse.confine(con, [tmp_path / "named"])
    warehouse.confine(con, [tmp_path / "named"])  # a second call is a no-op, not an error
    assert con.execute(f"SELECT a FROM read_csv('{tmp_path / 'named' / '*.csv'}')").fetchall() == [(1,)]
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT a FROM read_csv('{tmp_path / 'other' / 'b.csv'}')")
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'other' / 'c.csv'}'")


@pytest.mark.parametrize(
    "path, root",
    [
        ("/data/x.parquet", "/data"),
        ("/data/2026/*.parquet", "/data/2026"),
        ("/data/*/part-*.csv", "/data"),
        ("rel/x.csv", "rel"),
        ("*.csv", "."),
    ],
)
def test_glob_root(path: str, root: str) -> None:
    assert warehouse.glob_root(path) == Path(root)


def test_writing_connections_open_with_the_configured_limits(tmp_path: Path) -> None:
    from core.warehouse import Limits, configure

    configure(Limits("300MB", tmp_path / "spill", 1))
    try:
        con = warehouse.connect(tmp_path / "w.duckdb")
        limit, threads, spill = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('temp_directory')"
        ).fetchall()[0]
        con.close()
    finally:
        configure(Limits())
    assert limit.startswith("286.") and threads == 1 and spill == str(tmp_path / "spill")
    assert (tmp_path / "spill").is_dir()

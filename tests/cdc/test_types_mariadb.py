"""MariaDB type matrix: every type with its edge values, through the consistent snapshot, the binlog
(insert, update of another column, delete) and a re-snapshot, compared value by value in Python
(independently of `cdc verify`), then by `cdc verify`, which must also catch one altered replica
value in every column. Zero dates cannot be held by any DuckDB date: they are dead letters."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Iterator
from typing import Any

import duckdb
import pymysql
import pytest

from coexist.config import Settings
from coexist.sandbox import servers as sandbox
from tests.harness import assert_verify_equal, cli, dead_letters, private_sandbox, verify_misses

COLUMNS = {
    "ti": "tinyint",
    "tiu": "tinyint unsigned",
    "si": "smallint",
    "siu": "smallint unsigned",
    "mi": "mediumint",
    "miu": "mediumint unsigned",
    "i": "int",
    "iu": "int unsigned",
    "bi": "bigint",
    "biu": "bigint unsigned",
    "d102": "decimal(10,2)",
    "d3810": "decimal(38,10)",
    "d6530": "decimal(65,30)",
    "f": "float",
    "db": "double",
    "b1": "bit(1)",
    "b12": "bit(12)",
    "b64": "bit(64)",
    "bo": "boolean",
    "ch": "char(5)",
    "vc": "varchar(20)",
    "bn": "binary(4)",
    "vb": "varbinary(10)",
    "tx": "text",
    "lt": "longtext",
    "bl": "blob",
    "lb": "longblob",
    "en": "enum('a','b','c')",
    "st": "set('x','y','z')",
    "dt_": "date",
    "dtm": "datetime",
    "dtm6": "datetime(6)",
    "ts6": "timestamp(6) NULL",
    "tm": "time",
    "tm6": "time(6)",
    "yr": "year",
    "js": "json",
    "g": "point",
}
ALL_BYTES = bytes(range(256))
EDGE_ROWS: list[dict[str, Any]] = [
    {
        "ti": -128,
        "tiu": 0,
        "si": -32768,
        "siu": 0,
        "mi": -8388608,
        "miu": 0,
        "i": -2147483648,
        "iu": 0,
        "bi": -9223372036854775808,
        "biu": 0,
        "d102": "-99999999.99",
        "d3810": "-9999999999999999999999999999.9999999999",
        "d6530": "-99999999999999999999999999999999999.999999999999999999999999999999",
        "f": -3.40282e38,
        "db": -1.7976931348623157e308,
        "b1": 0,
        "b12": 0,
        "b64": 0,
        "bo": False,
        "ch": "",
        "vc": "",
        "bn": b"\x01\x00\x00\x00",
        "vb": b"",
        "tx": "",
        "lt": "héllo ✓ \U0001f600",
        "bl": ALL_BYTES,
        "lb": b"",
        "en": "a",
        "st": "",
        "dt_": "1000-01-01",
        "dtm": "1000-01-01 00:00:00",
        "dtm6": "1000-01-01 00:00:00.000000",
        "ts6": "1970-01-01 00:00:01.000000",
        "tm": "-838:59:59",
        "tm6": "-00:00:00.000001",
        "yr": 1901,
        "js": "[]",
        "g": "POINT(0 0)",
    },
    {
        "ti": 127,
        "tiu": 255,
        "si": 32767,
        "siu": 65535,
        "mi": 8388607,
        "miu": 16777215,
        "i": 2147483647,
        "iu": 4294967295,
        "bi": 9223372036854775807,
        "biu": 18446744073709551615,
        "d102": "99999999.99",
        "d3810": "9999999999999999999999999999.9999999999",
        "d6530": "99999999999999999999999999999999999.999999999999999999999999999999",
        "f": 3.40282e38,
        "db": 1.7976931348623157e308,
        "b1": 1,
        "b12": 4095,
        "b64": 18446744073709551615,
        "bo": True,
        "ch": "abcde",
        "vc": "x" * 20,
        "bn": b"\xff\xff\xff\xff",
        "vb": ALL_BYTES[:10],
        "tx": "tab\there",
        "lt": "z" * 100_000,
        "bl": ALL_BYTES * 4,
        "lb": ALL_BYTES * 4096,
        "en": "c",
        "st": "z,x",
        "dt_": "9999-12-31",
        "dtm": "9999-12-31 23:59:59",
        "dtm6": "9999-12-31 23:59:59.999999",
        "ts6": "2038-01-19 03:14:07.999999",
        "tm": "838:59:59",
        "tm6": "100:00:00.5",
        "yr": 2155,
        "js": '{"a": [1, 2.5, "é"], "b": null}',
        "g": "POINT(1.5 -2.25)",
    },
    {c: None for c in COLUMNS},
    {
        "ti": 0,
        "tiu": 7,
        "si": 0,
        "siu": 1,
        "mi": 0,
        "miu": 1,
        "i": 0,
        "iu": 1,
        "bi": 0,
        "biu": 1,
        "d102": "0.00",
        "d3810": "0.0000000001",
        "d6530": "0.000000000000000000000000000001",
        "f": 0.1,
        "db": 0.1,
        "b1": 1,
        "b12": 1,
        "b64": 1,
        "bo": True,
        "ch": "a b",
        "vc": "trailing  ",
        "bn": b"\x00\x00\x00\x00",
        "vb": b"\x00",
        "tx": "null",
        "lt": "",
        "bl": b"\x00",
        "lb": b"\xff",
        "en": "b",
        "st": "x,y,z",
        "dt_": "2024-02-29",
        "dtm": "2024-02-29 12:34:56",
        "dtm6": "2024-02-29 12:34:56.789012",
        "ts6": "2024-02-29 12:34:56.789012",
        "tm": "00:00:00",
        "tm6": "23:59:59.999999",
        "yr": 0,
        "js": '"just a string"',
        "g": "POINT(1e300 -1e-300)",
    },
]
ZERO_DATE = {"dt_": "0000-00-00", "i": 1}


def connect(settings: Settings) -> pymysql.Connection:
    conn = sandbox.my_app_connect(sandbox.require_state(settings))
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
    return conn


def insert(conn: pymysql.Connection, table: str, id_: int, row: dict[str, Any]) -> None:
    cols = ", ".join(f"`{c}`" for c in row)
    marks = ", ".join("ST_GeomFromText(%s)" if c == "g" and v is not None else "%s" for c, v in row.items())
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} (id, {cols}) VALUES (%s, {marks})", [id_, *row.values()])


@pytest.fixture(scope="module")
def env() -> Iterator[Settings]:
    with private_sandbox() as settings:
        conn = connect(settings)
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = ''")  # zero dates are what legacy ERPs hold
            cols = ", ".join(f"`{c}` {t}" for c, t in COLUMNS.items())
            cur.execute(f"CREATE TABLE types_matrix (id int PRIMARY KEY, {cols})")
            cur.execute(f"CREATE TABLE types_keyless ({cols.replace('PRIMARY KEY', '')}, id int)")
        conn.close()
        yield settings


# ---------------------------------------------------------------- comparison, independent of verify

SOURCE_SELECT = {"f": "CAST({c} AS DOUBLE)", "g": "ST_AsWKB({c})", "st": "CAST({c} AS CHAR)", "en": "CAST({c} AS CHAR)"}


def _source(settings: Settings, table: str) -> list[tuple[Any, ...]]:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            select = ", ".join(SOURCE_SELECT.get(c, "{c}").replace("{c}", f"`{c}`") for c in COLUMNS)
            cur.execute(f"SELECT id, {select} FROM {table} ORDER BY id")
            return list(cur.fetchall())
    finally:
        conn.close()


def _replica(settings: Settings, table: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        select = ", ".join(f'CAST("{c}" AS VARCHAR)' if COLUMNS[c].startswith("bit") else f'"{c}"' for c in COLUMNS)
        return con.execute(f"SELECT id, {select} FROM replica_erp.{table} ORDER BY id").fetchall()
    finally:
        con.close()


def same(kind: str, mine: Any, theirs: Any) -> bool:
    if mine is None or theirs is None:
        return mine is None and theirs is None
    if kind.startswith("bit"):
        return int.from_bytes(mine, "big") == int(theirs, 2)
    if kind.startswith("decimal"):
        return format(decimal.Decimal(str(mine)), "f") == format(decimal.Decimal(str(theirs)), "f")
    if kind in ("float", "double"):
        return math.isclose(mine, theirs, rel_tol=0) if kind == "double" else float(mine) == float(theirs)
    if kind == "boolean" or kind.startswith("tinyint(1)"):
        return int(mine) == int(theirs)
    if kind == "year":
        return int(mine) == int(theirs)
    return mine == theirs


def assert_replica_holds_source(settings: Settings, table: str) -> None:
    source, replica = _source(settings, table), _replica(settings, table)
    assert [r[0] for r in replica] == [r[0] for r in source]
    wrong = []
    for mine, theirs in zip(source, replica, strict=True):
        for (col, kind), a, b in zip(COLUMNS.items(), mine[1:], theirs[1:], strict=True):
            if not same(kind, a, b):
                wrong.append(f"row {mine[0]} {col} ({kind}): source {str(a)[:60]!r}, replica {str(b)[:60]!r}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- the journey


@pytest.mark.slow
def test_every_type_through_snapshot_binlog_and_resnapshot(env: Settings) -> None:
    conn = connect(env)
    for i, row in enumerate(EDGE_ROWS, start=1):
        insert(conn, "types_matrix", i, row)
        insert(conn, "types_keyless", i, row)
    insert(conn, "types_keyless", 1, EDGE_ROWS[0])  # a duplicate row stays a duplicate
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "erp")
    assert_replica_holds_source(env, "types_matrix")
    assert_replica_holds_source(env, "types_keyless")
    assert_verify_equal(env, "erp", "types_matrix")
    assert_verify_equal(env, "erp", "types_keyless")

    for i, row in enumerate(EDGE_ROWS, start=11):
        insert(conn, "types_matrix", i, row)
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("INSERT INTO types_matrix (id, dt_) VALUES (30, '0000-00-00')")
        cur.execute("UPDATE types_matrix SET i = 42 WHERE id IN (12, 2)")
        cur.execute("DELETE FROM types_matrix WHERE id = 3")
        cur.execute("DELETE FROM types_keyless WHERE id = 1 LIMIT 1")
        cur.execute("UPDATE types_keyless SET vc = 'changed' WHERE id = 2")
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "erp")
    dead = [reason for table, reason in dead_letters(env) if table == "types_matrix"]
    assert len(dead) == 1 and "'dt_'" in dead[0] and "DATE" in dead[0], dead
    with conn.cursor() as cur:
        cur.execute("DELETE FROM types_matrix WHERE id = 30")
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "erp")
    for table in ("types_matrix", "types_keyless"):
        assert_replica_holds_source(env, table)
        assert_verify_equal(env, "erp", table)

    resnap = cli(env.data_dir, "cdc", "resnapshot", "types_matrix", "--source", "erp", "--json", check=False)
    assert resnap.returncode == 0 and json.loads(resnap.stdout)[0]["swapped"] is True, dead_letters(env)[-3:]
    assert_replica_holds_source(env, "types_matrix")
    assert_verify_equal(env, "erp", "types_matrix")
    conn.close()


@pytest.mark.slow
def test_verify_catches_one_altered_value_in_every_column(env: Settings) -> None:
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "erp")
    missed = verify_misses(env, "erp", "types_matrix", list(COLUMNS))
    assert not missed, f"verify missed an altered value (column, rows found, columns named): {missed}"


def test_dates_and_times_decode_as_written() -> None:
    """The wire forms of the binlog library's values, exactly (no float, no 28-digit context)."""
    from cdc.types.mysql import my_type, wire_row

    types = {"t": my_type("time", "time(6)"), "d": my_type("decimal", "decimal(65,30)", 65, 30)}
    row = wire_row(
        types, {"t": dt.timedelta(days=-1, seconds=86399, microseconds=999999), "d": decimal.Decimal("1E-30")}
    )
    assert row == {"t": -1, "d": "0.000000000000000000000000000001"}

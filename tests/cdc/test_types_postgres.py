"""PostgreSQL type matrix: every type with its edge values, through snapshot, stream, update,
delete and re-snapshot, compared value by value in Python (independently of `cdc verify`), then
by `cdc verify`, which must also catch one altered replica value in every column."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from coexist.config import Settings
from coexist.sandbox import servers as sandbox
from tests.harness import assert_verify_equal, cli, dead_letters, pg_superuser, private_sandbox, verify_misses

COLUMNS = {
    "i2": "smallint",
    "i4": "integer",
    "i8": "bigint",
    "r4": "real",
    "f8": "double precision",
    "n": "numeric",
    "n3810": "numeric(38,10)",
    "n5020": "numeric(50,20)",
    "money_": "money",
    "b": "boolean",
    "ch": "char(5)",
    "vc": "varchar(10)",
    "t": "text",
    "ba": "bytea",
    "d": "date",
    "tm": "time",
    "ttz": "timetz",
    "ts": "timestamp",
    "ts0": "timestamp(0)",
    "tstz": "timestamptz",
    "iv": "interval",
    "js": "json",
    "jb": "jsonb",
    "x": "xml",
    "u": "uuid",
    "ip": "inet",
    "cid": "cidr",
    "mac": "macaddr",
    "mac8": "macaddr8",
    "bt": "bit(4)",
    "pt": "point",
    "i4r": "int4range",
    "tsr": "tsrange",
    "dr": "daterange",
    "en": "mood",
    "dom": "posint",
    "ai": "int[]",
    "at": "text[]",
    "ad": "date[]",
    "hs": "hstore",
    "oid_": "oid",
}
ALL_BYTES = "\\x" + bytes(range(256)).hex()
EDGE_ROWS = [
    # minimum, NaN and infinity, 24:00, BC, unicode, all 256 byte values, 50-digit numerics
    {
        "i2": "-32768",
        "i4": "-2147483648",
        "i8": "-9223372036854775808",
        "r4": "NaN",
        "f8": "Infinity",
        "n": "NaN",
        "n3810": "1234567890123456789012345678.1234567890",
        "n5020": "123456789012345678901234567890.12345678901234567890",
        "money_": "-92233720368547758.08",
        "b": "true",
        "ch": "ab",
        "vc": "héllo ✓",
        "t": "tab\there \U0001f600",
        "ba": ALL_BYTES,
        "d": "infinity",
        "tm": "24:00:00",
        "ttz": "23:59:59.999999+14",
        "ts": "infinity",
        "ts0": "0044-03-15 12:00:00 BC",
        "tstz": "-infinity",
        "iv": "1 year 2 mons 3 days 04:05:06.789",
        "js": '{"a": 1e400, "b": [1, 2]}',
        "jb": '{"b": [1, 2], "a": "x"}',
        "x": "<a>x</a>",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "ip": "192.168.1.1/24",
        "cid": "10.0.0.0/8",
        "mac": "08:00:2b:01:02:03",
        "mac8": "08:00:2b:01:02:03:04:05",
        "bt": "1010",
        "pt": "(1.5,-2.25)",
        "i4r": "[1,10)",
        "tsr": "[2020-01-01,2020-02-01)",
        "dr": "[2020-01-01,infinity)",
        "en": "happy",
        "dom": "5",
        "ai": "{1,NULL,3}",
        "at": '{"a","b,c",NULL,"é"}',
        "ad": "{2020-01-01,NULL,1999-12-31}",
        "hs": '"a"=>"1", "b"=>NULL',
        "oid_": "4294967295",
    },
    # maximum, empty, negative zero, far dates
    {
        "i2": "32767",
        "i4": "2147483647",
        "i8": "9223372036854775807",
        "r4": "-Infinity",
        "f8": "-0",
        "n": "0.000000000000000000000000000000000001",
        "n3810": "-0.0000000001",
        "n5020": "-99999999999999999999999999999.99999999999999999999",
        "money_": "0",
        "b": "false",
        "ch": "",
        "vc": "",
        "t": "",
        "ba": "\\x",
        "d": "-infinity",
        "tm": "00:00:00",
        "ttz": "00:00:00-12",
        "ts": "4713-01-01 00:00:00 BC",
        "ts0": "-infinity",
        "tstz": "2262-04-11 23:47:16.854775+00",
        "iv": "-178000000 years",
        "js": "[]",
        "jb": "{}",
        "x": "",
        "u": "00000000-0000-0000-0000-000000000000",
        "ip": "::1",
        "cid": "::/0",
        "mac": "ff:ff:ff:ff:ff:ff",
        "mac8": "00:00:00:00:00:00:00:00",
        "bt": "0000",
        "pt": "(0,0)",
        "i4r": "empty",
        "tsr": "(,)",
        "dr": "(,)",
        "en": "sad",
        "dom": "1",
        "ai": "{}",
        "at": "{}",
        "ad": "{}",
        "hs": "",
        "oid_": "0",
    },
    # NULL in every column; ordinary values where NULL is not allowed
    {c: None for c in COLUMNS},
    # ordinary values, including the smallest and largest normal doubles
    {
        "i2": "7",
        "i4": "0",
        "i8": "1",
        "r4": "3.4028235e38",
        "f8": "2.2250738585072014e-308",
        "n": "-12.500",
        "n3810": "0",
        "n5020": "0.00000000000000000001",
        "money_": "12.34",
        "b": "true",
        "ch": "abcde",
        "vc": "x",
        "t": "ordinary",
        "ba": "\\x00",
        "d": "2024-02-29",
        "tm": "12:34:56.789012",
        "ttz": "12:00:00+05:30",
        "ts": "1970-01-01 00:00:00",
        "ts0": "2024-02-29 23:59:59",
        "tstz": "1999-12-31 23:59:59.999999+01",
        "iv": "-1 days -00:00:01.5",
        "js": "null",
        "jb": "[1, 2.50]",
        "x": "<r/>",
        "u": "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "ip": "10.1.2.3",
        "cid": "192.168.0.0/16",
        "mac": "00:00:00:00:00:00",
        "mac8": "ff:ff:ff:ff:ff:ff:ff:ff",
        "bt": "1111",
        "pt": "(1e+300,-1e-300)",
        "i4r": "(,5]",
        "tsr": "empty",
        "dr": "[2020-01-01,2020-01-02)",
        "en": "ok",
        "dom": "2147483647",
        "ai": "{-2147483648,2147483647}",
        "at": '{""}',
        "ad": "{infinity,-infinity}",
        "hs": '"k"=>""',
        "oid_": "1",
    },
]
BIG = 1_048_576
TOAST_ROW = {
    "t": "x" * BIG,
    "ba": "\\x" + (bytes(range(256)) * (BIG // 256)).hex(),
    "jb": json.dumps({"k": "y" * BIG}),
    "at": "{" + ",".join(["z" * 1000] * (BIG // 1000)) + "}",
    "ai": "{" + ",".join(["1"] * (BIG // 4)) + "}",
    "i4": "1",
}
POISON = {"tstz": "294276-12-31 23:59:59+00", "i4": "1"}  # later than any TIMESTAMPTZ DuckDB holds


def _sql_value(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def insert(conn: Any, table: str, id_: int, row: dict[str, str | None]) -> None:
    cols = ", ".join(f'"{c}"' for c in row)
    vals = ", ".join(f"{_sql_value(v)}::{COLUMNS[c]}" for c, v in row.items())
    conn.execute(f"INSERT INTO {table} (id, {cols}) VALUES ({id_}, {vals})")


@pytest.fixture(scope="module")
def env() -> Iterator[Settings]:
    with private_sandbox() as settings:
        with pg_superuser(settings) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS hstore")
            conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
            conn.execute("CREATE DOMAIN posint AS integer CHECK (VALUE > 0)")
            cols = ", ".join(f'"{c}" {t}' for c, t in COLUMNS.items())
            for table, identity in (("types_full", "FULL"), ("types_default", "DEFAULT")):
                conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, {cols})")
                conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY {identity}")
                conn.execute(f"ALTER TABLE {table} OWNER TO {sandbox.APP_USER}")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {sandbox.CDC_USER}")
        yield settings


# ---------------------------------------------------------------- comparison, independent of verify


def _float(text: str) -> float:
    return float({"Infinity": "inf", "-Infinity": "-inf", "NaN": "nan"}.get(text, text))


def _same_float(a: str, b: str) -> bool:
    x, y = _float(a), _float(b)
    return (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y))


def _bc(text: str) -> str:
    """DuckDB writes a BC date as `0044-03-15 (BC) 12:00:00`; PostgreSQL as `0044-03-15 12:00:00 BC`."""
    m = re.match(r"^(\S+) \(BC\)(.*)$", text)
    return f"{m.group(1)}{m.group(2)} BC" if m else text


def same(kind: str, pg: Any, duck: Any) -> bool:
    if pg is None or duck is None:
        return pg is None and duck is None
    if kind in ("real", "double precision"):
        return _same_float(pg, duck)
    if kind == "boolean":
        return {"t": "true", "f": "false"}.get(pg, pg) == duck
    if kind in ("date", "timestamp", "timestamp(0)"):
        return pg == _bc(duck)
    if kind == "timestamptz":
        return pg == _bc(duck)
    if kind == "interval":
        return pg == duck
    if kind == "point":
        x, y = pg.strip("()").split(",")
        dx, dy = duck.strip("()").split(",")
        return _same_float(x, dx) and _same_float(y, dy)
    if kind == "hstore":
        return json.loads(pg) == json.loads(duck)
    return pg == duck


PG_TEXT = {
    "bytea": "{c}",
    "money": "{c}::numeric::text",
    "timetz": "(({c}) AT TIME ZONE 'UTC')::time::text",
    "interval": "(extract(year from {c}) * 12 + extract(month from {c}))::text || 'm' || extract(day from {c}) || 'd' "
    "|| (extract(hour from {c}) * 3600000000 + extract(minute from {c}) * 60000000 + extract(microseconds from {c}))"
    "::bigint::text",
    "hstore": "hstore_to_json({c})::text",
    "int[]": "{c}",
    "text[]": "{c}",
    "date[]": "{c}::text[]",
}
DUCK_TEXT = {
    "bytea": "{c}",
    "timetz": "CAST(CAST({c} AS TIME) AS VARCHAR)",
    "interval": "CAST(datepart('year', {c}) * 12 + datepart('month', {c}) AS VARCHAR) || 'm' || "
    "CAST(datepart('day', {c}) AS VARCHAR) || 'd' || CAST(datepart('hour', {c})::BIGINT * 3600000000 + "
    "datepart('minute', {c})::BIGINT * 60000000 + datepart('microseconds', {c}) AS VARCHAR)",
    "int[]": "{c}",
    "text[]": "{c}",
    "date[]": "list_transform({c}, lambda x: CAST(x AS VARCHAR))",
    "point": "'(' || CAST({c}.x AS VARCHAR) || ',' || CAST({c}.y AS VARCHAR) || ')'",
    "hstore": "CAST(to_json({c}) AS VARCHAR)",
}


def assert_replica_holds_source(settings: Settings, table: str) -> None:
    state = sandbox.require_state(settings)
    with sandbox.pg_app_connect(state) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET extra_float_digits = 3")
        select = ", ".join(
            PG_TEXT.get(t, "CASE WHEN {c} IS NOT NULL THEN format('%s', {c}) END").replace("{c}", f'"{c}"')
            for c, t in COLUMNS.items()
        )
        source = {r[0]: r[1:] for r in conn.execute(f"SELECT id, {select} FROM {table}").fetchall()}
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        select = ", ".join(
            DUCK_TEXT.get(t, "CAST({c} AS VARCHAR)").replace("{c}", f'"{c}"') for c, t in COLUMNS.items()
        )
        replica = {r[0]: r[1:] for r in con.execute(f"SELECT id, {select} FROM replica_psa.{table}").fetchall()}
    finally:
        con.close()
    assert sorted(replica) == sorted(source)
    wrong = []
    for id_, values in source.items():
        for (col, kind), pg, duck in zip(COLUMNS.items(), values, replica[id_], strict=True):
            if not same(kind, pg, duck):
                wrong.append(f"row {id_} {col} ({kind}): source {str(pg)[:80]!r}, replica {str(duck)[:80]!r}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- the journey


@pytest.mark.slow
def test_every_type_through_snapshot_stream_update_delete_and_resnapshot(env: Settings) -> None:
    state = sandbox.require_state(env)
    with sandbox.pg_app_connect(state) as conn:
        for i, row in enumerate(EDGE_ROWS, start=1):
            insert(conn, "types_full", i, row)
        insert(conn, "types_full", 9, TOAST_ROW)
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "psa")
    assert_replica_holds_source(env, "types_full")
    assert_verify_equal(env, "psa", "types_full")

    # streamed: inserts of every edge row, an update of another column of a TOASTed row, a delete,
    # and a value no replica type can hold (dead letter; capture goes on); the same on a table
    # whose updates carry no before image, with the insert and update in one run.
    with sandbox.pg_app_connect(state) as conn:
        for i, row in enumerate(EDGE_ROWS, start=11):
            insert(conn, "types_full", i, row)
            insert(conn, "types_default", i, row)
        insert(conn, "types_full", 30, POISON)
        insert(conn, "types_default", 19, TOAST_ROW)
        conn.execute("UPDATE types_full SET i4 = 2 WHERE id = 9")
        conn.execute("UPDATE types_default SET i4 = 2 WHERE id = 19")
        conn.execute("DELETE FROM types_full WHERE id = 2")
        insert(conn, "types_full", 31, {"i4": "31"})
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "psa")
    dead = [reason for table, reason in dead_letters(env) if table == "types_full"]
    assert len(dead) == 1 and "'tstz'" in dead[0] and "TIMESTAMP WITH TIME ZONE" in dead[0], dead
    with sandbox.pg_app_connect(state) as conn:
        conn.execute("DELETE FROM types_full WHERE id = 30")
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "psa")
    for table in ("types_full", "types_default"):
        assert_replica_holds_source(env, table)
        assert_verify_equal(env, "psa", table)

    # the TOASTed row's later update, with the replica as the only holder of the unchanged values
    with sandbox.pg_app_connect(state) as conn:
        conn.execute("UPDATE types_default SET i4 = 3 WHERE id = 19")
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "psa")
    assert_replica_holds_source(env, "types_default")

    resnap = cli(env.data_dir, "cdc", "resnapshot", "types_full", "--source", "psa", "--json", check=False)
    assert resnap.returncode == 0 and json.loads(resnap.stdout)[0]["swapped"] is True, dead_letters(env)[-3:]
    assert_replica_holds_source(env, "types_full")
    assert_verify_equal(env, "psa", "types_full")


@pytest.mark.slow
def test_verify_catches_one_altered_value_in_every_column(env: Settings) -> None:
    cli(env.data_dir, "cdc", "run", "--until-idle", "--source", "psa")
    missed = verify_misses(env, "psa", "types_full", list(COLUMNS))
    assert not missed, f"verify missed an altered value (column, rows found, columns named): {missed}"

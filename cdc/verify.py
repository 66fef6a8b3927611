"""`coexist cdc verify`: does each replica table equal its live source?

Data-diff style: row counts first, then a per-row MD5 over a canonical text form of every
column, computed inside the source database and inside DuckDB, joined on the primary key.
Only (key, hash) pairs cross the wire. Reports missing, extra and different keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from cdc.config import MariaDBSource, PostgresSource

NULL_MARK = "\\N"


@dataclass
class TableDiff:
    source: str
    table: str
    source_rows: int
    replica_rows: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    n_missing: int = 0
    n_extra: int = 0
    n_different: int = 0
    note: str | None = None

    @property
    def equal(self) -> bool:
        return self.n_missing == 0 and self.n_extra == 0 and self.n_different == 0 and self.note is None


@dataclass
class _Column:
    name: str
    kind: str  # int | decimal | numeric | bool | date | ts | text | float
    scale: int | None = None


def _pg_kind(data_type: str, scale: int | None) -> str:
    if data_type in ("smallint", "integer", "bigint"):
        return "int"
    if data_type == "numeric":
        return "decimal" if scale is not None else "numeric"
    if data_type == "boolean":
        return "bool"
    if data_type == "date":
        return "date"
    if data_type.startswith("timestamp"):
        return "ts"
    if data_type in ("real", "double precision"):
        return "float"
    return "text"


def _my_kind(data_type: str) -> str:
    data_type = data_type.lower()
    if data_type in ("tinyint", "smallint", "mediumint", "int", "bigint", "year", "bit"):
        return "int"
    if data_type == "decimal":
        return "decimal"
    if data_type == "date":
        return "date"
    if data_type in ("datetime", "timestamp"):
        return "ts"
    if data_type in ("float", "double"):
        return "float"
    return "text"


def _pg_expr(col: _Column) -> str:
    c = f'"{col.name}"'
    return {
        "int": f"{c}::text",
        "decimal": f"{c}::text",
        "numeric": f"trim_scale({c})::text",
        "bool": f"CASE WHEN {c} THEN 't' ELSE 'f' END",
        "date": f"to_char({c}, 'YYYY-MM-DD')",
        "ts": f"(extract(epoch from {c}) * 1000000)::bigint::text",
        "float": f"round({c}::numeric, 6)::text",
        "text": f"{c}::text",
    }[col.kind]


def _my_expr(col: _Column) -> str:
    c = f"`{col.name}`"
    return {
        "int": f"CAST({c} AS CHAR)",
        "decimal": f"CAST({c} AS CHAR)",
        "date": f"DATE_FORMAT({c}, '%Y-%m-%d')",
        "ts": f"CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c}) AS CHAR)",
        "float": f"CAST(CAST(ROUND({c}, 6) AS DECIMAL(38,6)) AS CHAR)",
        "text": f"CAST({c} AS CHAR)",
    }[col.kind]


def _duck_expr(col: _Column) -> str:
    c = f'"{col.name}"'
    if col.kind == "decimal":
        return f"CAST(CAST({c} AS DECIMAL(38,{col.scale or 0})) AS VARCHAR)"
    return {
        "int": f"CAST({c} AS VARCHAR)",
        "numeric": f"regexp_replace(regexp_replace(CAST({c} AS VARCHAR), '(\\.[0-9]*?)0+$', '\\1'), '\\.$', '')",
        "bool": f"CASE WHEN {c} THEN 't' ELSE 'f' END",
        "date": f"strftime(CAST({c} AS DATE), '%Y-%m-%d')",
        "ts": f"CAST(epoch_us({c}) AS VARCHAR)",
        "float": f"CAST(CAST(round({c}, 6) AS DECIMAL(38,6)) AS VARCHAR)",
        "text": f"CAST({c} AS VARCHAR)",
    }[col.kind]


def _hash(exprs: list[str], dialect: str) -> str:
    marked = [f"COALESCE({e}, '{NULL_MARK}')" if dialect != "mysql" else f"COALESCE({e}, '\\\\N')" for e in exprs]
    return (
        f"md5(concat_ws('|', {', '.join(marked)}))"
        if dialect != "mysql"
        else f"MD5(CONCAT_WS('|', {', '.join(marked)}))"
    )


class _SourceSide:
    """Table lists, column kinds and (key, hash) pairs from one live source."""

    def __init__(self, name: str, config: PostgresSource | MariaDBSource) -> None:
        self.name = name
        self.config = config

    def tables(self) -> list[str]:
        if isinstance(self.config, PostgresSource):
            rows = self._pg(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY 1",
                (self.config.schema_name,),
            )
        else:
            rows = self._my(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY 1",
                (self.config.database,),
            )
        names = [r[0] for r in rows]
        if not names:
            raise RuntimeError(
                f"source {self.name!r}: no tables visible to user {self.config.user!r} (missing SELECT grants?)"
            )
        return [n for n in names if not self.config.tables or n in self.config.tables]

    def columns(self, table: str) -> tuple[list[_Column], list[str]]:
        if isinstance(self.config, PostgresSource):
            # pg_index, not information_schema.table_constraints: the latter hides keys from a SELECT-only user.
            rows = self._pg(
                "SELECT c.column_name, c.data_type, c.numeric_scale, "
                "c.column_name IN (SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = format('%%I.%%I', c.table_schema, "
                "c.table_name)::regclass AND i.indisprimary) "
                "FROM information_schema.columns c WHERE c.table_schema = %s AND c.table_name = %s "
                "ORDER BY c.ordinal_position",
                (self.config.schema_name, table),
            )
            cols = [_Column(r[0], _pg_kind(r[1], r[2]), r[2]) for r in rows]
            key = [r[0] for r in rows if r[3]]
        else:
            rows = self._my(
                "SELECT column_name, data_type, numeric_scale, column_key FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                (self.config.database, table),
            )
            cols = [_Column(r[0], _my_kind(r[1]), r[2]) for r in rows]
            key = [r[0] for r in rows if r[3] == "PRI"]
        return cols, key

    def hashes(self, table: str, cols: list[_Column], key: list[_Column]) -> pa.Table:
        if isinstance(self.config, PostgresSource):
            key_expr = "concat_ws('|', " + ", ".join(_pg_expr(c) for c in key) + ")"
            sql = (
                f"SELECT {key_expr} AS k, {_hash([_pg_expr(c) for c in cols], 'pg')} AS h "
                f'FROM "{self.config.schema_name}"."{table}"'
            )
            rows = self._pg(sql)
        else:
            key_expr = "CONCAT_WS('|', " + ", ".join(_my_expr(c) for c in key) + ")"
            sql = f"SELECT {key_expr} AS k, {_hash([_my_expr(c) for c in cols], 'mysql')} AS h FROM `{table}`"
            rows = self._my(sql)
        return pa.table({"k": [r[0] for r in rows], "h": [r[1] for r in rows]})

    def _pg(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert isinstance(self.config, PostgresSource)
        with self.config.connect() as conn:
            return list(conn.execute(sql, params or None).fetchall())

    def _my(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.config.connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall())
        finally:
            conn.close()


def verify_source(
    con: duckdb.DuckDBPyConnection, name: str, config: PostgresSource | MariaDBSource, sample: int = 10
) -> list[TableDiff]:
    side = _SourceSide(name, config)
    replica_tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [f"replica_{name}"]
        ).fetchall()
    }
    out: list[TableDiff] = []
    for table in side.tables():
        cols, key_names = side.columns(table)
        if not key_names:
            out.append(TableDiff(name, table, 0, 0, note="no primary key: not captured, not compared"))
            continue
        key = [c for c in cols if c.name in key_names]
        src = side.hashes(table, cols, key)
        if table not in replica_tables:
            out.append(
                TableDiff(
                    name,
                    table,
                    src.num_rows,
                    0,
                    missing=[str(k) for k in src["k"][:sample].to_pylist()],
                    n_missing=src.num_rows,
                    note=None if src.num_rows == 0 else "no replica table",
                )
            )
            if src.num_rows == 0:
                out[-1].note = None
            continue
        replica_cols = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
                [f"replica_{name}", table],
            ).fetchall()
        }
        absent = [c.name for c in cols if c.name not in replica_cols]
        present = [c if c.name in replica_cols else _Column(c.name, "absent") for c in cols]
        exprs = [_duck_expr(c) if c.kind != "absent" else "NULL" for c in present]
        key_expr = "concat_ws('|', " + ", ".join(_duck_expr(c) for c in key) + ")"
        con.register("_cx_src", src)
        try:
            replica_rows = con.execute(f'SELECT count(*) FROM replica_{name}."{table}"').fetchall()[0][0]
            diff = con.execute(f"""
                WITH rep AS (SELECT {key_expr} AS k, {_hash(exprs, "duck")} AS h FROM replica_{name}."{table}")
                SELECT CASE WHEN rep.k IS NULL THEN 'missing' WHEN s.k IS NULL THEN 'extra' ELSE 'different' END,
                       coalesce(s.k, rep.k)
                FROM _cx_src s FULL OUTER JOIN rep ON s.k = rep.k
                WHERE rep.k IS NULL OR s.k IS NULL OR s.h <> rep.h
            """).fetchall()
        finally:
            con.unregister("_cx_src")
        result = TableDiff(name, table, src.num_rows, int(replica_rows))
        for kind, k in diff:
            bucket = getattr(result, kind)
            setattr(result, f"n_{kind}", getattr(result, f"n_{kind}") + 1)
            if len(bucket) < sample:
                bucket.append(k)
        if absent:
            result.note = f"replica lacks column(s) {', '.join(absent)}"
        out.append(result)
    return out

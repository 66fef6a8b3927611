"""`coexist cdc verify`: does each replica table equal its live source?

Data-diff style: per row, an MD5 over a canonical text of every column, computed inside the
source database and inside DuckDB, joined on the primary key (keyless tables: on the row hash,
with its count). Only (key, hash) pairs cross the wire. The canonical texts come from the
dialect's type module (`cdc.types.postgres`, `cdc.types.mysql`), the same one the capture
decodes with, so equal data hashes equal and every differing value differs. MariaDB doubles,
which MariaDB prints in a format of its own, are shipped as values and canonicalised in DuckDB.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from cdc.config import MariaDBSource, PostgresSource
from cdc.pgsnapshot import pg_columns
from cdc.types import ColumnType
from cdc.types.mysql import my_type
from core.warehouse import quote, registered

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
    columns: list[str] = field(default_factory=list)
    """Columns whose values differ in the sampled different rows."""

    @property
    def equal(self) -> bool:
        return self.n_missing == 0 and self.n_extra == 0 and self.n_different == 0 and self.note is None


@dataclass
class _Column:
    name: str
    column: ColumnType
    source_canonical: str | None
    """Source-dialect SQL over `{c}`; None: shipped as `ship` values and canonicalised in DuckDB."""
    ship: str = "{c}"
    to_wire: Any = None


def _marked(exprs: list[str], mysql: bool = False) -> str:
    """Each expression with NULL written as `\\N` (MariaDB string literals need the backslash doubled)."""
    mark = NULL_MARK.replace("\\", "\\\\") if mysql else NULL_MARK
    return ", ".join(f"COALESCE({e}, '{mark}')" for e in exprs) if exprs else "''"


class _SourceSide:
    """Table lists, column types and (key, hash) pairs from one live source."""

    def __init__(self, name: str, config: PostgresSource | MariaDBSource) -> None:
        self.name = name
        self.config = config
        self.pg = isinstance(config, PostgresSource)

    def ident(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"' if self.pg else "`" + name.replace("`", "``") + "`"

    def tables(self) -> list[str]:
        schema = self.config.schema_name if isinstance(self.config, PostgresSource) else self.config.database
        rows = self._query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_type = 'BASE TABLE' ORDER BY 1",
            (schema,),
        )
        names = [r[0] for r in rows if not (isinstance(self.config, PostgresSource) and r[0] == self.config.ddl_table)]
        if not names:
            raise RuntimeError(
                f"source {self.name!r}: no tables visible to user {self.config.user!r} (missing SELECT grants?)"
            )
        return [n for n in names if not self.config.tables or n in self.config.tables]

    def columns(self, table: str) -> tuple[list[_Column], list[str]]:
        if isinstance(self.config, PostgresSource):
            with self.config.connect() as conn:
                types, key = pg_columns(conn, self.config.schema_name, table)
            return [_Column(n, t.column, t.canonical) for n, t in types.items()], key
        rows = self._query(
            "SELECT column_name, data_type, numeric_precision, numeric_scale, column_type, column_key "
            "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (self.config.database, table),
        )
        cols = []
        for name, data_type, precision, scale, column_type, _ in rows:
            kind = my_type(data_type, column_type, precision, scale)
            cols.append(_Column(name, kind.column, kind.canonical, kind.select, kind.to_wire))
        return cols, [r[0] for r in rows if r[5] == "PRI"]

    def hashes(self, table: str, cols: list[_Column], key: list[_Column]) -> pa.Table:
        def canon(col: _Column) -> str:
            assert col.source_canonical is not None
            return col.source_canonical.replace("{c}", self.ident(col.name))

        hashed = [canon(c) for c in cols if c.source_canonical is not None]
        shipped = [c for c in cols if c.source_canonical is None]
        key_expr = "concat_ws('|', " + _marked([canon(c) for c in key], not self.pg) + ")" if key else "''"
        h = f"md5(concat_ws('|', {_marked(hashed, not self.pg)}))"
        ships = "".join(f", {c.ship.replace('{c}', self.ident(c.name))}" for c in shipped)
        table_ref = (
            f"{self.ident(self.config.schema_name)}.{self.ident(table)}"
            if isinstance(self.config, PostgresSource)
            else self.ident(table)
        )
        rows = self._query(f"SELECT {key_expr} AS k, {h} AS h{ships} FROM {table_ref}")
        data: dict[str, list[Any]] = {"k": [r[0] for r in rows], "h": [r[1] for r in rows]}
        for i, col in enumerate(shipped):
            wire = col.to_wire or (lambda v: v)
            data[f"s{i}"] = [None if r[2 + i] is None else str(wire(r[2 + i])) for r in rows]
        return pa.table({n: pa.array(v, pa.string()) for n, v in data.items()})

    def values(self, table: str, cols: list[_Column], key: list[_Column], keys: list[str]) -> pa.Table:
        """Canonical text of every column (shipped ones as values) for the rows with these keys."""

        def expr(col: _Column) -> str:
            template = col.source_canonical if col.source_canonical is not None else col.ship
            return template.replace("{c}", self.ident(col.name))

        key_expr = "concat_ws('|', " + _marked([expr(c) for c in key], not self.pg) + ")"
        table_ref = (
            f"{self.ident(self.config.schema_name)}.{self.ident(table)}"
            if isinstance(self.config, PostgresSource)
            else self.ident(table)
        )
        marks = ", ".join(["%s"] * len(keys))
        select = f"SELECT {key_expr}, {', '.join(expr(c) for c in cols)} FROM {table_ref} WHERE {key_expr}"
        rows = self._query(select.replace("%", "%%") + f" IN ({marks})", tuple(keys))
        data: dict[str, list[Any]] = {"k": [r[0] for r in rows]}
        for i, col in enumerate(cols):
            wire = col.to_wire if col.source_canonical is None and col.to_wire else (lambda v: v)
            data[f"c{i}"] = [None if r[1 + i] is None else str(wire(r[1 + i])) for r in rows]
        return pa.table({n: pa.array(v, pa.string()) for n, v in data.items()})

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if isinstance(self.config, PostgresSource):
            with self.config.connect() as conn:
                conn.execute("SET intervalstyle = iso_8601")
                conn.execute("SET TimeZone = 'UTC'")
                return list(conn.execute(sql, params or None).fetchall())
        conn = self.config.connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                cur.execute(sql, params or None)
                return list(cur.fetchall())
        finally:
            conn.close()


def _replica_hash(cols: list[_Column], present: set[str]) -> str:
    def canon(col: _Column) -> str:
        return col.column.canonical_sql(quote(col.name)) if col.name in present else "NULL"

    inner = f"md5(concat_ws('|', {_marked([canon(c) for c in cols if c.source_canonical is not None])}))"
    shipped = [canon(c) for c in cols if c.source_canonical is None]
    return f"md5({inner} || '|' || concat_ws('|', {_marked(shipped)}))" if shipped else inner


def _source_hash(cols: list[_Column]) -> str:
    shipped = [c for c in cols if c.source_canonical is None]
    if not shipped:
        return "s.h"
    exprs = [
        c.column.canonical_sql("(" + c.column.decode_sql(f"s.s{i}", f"CAST(s.s{i} AS JSON)") + ")")
        for i, c in enumerate(shipped)
    ]
    return f"md5(s.h || '|' || concat_ws('|', {_marked(exprs)}))"


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
    source_tables = side.tables()
    for table in source_tables:
        cols, key_names = side.columns(table)
        key = [c for c in cols if c.name in key_names]
        src = side.hashes(table, cols, key)
        if table not in replica_tables:
            diff = TableDiff(name, table, src.num_rows, 0, n_missing=src.num_rows)
            diff.missing = [str(k) for k in src["k"][:sample].to_pylist()] if key else []
            diff.note = "no replica table" if src.num_rows else None
            out.append(diff)
            continue
        values = functools.partial(side.values, table, cols, key)
        out.append(_compare(con, name, table, cols, key, src, sample, values))
    for table in sorted(replica_tables - set(source_tables)):
        rows = con.execute(f"SELECT count(*) FROM replica_{name}.{quote(table)}").fetchall()[0][0]
        diff = TableDiff(name, table, 0, int(rows), n_extra=int(rows))
        diff.note = "replica only: the source has no such table (dropped, renamed, or excluded from capture)"
        out.append(diff)
    return out


def _differing_columns(
    con: duckdb.DuckDBPyConnection,
    target: str,
    cols: list[_Column],
    key: list[_Column],
    present: set[str],
    side_values: pa.Table,
) -> list[str]:
    """Which columns differ in the sampled rows: canonical text side by side, in DuckDB."""
    key_expr = "concat_ws('|', " + _marked([c.column.canonical_sql(quote(c.name)) for c in key]) + ")"
    found = []
    with registered(con, "_cx_vals", side_values):
        for i, col in enumerate(cols):
            if col.name not in present:
                continue
            mine = col.column.canonical_sql(quote(col.name))
            theirs = (
                f"s.c{i}"
                if col.source_canonical is not None
                else col.column.canonical_sql("(" + col.column.decode_sql(f"s.c{i}", f"CAST(s.c{i} AS JSON)") + ")")
            )
            differs = con.execute(
                f"SELECT count(*) FROM _cx_vals s JOIN (SELECT {key_expr} AS k, {mine} AS v FROM {target}) r "
                f"ON r.k = s.k WHERE r.v IS DISTINCT FROM {theirs}"
            ).fetchall()[0][0]
            if differs:
                found.append(col.name)
    return found


def _compare(
    con: duckdb.DuckDBPyConnection,
    name: str,
    table: str,
    cols: list[_Column],
    key: list[_Column],
    src: pa.Table,
    sample: int,
    src_values: Any,
) -> TableDiff:
    present = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [f"replica_{name}", table],
        ).fetchall()
    }
    absent = [c.name for c in cols if c.name not in present]
    target = f"replica_{name}.{quote(table)}"
    replica_rows = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
    result = TableDiff(name, table, src.num_rows, int(replica_rows))
    rep_hash = _replica_hash(cols, present)
    src_hash = _source_hash(cols)
    with registered(con, "_cx_src", src):
        if key:
            key_expr = "concat_ws('|', " + _marked([c.column.canonical_sql(quote(c.name)) for c in key]) + ")"
            rows = con.execute(f"""
                WITH rep AS (SELECT {key_expr} AS k, {rep_hash} AS h FROM {target}),
                     s AS (SELECT s.k, {src_hash} AS h FROM _cx_src s)
                SELECT CASE WHEN rep.k IS NULL THEN 'missing' WHEN s.k IS NULL THEN 'extra' ELSE 'different' END,
                       coalesce(s.k, rep.k), 1
                FROM s FULL OUTER JOIN rep ON s.k = rep.k
                WHERE rep.k IS NULL OR s.k IS NULL OR s.h <> rep.h
            """).fetchall()
        else:
            # Keyless: rows are equal when each distinct row occurs as often on both sides.
            rows = con.execute(f"""
                WITH rep AS (SELECT {rep_hash} AS h, count(*) AS n FROM {target} GROUP BY 1),
                     s AS (SELECT {src_hash} AS h, count(*) AS n FROM _cx_src s GROUP BY 1)
                SELECT CASE WHEN coalesce(s.n, 0) > coalesce(rep.n, 0) THEN 'missing' ELSE 'extra' END,
                       coalesce(s.h, rep.h), abs(coalesce(s.n, 0) - coalesce(rep.n, 0))
                FROM s FULL OUTER JOIN rep ON s.h = rep.h
                WHERE coalesce(s.n, 0) <> coalesce(rep.n, 0)
            """).fetchall()
    for kind, k, count in rows:
        setattr(result, f"n_{kind}", getattr(result, f"n_{kind}") + int(count))
        bucket = getattr(result, kind)
        if len(bucket) < sample:
            bucket.append(k)
    if absent:
        result.note = f"replica lacks column(s) {', '.join(absent)}"
    if result.different and key:
        result.columns = _differing_columns(con, target, cols, key, present, side_values=src_values(result.different))
    return result

"""The analyst's read-only snapshot: a consistent copy of the warehouse, replaced atomically.

DuckDB has one writer per file, so analysts never open the service's warehouse. The service
copies every table (bar the excluded ones) and view into a new file inside one read
transaction, so the copy is one point in time, then renames it over the previous snapshot.
A reader that already has the old file open keeps reading it; the next open gets the new one.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from core.warehouse import literal, quote, transaction


@dataclass
class Published:
    path: Path
    tables: int
    views: int
    seconds: float
    bytes: int


def publish(con: duckdb.DuckDBPyConnection, target: Path, exclude: list[str] | None = None) -> Published:
    """Copy the warehouse behind `con` to `target` atomically; `con` should be a cursor of its own."""
    started = time.perf_counter()
    excluded = {e.lower() for e in exclude or []}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp.duckdb")
    alias = f"cx_snap_{uuid.uuid4().hex[:8]}"
    home = con.execute("SELECT current_database()").fetchall()[0][0]
    con.execute(f"ATTACH {literal(str(tmp))} AS {alias}")
    tables = views = 0
    try:
        with transaction(con):
            found = con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? AND NOT temporary "
                "ORDER BY 1, 2",
                [home],
            ).fetchall()
            for schema, table in found:
                if f"{schema}.{table}".lower() in excluded:
                    continue
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {alias}.{quote(schema)}")
                con.execute(
                    f"CREATE TABLE {alias}.{quote(schema)}.{quote(table)} AS "
                    f"SELECT * FROM {quote(home)}.{quote(schema)}.{quote(table)}"
                )
                tables += 1
        defined = con.execute(
            "SELECT schema_name, sql FROM duckdb_views() WHERE database_name = ? AND NOT internal "
            "AND NOT temporary ORDER BY 1, view_name",
            [home],
        ).fetchall()
        con.execute(f"USE {alias}")
        try:
            for schema, sql in defined:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
                try:
                    con.execute(sql)
                    views += 1
                except (duckdb.CatalogException, duckdb.BinderException):
                    pass  # the view reads an excluded table
        finally:
            con.execute(f"USE {quote(home)}")
    except BaseException:
        con.execute(f"DETACH {alias}")
        tmp.unlink(missing_ok=True)
        raise
    con.execute(f"DETACH {alias}")
    os.replace(tmp, target)
    return Published(target, tables, views, time.perf_counter() - started, target.stat().st_size)

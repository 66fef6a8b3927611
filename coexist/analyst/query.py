"""Read-only SQL for analysts: one statement, a query, on a connection that cannot touch files.

`coexist query` runs a user's SQL against the warehouse or the snapshot. DuckDB can read and
write files, attach databases, install extensions and change settings from SQL; here the
connection is read-only, external access is switched off and the configuration locked before
the user's statement runs, and only SELECT/WITH/SHOW/DESCRIBE/EXPLAIN pass the parser check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import duckdb

from core.errors import UsageError

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """No file system, no ATTACH/COPY/INSTALL, no further SET: for a connection that runs users' SQL."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check(sql: str) -> str:
    """The one statement in `sql`, if it is a query; UsageError otherwise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"not valid SQL: {exc}") from None
    if len(statements) != 1:
        raise UsageError(f"one statement at a time, please ({len(statements)} given)")
    statement = statements[0]
    if statement.type not in ALLOWED:
        raise UsageError(f"only queries are allowed (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN), not {statement.type.name}")
    return statement.query


def run(con: duckdb.DuckDBPyConnection, sql: str, limit: int | None, timeout_s: float) -> QueryResult:
    """Run one checked query on a locked-down connection, at most `limit` rows, within `timeout_s`."""
    query = check(sql)
    lock_down(con)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        cur = con.execute(query)
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchall() if limit is None else cur.fetchmany(limit + 1)
    except duckdb.InterruptException:
        raise UsageError(f"query stopped after {timeout_s:g} s (--timeout)") from None
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {exc}") from None
    finally:
        timer.cancel()
    truncated = limit is not None and len(rows) > limit
    return QueryResult(columns, rows[:limit] if truncated else rows, truncated)

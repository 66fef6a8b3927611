"""Continuous reconciliation: the keys of a rule that changed since its last run, from `cdc.changelog`.

A rule whose inputs are all replica tables (`replica_<source>.<table>`, named directly, read by its
SQL, or through views over them) can be re-run for the keys that changed only. Every image of every
row that changed since the last run (before and after, back to its snapshot read: the changelog
holds the replica's decoded values) is put through the side's own SQL in place of the table it came
from; what comes out are the rule keys (or, at an aggregate grain, the groups) those rows touched
before and after the change. Re-classifying exactly those keys gives what a full run gives for them,
and every other key's breaks are as the last run left them. The set is a superset by design: an
extra key costs a little time, a missing one would cost correctness.

A full run is needed (and `Scope.full_because` says why) when there is no earlier run of this
version of the rule, when an input is not a replica table (a file, a table of another schema),
when a replica table was re-snapshotted, truncated or changed shape since, or when the rule matches
on fallback keys (a one-to-one matching over all unmatched rows).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb

from core.warehouse import literal, quote

REPLICA_SCHEMA = re.compile(r"replica_(?P<source>[A-Za-z_][A-Za-z0-9_]*)")
VIEW_BODY = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?VIEW\s+.*?\s+AS\s+(.*?);?\s*$", re.S | re.I
)


@dataclass
class Scope:
    """What this run covers: everything (`full_because` says why) or the keys in `_cx_affected`."""

    watermark: dt.datetime | None
    full_because: str | None = None
    inputs: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def incremental(self) -> bool:
        return self.full_because is None


def _statement(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error"):
        raise ValueError(tree.get("error_message", "cannot parse"))
    statement: dict[str, Any] = tree["statements"][0]
    return statement


def _table_refs(node: Any, ctes: frozenset[str] = frozenset()) -> Iterator[dict[str, Any]]:
    """Every table reference in a parsed statement that is not a CTE (subqueries included)."""
    if isinstance(node, dict):
        names = {entry["key"].lower() for entry in (node.get("cte_map") or {}).get("map", [])}
        ctes = ctes | names if names else ctes
        is_cte = node.get("type") == "BASE_TABLE" and not node.get("schema_name") and node["table_name"].lower() in ctes
        if node.get("type") in ("BASE_TABLE", "TABLE_FUNCTION") and not is_cte:
            yield node
        for value in node.values():
            yield from _table_refs(value, ctes)
    elif isinstance(node, list):
        for value in node:
            yield from _table_refs(value, ctes)


def _views(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    rows = con.execute("SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
    return {(schema.lower(), name.lower()): sql for schema, name, sql in rows}


def expand_views(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """The parsed statement of `sql` with every view it reads replaced by the view's own query."""
    statement = _statement(con, sql)
    views = _views(con)
    for _ in range(16):
        expanded = False
        for ref in list(_table_refs(statement)):
            if ref.get("type") != "BASE_TABLE":
                continue
            body = views.get(((ref.get("schema_name") or "main").lower(), ref["table_name"].lower()))
            match = VIEW_BODY.match(body) if body else None
            if not match:
                continue
            alias = ref.get("alias") or ref["table_name"]
            inner = _statement(con, match.group(1))
            ref.clear()
            ref.update(
                {"type": "SUBQUERY", "alias": alias, "sample": None, "query_location": 0,
                 "subquery": inner, "column_name_alias": []}
            )  # fmt: skip
            expanded = True
        if not expanded:
            return statement
    raise ValueError("views nest more than 16 deep")


def replica_inputs(statement: dict[str, Any]) -> list[tuple[str, str]] | str:
    """The replica tables (schema, table) a parsed statement reads; a reason when it reads anything else.

    Master data (`mdm.*`) is reference data: it is not in the changelog, but a run knows when it last
    changed (`mdm.runs`), and `scope` runs fully after it did."""
    found: list[tuple[str, str]] = []
    for ref in _table_refs(statement):
        if ref.get("type") == "TABLE_FUNCTION":
            return "an input is read by a table function (a file), not from a replica table"
        schema, table = ref.get("schema_name") or "", ref["table_name"]
        if schema == "mdm":
            continue
        if not REPLICA_SCHEMA.fullmatch(schema):
            return f"input {'.'.join(x for x in (schema, table) if x)} is not a replica table"
        if (schema, table) not in found:
            found.append((schema, table))
    return found


def substitute(con: duckdb.DuckDBPyConnection, statement: dict[str, Any], table: tuple[str, str], by: str) -> str:
    """SQL text of `statement` reading relation `by` wherever it read `table` (same alias, same columns)."""
    copy = json.loads(json.dumps(statement))
    for ref in _table_refs(copy):
        if ref.get("type") == "BASE_TABLE" and (ref.get("schema_name") or "", ref["table_name"]) == table:
            ref["alias"] = ref.get("alias") or table[1]
            ref.update({"schema_name": "", "catalog_name": "", "table_name": by, "qualified_name": {"path": [by]}})
    sql: str = con.execute(
        "SELECT json_deserialize_sql(?)", [json.dumps({"error": False, "statements": [copy]})]
    ).fetchall()[0][0]
    return sql


def last_run(con: duckdb.DuckDBPyConnection, name: str) -> tuple[str | None, dt.datetime | None, dt.datetime | None]:
    """(rule version, changelog watermark, start) of the rule's last successful run."""
    row = con.execute(
        "SELECT rule_version, watermark, started_at FROM recon.runs WHERE recon = ? AND status = 'ok' "
        "ORDER BY started_at DESC LIMIT 1",
        [name],
    ).fetchall()
    return (row[0][0], row[0][1], row[0][2]) if row else (None, None, None)


def _master_data_since(con: duckdb.DuckDBPyConnection, started: dt.datetime) -> bool:
    try:
        row = con.execute("SELECT max(run_at) FROM mdm.runs").fetchall()
    except duckdb.CatalogException:
        return False
    return bool(row and row[0][0] is not None and row[0][0] >= started)


def current_watermark(con: duckdb.DuckDBPyConnection) -> dt.datetime | None:
    """The changelog's high-water mark, read before the inputs: a later commit is seen again next run."""
    try:
        value = con.execute("SELECT max(applied_at) FROM cdc.changelog").fetchall()[0][0]
    except duckdb.CatalogException:
        return None
    return value if isinstance(value, dt.datetime) else None


def _gap(con: duckdb.DuckDBPyConnection, tables: list[tuple[str, str]], since: dt.datetime) -> str | None:
    """Why the changelog since `since` does not describe every change to `tables`, if it does not."""
    for schema, table in tables:
        source = schema.removeprefix("replica_")
        row = con.execute(
            "SELECT op FROM cdc.changelog WHERE source = ? AND table_name = ? AND applied_at > ? "
            "AND op IN ('r', 't') LIMIT 1",
            [source, table, since],
        ).fetchall()
        if row:
            return f"{schema}.{table} was {'re-snapshotted' if row[0][0] == 'r' else 'truncated'} since the last run"
        try:
            shaped = con.execute(
                "SELECT kind FROM cdc.schema_changes WHERE source = ? AND table_name = ? AND applied_at > ? LIMIT 1",
                [source, table, since],
            ).fetchall()
        except duckdb.CatalogException:
            shaped = []
        if shaped:
            return f"{schema}.{table} changed shape since the last run ({shaped[0][0]})"
    return None


def _delta_view(con: duckdb.DuckDBPyConnection, n: int, table: tuple[str, str], since: dt.datetime) -> str:
    """A temp view with the old and new versions of the rows of `table` that changed since `since`,
    typed as the replica table is.

    The old version is an event's before image; where the log did not carry a whole one (PostgreSQL's
    default replica identity: none on update, the key alone on delete), every earlier image of that
    row in the changelog stands in for it (one of them is the version the last run saw)."""
    schema, name = table
    columns = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [schema, name],
    ).fetchall()
    structure = literal(json.dumps({column: data_type for column, data_type in columns}))
    where = f"source = {literal(schema.removeprefix('replica_'))} AND table_name = {literal(name)}"
    after = f"applied_at > {literal(since.isoformat())}::TIMESTAMPTZ"
    view = f"_cx_delta_{n}"
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW {view} AS
        WITH events AS (
            SELECT CAST(key AS VARCHAR) AS k, op, key, before, after FROM cdc.changelog WHERE {where} AND {after}),
        partial AS (
            SELECT DISTINCT k FROM events WHERE op IN ('u', 'd') AND (before IS NULL
                OR len(list_filter(json_extract(before, '$.*'), lambda v: CAST(v AS VARCHAR) <> 'null'))
                   <= len(json_keys(key)))),
        images AS (
            SELECT before AS img FROM events WHERE before IS NOT NULL
            UNION ALL SELECT after FROM events WHERE after IS NOT NULL
            UNION ALL
            SELECT c.after FROM cdc.changelog c SEMI JOIN partial ON CAST(c.key AS VARCHAR) = partial.k
            WHERE {where} AND NOT ({after}) AND c.after IS NOT NULL)
        SELECT {", ".join(f"r.{quote(c)}" for c, _ in columns)}
        FROM (SELECT unnest(json_transform(img, {structure})) FROM images) r""")
    return view


def scope(
    con: duckdb.DuckDBPyConnection,
    name: str,
    version: str,
    sides: list[str],
    keys: list[str],
    has_fallback: bool,
    full: bool,
) -> Scope:
    """Decide full or incremental; for an incremental run, fill `_cx_affected` (the keys `keys` of
    either side, `sides` being the engine's SELECT of each side) with every key a change touched."""
    watermark = current_watermark(con)
    if full:
        return Scope(watermark, "asked for (--full)")
    if watermark is None:
        return Scope(watermark, "no CDC changelog in this warehouse")
    last_version, since, started = last_run(con, name)
    if last_version is None or since is None or started is None:
        return Scope(watermark, "no earlier run to continue from")
    if last_version != version:
        return Scope(watermark, "the rule changed since its last run")
    if has_fallback:
        return Scope(watermark, "the rule matches on fallback keys (one-to-one over all unmatched rows)")
    statements = []
    inputs: dict[int, list[tuple[str, str]]] = {}
    try:
        for n, sql in enumerate(sides):
            statement = expand_views(con, sql)
            found = replica_inputs(statement)
            if isinstance(found, str):
                return Scope(watermark, found)
            statements.append(statement)
            inputs[n] = found
    except (ValueError, duckdb.Error) as exc:
        return Scope(watermark, f"the inputs' SQL cannot be analysed: {exc}")
    reads_master_data = any(
        (ref.get("schema_name") or "") == "mdm" for statement in statements for ref in _table_refs(statement)
    )
    if reads_master_data and _master_data_since(con, started):
        return Scope(watermark, "master data changed since the last run")
    every = list(dict.fromkeys(t for found in inputs.values() for t in found))
    gap = _gap(con, every, since)
    if gap:
        return Scope(watermark, gap)
    views = {table: _delta_view(con, n, table, since) for n, table in enumerate(every)}
    selects = [
        f"SELECT {', '.join(keys)} FROM ({substitute(con, statement, table, views[table])})"
        for n, statement in enumerate(statements)
        for table in inputs[n]
    ]
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _cx_affected AS SELECT DISTINCT * FROM ({' UNION ALL '.join(selects)})"
        )
    except duckdb.Error as exc:
        return Scope(watermark, f"the changed rows cannot be read back: {exc}")
    return Scope(watermark, None, inputs)

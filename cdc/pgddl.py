"""PostgreSQL DDL that logical decoding does not carry: DROP, RENAME and ALTER TABLE.

pgoutput sends row changes, truncates and a table's new shape with its next row change, but
nothing when a table is dropped or renamed, and nothing at all for a table no row of which changes
after an ALTER. Event triggers (the way pglogical and others replicate DDL) write those statements
into a small log table in the captured schema; its
inserts travel through the publication with everything else, so the reader sees each statement
at its place in the stream and turns it into a `SchemaChange`. Event triggers need a superuser:
`coexist cdc setup-ddl --source S` installs them (or prints the SQL for a DBA); without them
capture works as before: a table dropped or renamed at the source is reported by `cdc verify`,
and an ALTER is seen with the table's next row change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cdc.events import ChangeEvent
from cdc.schema import SchemaChange
from cdc.types import ColumnType

DDL_TABLE = "coexist_ddl"

_IDENT = r'(?:"(?:[^"]|"")+"|[^\s.;,()"]+)'
_RENAME_COLUMN = re.compile(rf"RENAME\s+(?:COLUMN\s+)?(?!TO\b)({_IDENT})\s+TO\s+({_IDENT})", re.I)
_ALTER = re.compile(rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?:{_IDENT}\.)?({_IDENT})", re.I)
_RENAME = re.compile(
    rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?:{_IDENT}\.)?({_IDENT})\s+RENAME\s+TO\s+({_IDENT})", re.I
)


def install_sql(schema: str, table: str = DDL_TABLE) -> str:
    """The log table, its two trigger functions and the event triggers, for one captured schema.

    The functions run as their owner (SECURITY DEFINER): whoever drops or renames a table need not
    be allowed to write the log."""
    s = _quote(schema)
    log = f"{s}.{_quote(table)}"
    suffix = re.sub(r"\W", "_", schema)
    lit = "'" + schema.replace("'", "''") + "'"
    table_lit = "'" + table.replace("'", "''") + "'"
    return f"""
CREATE TABLE IF NOT EXISTS {log} (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    table_name text NOT NULL,
    new_name text,
    ddl text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION {s}.coexist_ddl_dropped() RETURNS event_trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE obj record;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects()
        WHERE object_type = 'table' AND NOT is_temporary AND schema_name = {lit} AND object_name <> {table_lit}
    LOOP
        INSERT INTO {log} (kind, table_name, ddl) VALUES ('drop_table', obj.object_name, current_query());
    END LOOP;
END $fn$;
CREATE OR REPLACE FUNCTION {s}.coexist_ddl_altered() RETURNS event_trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE obj record;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
        WHERE command_tag = 'ALTER TABLE' AND object_type = 'table' AND schema_name = {lit}
    LOOP
        INSERT INTO {log} (kind, table_name, new_name, ddl)
        SELECT 'alter_table', '', c.relname, current_query() FROM pg_class c WHERE c.oid = obj.objid;
    END LOOP;
END $fn$;
DROP EVENT TRIGGER IF EXISTS coexist_ddl_dropped_{suffix};
CREATE EVENT TRIGGER coexist_ddl_dropped_{suffix} ON sql_drop EXECUTE FUNCTION {s}.coexist_ddl_dropped();
DROP EVENT TRIGGER IF EXISTS coexist_ddl_altered_{suffix};
CREATE EVENT TRIGGER coexist_ddl_altered_{suffix} ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION {s}.coexist_ddl_altered();
"""


def install(conn: Any, schema: str, table: str = DDL_TABLE, grant_to: str | None = None) -> None:
    """Install the DDL log in `schema` over a superuser's psycopg connection."""
    conn.execute(install_sql(schema, table))
    if grant_to:
        conn.execute(f"GRANT SELECT ON {_quote(schema)}.{_quote(table)} TO {_quote(grant_to)}")


Shape = Callable[[str], tuple[dict[str, ColumnType], list[str]] | None]
"""A table's columns and primary key as the source's catalog has them now (None: no such table)."""


def schema_change(
    event: ChangeEvent, table: str = DDL_TABLE, shape: Shape | None = None, **options: Any
) -> SchemaChange | None:
    """The DROP TABLE, RENAME TABLE or ALTER TABLE an insert into the DDL log stands for (None for
    anything else). An ALTER carries the table's shape from `shape` (the catalog, read when the
    statement comes through the stream: it can only be as new or newer) and its renamed columns; the
    sink applies it and the reader re-snapshots when old rows need values the log does not carry."""
    if event.table != table or event.op != "c" or not event.after:
        return None
    row = event.after
    kind, ddl = str(row.get("kind") or ""), str(row.get("ddl") or "")
    if kind == "drop_table":
        return SchemaChange(event.source, str(row["table_name"]), kind, ddl, event.position, **options)
    if kind != "alter_table":
        return None
    new = str(row.get("new_name") or "")
    old = next((_unquote(a) for a, b in _RENAME.findall(ddl) if _unquote(b) == new), None)
    if old and old != new:
        return SchemaChange(event.source, old, "rename_table", ddl, event.position, new_name=new, **options)
    now = shape(new) if shape is not None and kind == "alter_table" else None
    if now is None:
        return None
    columns, key = now
    renamed = {
        _unquote(a): _unquote(b)
        for statement in ddl.split(";")
        if (target := _ALTER.search(statement)) and _unquote(target.group(1)) == new
        for a, b in _RENAME_COLUMN.findall(statement)
    }
    return SchemaChange(
        event.source,
        new,
        "alter",
        ddl,
        event.position,
        columns=columns,
        key=key,
        renamed=renamed,
        check_backfill=True,
        **options,
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident.lower()

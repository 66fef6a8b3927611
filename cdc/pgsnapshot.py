"""Re-snapshot one PostgreSQL table while Debezium keeps its stream position.

Debezium's own incremental snapshots need a signalling table in the source; this reads the
table in one REPEATABLE READ transaction instead. Replaying the stream over a newer snapshot
is harmless because updates and deletes carry full row images (REPLICA IDENTITY FULL).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
from psycopg.rows import dict_row

from cdc.config import PostgresSource
from cdc.events import ChangeEvent, position_key
from cdc.sink import Batch
from cdc.types import ColumnType
from cdc.types.postgres import PgType, from_catalog

CATALOG = """
SELECT a.attname,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            ELSE format_type(a.atttypid, a.atttypmod) END,
       coalesce(b.typtype, t.typtype)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
PRIMARY_KEY = """
SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND i.indisprimary
"""


def pg_columns(conn: psycopg.Connection, schema: str, table: str) -> tuple[dict[str, PgType], list[str]]:
    """Each column's PgType (domains resolved to their base type) and the primary key."""
    types = {name: from_catalog(kind, typtype) for name, kind, typtype in conn.execute(CATALOG, (schema, table))}
    key = [r[0] for r in conn.execute(PRIMARY_KEY, (schema, table)).fetchall()]
    return types, key


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pg_snapshot(name: str, config: PostgresSource, tables: list[str], batch_size: int = 5000) -> Iterator[Batch]:
    with config.connect() as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL intervalstyle = iso_8601")
        lsn_row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        lsn = int(lsn_row[0]) if lsn_row else 0
        ts_ms = int(time.time() * 1000)
        first = True
        pending: list[ChangeEvent] = []
        for table in tables:
            types, key = pg_columns(conn, config.schema_name, table)
            columns: dict[str, ColumnType | str] = {c: t.column for c, t in types.items()}
            select = ", ".join(f"{t.wire.replace('{c}', _ident(c))} AS {_ident(c)}" for c, t in types.items())
            with conn.cursor(row_factory=dict_row, name=f"cx_snap_{table}") as cur:
                cur.execute(f"SELECT {select} FROM {_ident(config.schema_name)}.{_ident(table)}")
                for row in cur:
                    pending.append(
                        ChangeEvent(
                            source=name,
                            table=table,
                            op="r",
                            key={k: row[k] for k in key},
                            before=None,
                            after=row,
                            position=position_key(0, lsn),
                            ts_ms=ts_ms,
                            snapshot="true",
                            source_info={
                                "connector": "postgresql",
                                "name": name,
                                "db": config.database,
                                "schema": config.schema_name,
                                "table": table,
                                "snapshot": "true",
                                "lsn": lsn,
                            },
                            columns=columns,
                        )
                    )
                    if len(pending) >= batch_size:
                        batch = Batch(events=pending, staged=True)
                        if first:
                            batch.reset_tables = [(name, t) for t in tables]
                            first = False
                        yield batch
                        pending = []
        batch = Batch(events=pending, staged=True)
        if first:
            batch.reset_tables = [(name, t) for t in tables]
        yield batch

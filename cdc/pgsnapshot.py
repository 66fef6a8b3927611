"""Re-snapshot one PostgreSQL table while Debezium keeps its stream position.

Debezium's own incremental snapshots need a signalling table in the source; this reads the
table in one REPEATABLE READ transaction instead. Replaying the stream over a newer snapshot
is harmless because updates and deletes carry full row images (REPLICA IDENTITY FULL).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from psycopg.rows import dict_row

from cdc.config import PostgresSource
from cdc.events import ChangeEvent, position_key
from cdc.sink import Batch

_PG_TO_DUCK = {
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "boolean": "BOOLEAN",
    "real": "FLOAT",
    "double precision": "DOUBLE",
    "date": "DATE",
    "text": "VARCHAR",
    "character varying": "VARCHAR",
    "character": "VARCHAR",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "time without time zone": "TIME",
    "json": "JSON",
    "jsonb": "JSON",
    "uuid": "UUID",
    "bytea": "BLOB",
    "USER-DEFINED": "VARCHAR",
}


def pg_snapshot(name: str, config: PostgresSource, tables: list[str], batch_size: int = 5000) -> Iterator[Batch]:
    with config.connect() as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        lsn_row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        lsn = int(lsn_row[0]) if lsn_row else 0
        ts_ms = int(time.time() * 1000)
        first = True
        pending: list[ChangeEvent] = []
        for table in tables:
            cols = conn.execute(
                "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                (config.schema_name, table),
            ).fetchall()
            columns = {}
            for col, kind, precision, scale in cols:
                if kind == "numeric":
                    columns[col] = (
                        f"DECIMAL({precision},{scale})" if precision and precision <= 38 else "DECIMAL(38,10)"
                    )
                else:
                    columns[col] = _PG_TO_DUCK.get(kind, "VARCHAR")
            key = [
                r[0]
                for r in conn.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass "
                    "AND i.indisprimary",
                    (config.schema_name, table),
                ).fetchall()
            ]
            enum_cols = [c for c, k, _, _ in cols if k == "USER-DEFINED"]
            select = ", ".join(f'"{c}"::text AS "{c}"' if c in enum_cols else f'"{c}"' for c in columns)
            with conn.cursor(row_factory=dict_row, name=f"cx_snap_{table}") as cur:
                cur.execute(f'SELECT {select} FROM "{config.schema_name}"."{table}"')
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
                        batch = Batch(events=pending)
                        if first:
                            batch.reset_tables = [(name, t) for t in tables]
                            first = False
                        yield batch
                        pending = []
        batch = Batch(events=pending)
        if first:
            batch.reset_tables = [(name, t) for t in tables]
        yield batch

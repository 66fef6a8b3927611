"""What `coexist cdc status` reports: per source, where capture stands and how far behind it is."""

from __future__ import annotations

import time
from typing import Any

import duckdb
import orjson
import psycopg
import pymysql
from kafka.errors import KafkaError

from cdc.config import KafkaSource, MariaDBSource, PostgresSource
from cdc.kafka import partition_lag
from core.errors import NotReady, SourceRefused


def source_behind(config: PostgresSource | MariaDBSource, resume: dict[str, Any] | None) -> dict[str, Any]:
    """How far the committed position is behind the source's log head (bytes), when reachable."""
    try:
        if isinstance(config, PostgresSource):
            with config.connect(timeout=5) as conn:
                row = conn.execute(
                    "SELECT pg_current_wal_lsn() - confirmed_flush_lsn, active FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    (config.slot_name,),
                ).fetchone()
                if row is None:
                    return {"reachable": True, "slot": "missing"}
                return {"reachable": True, "behind_bytes": int(row[0] or 0), "slot_active": bool(row[1])}
        conn = config.connect(timeout=5, autocommit=False, with_database=False)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW MASTER STATUS")
                head = cur.fetchone()
                cur.execute("SHOW BINARY LOGS")
                sizes = dict(cur.fetchall())
        finally:
            conn.close()
        if head is None or not resume or "file" not in resume:
            return {"reachable": True}
        behind = 0
        for file, size in sizes.items():
            if file == resume["file"]:
                behind += int(size) - int(resume["pos"])
            elif file > resume["file"]:
                behind += int(size)
        return {"reachable": True, "behind_bytes": max(0, behind), "head": f"{head[0]}:{head[1]}"}
    except (psycopg.Error, pymysql.Error, SourceRefused) as exc:
        return {"reachable": False, "error": str(exc).splitlines()[0]}


def kafka_status(con: duckdb.DuckDBPyConnection, name: str, config: KafkaSource) -> dict[str, Any]:
    """A Kafka source: per partition, the warehouse's next offset, the broker's high-water mark and the lag."""
    committed = {
        r[0]: int(orjson.loads(r[1])["offset"])
        for r in con.execute(
            "SELECT partition, resume FROM cdc.offsets WHERE partition LIKE 'kafka:%' AND resume IS NOT NULL"
        ).fetchall()
    }
    entry: dict[str, Any] = {"source": name, "kind": "kafka", "url": config.url()}
    try:
        partitions = partition_lag(config, committed)
    except KafkaError as exc:
        return entry | {"reachable": False, "error": str(exc), "partitions": []}
    lags = [p["lag"] for p in partitions if p["lag"] is not None]
    return entry | {
        "reachable": True,
        "partitions": partitions,
        "lag_total": sum(lags),
        "lag_max": max(lags, default=0),
    }


def capture_status(
    con: duckdb.DuckDBPyConnection, sources: dict[str, PostgresSource | MariaDBSource]
) -> list[dict[str, Any]]:
    now_ms = int(time.time() * 1000)
    if not con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'cdc' AND table_name = 'offsets'"
    ).fetchall()[0][0]:
        raise NotReady("no capture has run into this warehouse yet: `coexist cdc run`")
    offsets = {
        r[0]: r
        for r in con.execute(
            "SELECT source, position, resume, snapshot_done, events, last_ts_ms, updated_at FROM cdc.offsets "
            "WHERE partition = ''"
        ).fetchall()
    }
    stats = con.execute("SELECT source, table_name, events, dead_letters FROM cdc.table_stats ORDER BY ALL").fetchall()
    per_table = [(s, t, n) for s, t, n, _ in stats if n]
    dead = [(s, t, d) for s, t, _, d in stats if d]
    lags = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT source, quantile_cont(lag_ms, 0.5), quantile_cont(lag_ms, 0.95), max(committed_at) FROM "
            "(SELECT * FROM cdc.batches WHERE applied > 0 ORDER BY committed_at DESC LIMIT 200) GROUP BY source"
        ).fetchall()
    }
    try:
        ddl = con.execute(
            "SELECT source, table_name, kind, ddl, detail, applied_at FROM cdc.schema_changes "
            "ORDER BY applied_at DESC LIMIT 100"
        ).fetchall()
    except duckdb.CatalogException:  # a warehouse or snapshot from before schema changes were recorded
        ddl = []
    report = []
    for name, config in sources.items():
        row = offsets.get(name)
        resume = orjson.loads(row[2]) if row and row[2] else None
        entry: dict[str, Any] = {
            "source": name,
            "kind": config.kind,
            "url": config.url(),
            "position": row[1] if row else None,
            "resume": resume,
            "snapshot_done": bool(row[3]) if row else False,
            "events": int(row[4] or 0) if row else 0,
            "last_event_age_s": round((now_ms - row[5]) / 1000, 1) if row and row[5] else None,
            "updated_at": str(row[6]) if row else None,
            "lag_p50_s": round(lags[name][0] / 1000, 3) if name in lags and lags[name][0] is not None else None,
            "lag_p95_s": round(lags[name][1] / 1000, 3) if name in lags and lags[name][1] is not None else None,
            "tables": {t: {"events": n, "dead_letters": 0} for s, t, n in per_table if s == name},
        }
        for s, t, n in dead:
            if s == name:
                entry["tables"].setdefault(t, {"events": 0, "dead_letters": 0})["dead_letters"] = n
        entry["dead_letters"] = sum(v["dead_letters"] for v in entry["tables"].values())
        entry["schema_changes"] = [
            {"table": t, "kind": k, "ddl": d, "detail": orjson.loads(x) if x else None, "applied_at": str(at)}
            for s, t, k, d, x, at in ddl
            if s == name
        ]
        entry["source_state"] = source_behind(config, resume)
        report.append(entry)
    return report

"""The bulk decoder (`cdc.frame`) against the per-event one: the same messages through both, applied by
the real sink to two DuckDB files, leave the same replica, changelog, dead letters and counts."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cdc.events import UNAVAILABLE, DeadLetter, DebeziumDecoder, DecodeError, position_key
from cdc.frame import BulkDecoder, Message
from cdc.sink import Batch, DuckDBSink

ROW_FIELDS = {
    "orders": [
        {"type": "int64", "field": "id", "optional": False},
        {"type": "string", "field": "name"},
        {"type": "string", "name": "io.debezium.data.Json", "field": "doc"},
        {"type": "int32", "name": "io.debezium.time.Date", "field": "day"},
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "field": "ts"},
        {"type": "double", "field": "ratio"},
        {"type": "boolean", "field": "flag"},
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "field": "amount",
            "parameters": {"scale": "2", "connect.decimal.precision": "12"},
        },
    ],
    "notes": [{"type": "int32", "field": "n"}, {"type": "string", "field": "body"}],
    "docs": [{"type": "int32", "field": "id", "optional": False}, {"type": "string", "field": "body"}],
}
KEYS = {"orders": ["id"], "notes": [], "docs": ["id"]}
NASTY = ["plain", 'O\'Brien "quoted"', "naïve ☃ 🎉", "<b>x</b>; DROP TABLE t;--", "", "line\nbreak\ttab", "\\back\\"]


def envelope(
    table: str,
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    ts: int,
    snapshot: str = "false",
    with_schema: bool = True,
) -> str:
    struct = {"type": "struct", "fields": ROW_FIELDS[table], "optional": True, "name": f"x.{table}.Value"}
    payload = {
        "before": before,
        "after": after,
        "op": op,
        "ts_ms": ts,
        "source": {"connector": "postgresql", "table": table, "schema": "public", "lsn": ts, "snapshot": snapshot},
    }
    if not with_schema:
        return json.dumps(payload)
    schema = {
        "type": "struct",
        "fields": [
            dict(struct, field="before"),
            dict(struct, field="after"),
            {"type": "struct", "fields": [], "field": "source"},
            {"type": "string", "field": "op"},
        ],
    }
    return json.dumps({"schema": schema, "payload": payload})


def row_of(table: str, i: int, rng: random.Random) -> dict[str, Any]:
    if table == "orders":
        return {
            "id": i,
            "name": rng.choice(NASTY),
            "doc": json.dumps({"k": rng.randint(0, 9), "s": rng.choice(NASTY)}),
            "day": rng.randint(-800_000, 2_900_000),
            "ts": rng.randint(-(10**15), 10**15),
            "ratio": rng.choice([0.1, -1.5e-300, 1.7976931348623157e308, 2.0**53 + 1, 0.0]),
            "flag": rng.choice([True, False, None]),
            "amount": rng.choice(["AQ==", "/+s=", "AA==", "f////w=="]),
        }
    if table == "notes":
        return {"n": rng.randint(0, 3), "body": rng.choice(NASTY)}
    return {"id": i, "body": rng.choice(NASTY)}


def stream(seed: int, n: int) -> list[Message]:
    """Inserts, updates, deletes and snapshot reads of three tables (one keyless), and the messages a
    broker also delivers: tombstones, broken JSON (in a key, in a payload after a known schema), unknown
    ops, schemaless events, images and payloads of the wrong JSON type, values that do not decode,
    unchanged-TOAST placeholders, TRUNCATE."""
    rng = random.Random(seed)
    live: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in ROW_FIELDS}
    out: list[Message] = []
    for offset in range(n):
        table = rng.choice(["orders", "orders", "notes", "docs"])
        part = f"kafka:{table}:{offset % 2}"
        key = None
        kind = rng.random()
        rows = live[table]
        if kind < 0.02:
            value: str | None = None  # tombstone
        elif kind < 0.03:
            value = "{not json"
        elif kind < 0.035:
            value = json.dumps({"schema": {}, "payload": {"op": "x", "source": {"table": table}}})
        elif kind < 0.04 and table == "orders":
            bad = row_of(table, 10_000 + offset, rng) | {"day": "not a day"}
            key, value = json.dumps({"id": bad["id"]}), envelope(table, "c", None, bad, offset)
        elif kind < 0.045 and table == "docs" and rows:
            i = rng.choice(list(rows))
            after = rows[i] | {"body": UNAVAILABLE}
            key, value = json.dumps({"id": i}), envelope(table, "u", None, after, offset)
        elif kind < 0.0415 and table == "docs":  # a key that is not JSON, with a good value
            key, value = '{"id": ', envelope(table, "c", None, row_of(table, 1000 + offset, rng), offset)
        elif kind < 0.043:  # a known schema before a payload that is not valid JSON
            good = json.dumps(json.loads(envelope(table, "c", None, row_of(table, 1000 + offset, rng), offset)))
            value = good[: good.index('"payload": ') + 11] + '{"op": "c", "after": {"id": 1,}}}'
        elif kind < 0.044:  # images and a source block that are JSON strings holding objects, a payload that is not one
            shape = rng.choice(["after", "source", "payload"])
            doc = json.loads(envelope(table, "c", None, row_of(table, 1000 + offset, rng), offset))
            if shape == "payload":
                doc["payload"] = 5
            else:
                doc["payload"][shape] = json.dumps(doc["payload"][shape])
            value = json.dumps(doc)
        elif kind < 0.048 and table == "docs":
            value = json.dumps(
                {
                    "payload": {"op": "t", "ts_ms": offset, "source": {"table": table, "lsn": offset}},
                    "schema": {"type": "struct", "fields": []},
                }
            )
            rows.clear()
        else:
            op = rng.choice(["c", "c", "u", "d", "r"]) if rows else "c"
            i = rng.choice(list(rows)) if op in ("u", "d") else (rng.randint(0, 40) if op == "r" else 1000 + offset)
            before = rows.get(i)
            after = None if op == "d" else row_of(table, i, rng)
            if table == "notes":
                before = rng.choice(list(rows.values())) if op in ("u", "d") else None
                i = 0
            if op == "d":
                rows.pop(i, None)
            else:
                rows[i] = after  # type: ignore[assignment]
            key = json.dumps({"id": i}) if KEYS[table] else None
            value = envelope(
                table,
                op,
                before if op in ("u", "d") else None,
                after,
                offset,
                snapshot="true" if op == "r" else "false",
                with_schema=rng.random() > 0.003,
            )
        if value is not None and rng.random() < 0.6:  # as Kafka Connect's JsonConverter writes it: compact bytes
            with contextlib.suppress(json.JSONDecodeError):
                value = json.dumps(json.loads(value), separators=(",", ":"))
        out.append(Message("src", None, part, offset, key, value.encode() if value and rng.random() < 0.5 else value))
    return out


def per_event(messages: list[Message]) -> Batch:
    decoders: dict[str, DebeziumDecoder] = {}
    batch = Batch()
    for m in messages:
        decoder = decoders.setdefault(m.source, DebeziumDecoder(m.source, position_of=_kafka_position))
        try:
            event = decoder.decode(m.key, m.value, partition=m.partition, extra_source={"kafka_offset": m.offset})
        except DecodeError as exc:
            raw = m.value.decode(errors="replace") if isinstance(m.value, bytes) else str(m.value)
            batch.dead_letters.append(DeadLetter(m.source, m.table, str(exc), raw, position_key(m.offset), m.partition))
            continue
        if event is not None:
            batch.events.append(event)
    return batch


def _kafka_position(info: dict[str, Any], partition: str) -> str:
    return position_key(int(info["kafka_offset"]))


def contents(path: Path) -> dict[str, Any]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'replica_src' ORDER BY 1"
            ).fetchall()
        ]
        return {
            "tables": {
                t: sorted(map(repr, con.execute(f'SELECT * FROM replica_src."{t}"').fetchall())) for t in tables
            },
            "columns": con.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'replica_src' ORDER BY ALL"
            ).fetchall(),
            "changelog": con.execute(
                "SELECT source, table_name, op, key, before, after, position, partition, ts_ms, "
                "snapshot FROM cdc.changelog ORDER BY position, partition, table_name"
            ).fetchall(),
            "dead": con.execute(
                "SELECT source, table_name, reason, position, partition FROM cdc.dead_letter "
                "ORDER BY position, partition, reason"
            ).fetchall(),
            "stats": con.execute(
                "SELECT source, table_name, events, dead_letters FROM cdc.table_stats ORDER BY ALL"
            ).fetchall(),
        }
    finally:
        con.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_and_per_event_decoding_apply_the_same(seed: int, tmp_path: Path) -> None:
    messages = stream(seed, 1500)
    bulk = BulkDecoder(lambda s: DebeziumDecoder(s, position_of=_kafka_position))
    stats: dict[str, list[tuple[int, int, int, int]]] = {"bulk": [], "events": []}
    framed = 0
    for name in ("bulk", "events"):
        with DuckDBSink(tmp_path / f"{name}.duckdb") as sink:
            for start in range(0, len(messages), 300):
                chunk = messages[start : start + 300]
                if name == "bulk":
                    frames, events, dead = bulk.decode(chunk)
                    framed += sum(len(f) for f in frames)
                    batch = Batch(frames=frames, events=events, dead_letters=dead)
                else:
                    batch = per_event(chunk)
                for _ in range(2):  # the second time, a replay: all duplicates
                    s = sink.apply(batch)
                    stats[name].append((s.received, s.applied, s.duplicates, s.dead_letters))
    assert framed > len(messages) // 3  # much of the stream went the bulk way
    assert stats["bulk"] == stats["events"]
    bulk_state, event_state = contents(tmp_path / "bulk.duckdb"), contents(tmp_path / "events.duckdb")
    for part in event_state:
        assert bulk_state[part] == event_state[part], part
    assert event_state["dead"] and event_state["tables"]["orders"]


def test_a_known_schema_is_not_parsed_again_and_a_lookalike_is_not_taken_for_it() -> None:
    bulk = BulkDecoder(lambda s: DebeziumDecoder(s, position_of=_kafka_position))
    row = {"id": 1, "body": 'text with ,"payload": inside'}
    compact = json.dumps(json.loads(envelope("docs", "c", None, row, 1)), separators=(",", ":"))
    frames, events, dead = bulk.decode([Message("src", None, "p", 1, '{"id":1}', compact.encode())])
    assert [len(f) for f in frames] == [1] and not events and not dead and len(bulk._known) == 1
    # The same schema again is recognised by its bytes; another schema (whose text holds the marker, which
    # JSON can only hold escaped) is learnt as a second one, and both decode.
    tricky = json.loads(compact)
    tricky["schema"]["doc"] = ',"payload":{"op":"d"}'
    messages = [
        Message("src", None, "p", 2, '{"id":1}', compact.replace('"op":"c"', '"op":"u"').encode()),
        Message("src", None, "q", 3, '{"id":2}', json.dumps(tricky, separators=(",", ":")).replace('"id":1', '"id":2')),
    ]
    frames, events, dead = bulk.decode(messages)
    assert not dead and not events and len(bulk._known) == 2
    after = [json.loads(a) for f in frames for a in f.data["after"].to_pylist()]
    assert sorted(a["id"] for a in after) == [1, 2] and all(a["body"] == row["body"] for a in after)


class _Record:
    """What embedded Debezium hands the handler: a key, a value and a destination (topic) per record."""

    def __init__(self, key: str | None, value: str | None, destination: str) -> None:
        self._key, self._value, self._destination = key, value, destination

    def key(self) -> str | None:
        return self._key

    def value(self) -> str | None:
        return self._value

    def destination(self) -> str:
        return self._destination


def debezium_records(seed: int, n: int) -> list[_Record]:
    """The stream as embedded Debezium delivers it with transaction metadata: BEGIN, changes carrying
    their transaction, END (snapshot reads outside any transaction)."""
    rng = random.Random(seed)
    messages = stream(seed, n)
    records: list[_Record] = []
    at, tx = 0, 0
    while at < len(messages):
        tx += 1
        txid = str(700 + tx)
        records.append(
            _Record(None, json.dumps({"payload": {"status": "BEGIN", "id": f"{txid}:1"}}), "src.transaction")
        )
        reads: list[_Record] = []
        for m in messages[at : at + rng.randint(1, 25)]:
            value = m.value.decode() if isinstance(m.value, bytes) else m.value
            key = m.key if isinstance(m.key, str) or m.key is None else m.key.decode()
            table, read = "x", False
            with contextlib.suppress(json.JSONDecodeError, AttributeError, TypeError, KeyError):
                doc = json.loads(value or "")
                payload = doc.get("payload", doc)
                table, read = payload["source"]["table"], payload.get("op") == "r"
                if not read:
                    payload["transaction"] = {"id": f"{txid}:{m.offset}", "total_order": 1}
                    value = json.dumps(doc, separators=(",", ":") if m.offset % 2 else (", ", ": "))
            (reads if read else records).append(_Record(key, value, f"src.public.{table}"))
            at += 1
        records.append(_Record(None, json.dumps({"payload": {"status": "END", "id": f"{txid}:9"}}), "src.transaction"))
        records += reads  # snapshot reads come between transactions
    return records


@pytest.mark.parametrize("seed", [4, 5])
def test_embedded_debezium_batches_apply_the_same_bulk_and_one_by_one(seed: int, tmp_path: Path) -> None:
    """The PostgreSQL reader decodes a Debezium batch set-based when it can (positions computed in SQL)
    and record by record otherwise (a transaction cut by the batch end is held): the same replica,
    changelog, dead letters and counts either way, batches cut at arbitrary places."""
    from cdc.config import PostgresSource
    from cdc.debezium import DebeziumPostgresReader

    records = debezium_records(seed, 1500)
    config = PostgresSource.model_validate({"kind": "postgres", "port": 5432, "database": "d", "user": "u"})
    rng = random.Random(seed)
    cuts = [0]
    while cuts[-1] < len(records):
        cuts.append(cuts[-1] + rng.choice([7, 40, 120, 300]))
    framed = 0
    for name in ("bulk", "events"):
        reader = DebeziumPostgresReader("src", config, tmp_path / name)
        if name == "events":
            reader.bulk = None
        state: dict[str, Any] = {"snapshot_open": False}
        with DuckDBSink(tmp_path / f"{name}.duckdb") as sink:
            for start, end in zip(cuts, cuts[1:], strict=False):
                rows = [
                    (r.key(), r.value(), r.destination()) for r in records[start:end]
                ]  # as `jvmbatch.rows` reads them
                for batch in reader._to_batches(rows, state):  # noqa: SLF001
                    framed += sum(len(f) for f in batch.frames)
                    sink.apply(batch)
    assert framed > 500, framed  # much of it went the bulk way, and some batches did not
    bulk_state, event_state = contents(tmp_path / "bulk.duckdb"), contents(tmp_path / "events.duckdb")
    for part in event_state:
        if part != "tables":  # which copy of a keyless table's identical rows stays depends on the batches
            assert bulk_state[part] == event_state[part], part
    for table in ROW_FIELDS:
        sql = f"SELECT * EXCLUDE (_cdc_position, _cdc_ts_ms) FROM replica_src.{table} ORDER BY ALL"
        with (
            duckdb.connect(str(tmp_path / "bulk.duckdb"), read_only=True) as a,
            duckdb.connect(str(tmp_path / "events.duckdb"), read_only=True) as b,
        ):
            assert a.execute(sql).fetchall() == b.execute(sql).fetchall(), table
    assert event_state["dead"] and event_state["tables"]["orders"]

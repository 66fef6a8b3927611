"""The decoder on real Debezium 3.6 output (../shared/fixtures/debezium) and on Debezium's logical types.

Values stay in their wire form in events; what they become is asserted in the replica, after the
sink has decoded them (the only place they are converted)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import pytest

from cdc.events import UNAVAILABLE, ChangeEvent, DebeziumDecoder, DecodeError, debezium_position
from cdc.sink import Batch, DuckDBSink

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "debezium"


def replicate(tmp_path: Path, *events: ChangeEvent | None) -> list[dict[str, object]]:
    """Apply events through the real sink; the replica's rows as Python values, in key order."""
    with DuckDBSink(tmp_path / "w.duckdb") as sink:
        stats = sink.apply(Batch(events=[e for e in events if e is not None]))
        assert stats.dead_letters == 0, sink.con.execute("SELECT reason FROM cdc.dead_letter").fetchall()
        first = next(e for e in events if e is not None)
        result = sink.con.execute(f"SELECT * EXCLUDE (_cdc_position, _cdc_ts_ms) FROM replica_src.{first.table}")
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def fixture(name: str) -> tuple[str, str | None]:
    text = (FIXTURES / name).read_text()
    key_part, value_part = text.split("\nVALUE: ", 1)
    value = value_part.strip()
    return key_part.removeprefix("KEY: ").strip(), None if value == "None" else value


def strip_schema(doc: str) -> str:
    return json.dumps(json.loads(doc)["payload"])


@pytest.mark.parametrize("name,connector", [("pg_u.json", "postgresql"), ("mariadb_u.json", "mariadb")])
def test_real_update_with_schema(name: str, connector: str, tmp_path: Path) -> None:
    key, value = fixture(name)
    event = DebeziumDecoder("src").decode(key, value)
    assert event is not None
    assert event.op == "u" and event.table == "projects" and event.key == {"id": 1}
    assert event.before is not None and event.after is not None
    columns = {n: getattr(t, "replica", t) for n, t in event.columns.items()}
    assert columns["budget"] == "DECIMAL(12,2)" and columns["updated_at"] == "TIMESTAMPTZ"
    assert event.source_info["connector"] == connector
    (row,) = replicate(tmp_path, event)
    assert isinstance(row["budget"], decimal.Decimal) and row["budget"] != decimal.Decimal("12500.50")
    assert isinstance(row["updated_at"], dt.datetime) and row["updated_at"].tzinfo is not None


@pytest.mark.parametrize("name", ["pg_u.json", "mariadb_u.json"])
def test_real_update_without_schema(name: str) -> None:
    key, value = fixture(name)
    assert value is not None
    event = DebeziumDecoder("src").decode(strip_schema(key), strip_schema(value))
    assert event is not None and event.key == {"id": 1}
    assert event.after is not None and event.after["name"].endswith("(renamed)")
    assert event.columns == {}


@pytest.mark.parametrize("name", ["pg_tombstone.json", "mariadb_tombstone.json"])
def test_tombstones_are_skipped(name: str) -> None:
    key, value = fixture(name)
    assert value is None
    assert DebeziumDecoder("src").decode(key, value) is None


def test_positions_order_postgres_by_commit_then_lsn() -> None:
    first = debezium_position({"connector": "postgresql", "lsn": 900, "sequence": '["100","900"]'})
    later_tx_lower_lsn = debezium_position({"connector": "postgresql", "lsn": 500, "sequence": '["950","500"]'})
    assert later_tx_lower_lsn > first
    a = debezium_position({"connector": "mariadb", "file": "mysql-bin.000004", "pos": 3193, "row": 0})
    b = debezium_position({"connector": "mariadb", "file": "mysql-bin.000010", "pos": 4, "row": 0})
    assert b > a


def _envelope(fields: list[dict], after: dict, op: str = "c", before: dict | None = None) -> str:
    struct = {"type": "struct", "fields": fields, "optional": True, "name": "x.Value"}
    schema = {
        "type": "struct",
        "fields": [
            dict(struct, field="before"),
            dict(struct, field="after"),
            {"type": "struct", "fields": [], "field": "source"},
            {"type": "string", "field": "op"},
        ],
    }
    payload = {
        "before": before,
        "after": after,
        "op": op,
        "ts_ms": 1,
        "source": {"connector": "postgresql", "table": "t", "schema": "public", "lsn": 5, "sequence": None},
    }
    return json.dumps({"schema": schema, "payload": payload})


def test_logical_types(tmp_path: Path) -> None:
    fields = [
        {"type": "int32", "field": "id"},
        {"type": "int32", "name": "io.debezium.time.Date", "field": "d"},
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "field": "ts"},
        {"type": "int64", "name": "io.debezium.time.Timestamp", "field": "ts_ms"},
        {"type": "int64", "name": "io.debezium.time.MicroTime", "field": "t"},
        {"type": "int32", "name": "io.debezium.time.Time", "field": "t_ms"},
        {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "field": "zts"},
        {
            "type": "struct",
            "name": "io.debezium.data.VariableScaleDecimal",
            "field": "vsd",
            "fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}],
        },
        {"type": "string", "name": "io.debezium.data.Json", "field": "j"},
        {"type": "string", "name": "io.debezium.data.Enum", "field": "e"},
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "field": "dec",
            "parameters": {"scale": "3", "connect.decimal.precision": "10"},
        },
    ]
    after = {
        "id": 7,
        "d": 20000,
        "ts": 1_700_000_000_123_456,
        "ts_ms": 1_700_000_000_123,
        "t": 3_723_000_001,
        "t_ms": 3_723_000,
        "zts": "2026-11-27T23:47:17.705443Z",
        "vsd": {"scale": 2, "value": "ExMC"},
        "j": '{"a": 1}',
        "e": "approved",
        "dec": "/+s=",
    }
    event = DebeziumDecoder("s").decode('{"id": 7}', _envelope(fields, after))
    assert event is not None and event.after is not None
    assert event.after == after  # wire values until the sink
    event.source = "src"
    (row,) = replicate(tmp_path, event)
    assert row["d"] == dt.date(2024, 10, 4)
    assert row["ts"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123456)
    assert row["ts_ms"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123000)
    assert row["t"] == dt.time(1, 2, 3, 1) and row["t_ms"] == dt.time(1, 2, 3)
    assert row["zts"] == dt.datetime(2026, 11, 27, 23, 47, 17, 705443, tzinfo=dt.UTC)
    assert row["vsd"] == "12500.50"  # variable scale: exact digits as text
    assert row["dec"] == decimal.Decimal("-0.021")  # 0xFFEB, two's complement
    assert row["j"] == '{"a": 1}' and row["e"] == "approved"
    columns = {n: getattr(t, "replica", t) for n, t in event.columns.items()}
    assert columns["j"] == "JSON" and columns["d"] == "DATE" and columns["ts"] == "TIMESTAMP"
    assert columns["dec"] == "DECIMAL(10,3)"


def test_toast_placeholder_passes_through_for_the_sink() -> None:
    fields = [{"type": "int32", "field": "id"}, {"type": "string", "field": "notes"}]
    event = DebeziumDecoder("s").decode('{"id": 1}', _envelope(fields, {"id": 1, "notes": UNAVAILABLE}, op="u"))
    assert event is not None and event.after == {"id": 1, "notes": UNAVAILABLE}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{not json", "not JSON"),
        ('{"payload": {"op": "x", "source": {"table": "t"}}, "schema": {}}', "unknown op"),
        ('{"op": "c", "after": {"id": 1}}', "no source block"),
        ('{"op": "d", "before": null, "source": {"table": "t"}}', "delete without a before image"),
        ('{"op": "c", "after": {"id": 1}, "source": {"table": "t"}}', "key is not a JSON object"),
    ],
)
def test_malformed_events_raise_decode_error(value: str, reason: str) -> None:
    key = "[1]" if "key is not" in reason else '{"id": 1}'
    with pytest.raises(DecodeError, match=reason):
        DebeziumDecoder("s").decode(key, value)

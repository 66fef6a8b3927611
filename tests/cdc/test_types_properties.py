"""Property tests: random values of each type through wire form -> DuckDB decode -> replica, and back
out as canonical text, compared with what Python computes independently from the original value."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import struct
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc.events import ChangeEvent, position_key
from cdc.frame import EventFrame
from cdc.sink import Batch, DuckDBSink
from cdc.types import ColumnType, connect_type
from cdc.types.mysql import my_type, wire_row
from cdc.types.postgres import from_debezium

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXACT = decimal.Context(prec=200)


@pytest.fixture(scope="module")
def sink() -> Iterator[DuckDBSink]:
    with tempfile.TemporaryDirectory() as tmp, DuckDBSink(Path(tmp) / "w.duckdb") as sink:
        yield sink


def roundtrip(sink: DuckDBSink, column: ColumnType, wires: list[Any], read: str = "v") -> list[Any]:
    """Apply one insert per wire value; the replica's `read` expression (over column `v`) per row, in order."""
    table = "t" + uuid.uuid4().hex[:12]
    columns: dict[str, ColumnType | str] = {"id": "INTEGER", "v": column}
    events = [
        ChangeEvent("p", table, "r", {"id": i}, None, {"id": i, "v": w}, position_key(1, i), 0, columns=columns)
        for i, w in enumerate(wires)
    ]
    stats = sink.apply(Batch(events=events))
    assert stats.dead_letters == 0, sink.con.execute("SELECT reason FROM cdc.dead_letter").fetchall()[-3:]
    got = [r[0] for r in sink.con.execute(f"SELECT {read} FROM replica_p.{table} ORDER BY id").fetchall()]
    # The same changes as a frame (the bulk decoder's form) decode to the same values.
    frame = EventFrame.from_events([replace(e, table=table + "_f") for e in events])
    assert sink.apply(Batch(frames=[frame])).dead_letters == 0
    framed = [r[0] for r in sink.con.execute(f"SELECT {read} FROM replica_p.{table}_f ORDER BY id").fetchall()]
    assert framed == got or all(_same(a, b) for a, b in zip(framed, got, strict=True))
    return got


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def debezium(connect: str, name: str | None = None, source: str | None = None, **params: str) -> ColumnType:
    field: dict[str, Any] = {"type": connect, "field": "v"}
    if name:
        field["name"] = name
    if source:
        params["__debezium.source.column.type"] = source
    if params:
        field["parameters"] = params
    return from_debezium(field) if source else connect_type(field)


digits = st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: format(d, "f"))


@PROPERTY
@given(st.lists(digits | st.just("NaN"), min_size=1, max_size=20))
def test_unconstrained_numeric_keeps_every_digit(sink: DuckDBSink, values: list[str]) -> None:
    column = debezium("string", source="NUMERIC", **{"__debezium.source.column.length": "0"})
    assert roundtrip(sink, column, values) == values


@PROPERTY
@given(st.integers(0, 38), st.lists(st.integers(-(10**38) + 1, 10**38 - 1), min_size=1, max_size=20))
def test_decimal_up_to_38_digits_is_exact_in_both_debezium_encodings(
    sink: DuckDBSink, scale: int, unscaled: list[int]
) -> None:
    expected = [decimal.Decimal(u).scaleb(-scale, EXACT) for u in unscaled]
    as_text = [format(d, "f") for d in expected]
    as_bytes = [
        base64.b64encode(u.to_bytes(max(1, (u.bit_length() + 8) // 8), "big", signed=True)).decode() for u in unscaled
    ]
    precise = debezium(
        "bytes", "org.apache.kafka.connect.data.Decimal", scale=str(scale), **{"connect.decimal.precision": "38"}
    )
    as_string = debezium(
        "string",
        source="NUMERIC",
        **{"__debezium.source.column.length": "38", "__debezium.source.column.scale": str(scale)},
    )
    assert roundtrip(sink, precise, as_bytes) == expected  # decimal.handling.mode=precise
    assert roundtrip(sink, as_string, as_text) == expected  # decimal.handling.mode=string, as coexist runs it


@PROPERTY
@given(st.lists(st.floats(), min_size=1, max_size=20))
def test_doubles_keep_every_bit_nan_and_infinities(sink: DuckDBSink, values: list[float]) -> None:
    # Debezium writes NaN and the infinities as strings, every other double as a JSON number.
    wires: list[Any] = [
        "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else v for v in values
    ]
    back = roundtrip(sink, debezium("double"), wires)
    for original, replica in zip(values, back, strict=True):
        assert (math.isnan(original) and math.isnan(replica)) or struct.pack(">d", original) == struct.pack(
            ">d", replica
        )


@PROPERTY
@given(st.lists(st.integers(-2_440_000, 2_000_000_000), min_size=1, max_size=20))
def test_dates_from_epoch_days_including_bc(sink: DuckDBSink, days: list[int]) -> None:
    column = debezium("int32", "io.debezium.time.Date", source="DATE")
    back = roundtrip(sink, column, days, "date_diff('day', DATE '1970-01-01', v)")
    assert back == days


@PROPERTY
@given(st.lists(st.integers(-210_866_803_200_000_000, 9_223_371_331_200_000_000), min_size=1, max_size=20))
def test_timestamps_from_epoch_micros(sink: DuckDBSink, micros: list[int]) -> None:
    column = debezium("int64", "io.debezium.time.MicroTimestamp", source="TIMESTAMP")
    assert roundtrip(sink, column, micros, "epoch_us(v)") == micros


@PROPERTY
@given(st.lists(st.integers(0, 86_400_000_000), min_size=1, max_size=20))
def test_times_of_day_including_24_00(sink: DuckDBSink, micros: list[int]) -> None:
    column = debezium("int64", "io.debezium.time.MicroTime", source="TIME")
    expected = [
        f"{m // 3_600_000_000:02d}:{m // 60_000_000 % 60:02d}:{m // 1_000_000 % 60:02d}"
        + (f".{m % 1_000_000:06d}".rstrip("0") if m % 1_000_000 else "")
        for m in micros
    ]
    assert roundtrip(sink, column, micros, "CAST(v AS VARCHAR)") == expected


intervals = st.tuples(
    st.integers(-170_000_000, 170_000_000),  # years
    st.integers(-11, 11),  # months
    st.integers(-1_000_000, 1_000_000),  # days
    st.integers(-2_000_000, 2_000_000),  # hours
    st.integers(-59, 59),  # minutes
    st.integers(-59_999_999, 59_999_999),  # microseconds of the minute
)


@PROPERTY
@given(st.lists(intervals, min_size=1, max_size=20))
def test_intervals_keep_months_days_and_microseconds_apart(sink: DuckDBSink, parts: list[tuple[int, ...]]) -> None:
    wires = [
        f"P{y}Y{mo}M{d}DT{h}H{mi}M{'-' if us < 0 else ''}{abs(us) // 1_000_000}.{abs(us) % 1_000_000:06d}S"
        for y, mo, d, h, mi, us in parts
    ]
    column = debezium("string", "io.debezium.time.Interval", source="INTERVAL")
    read = (
        "[datepart('year', v) * 12 + datepart('month', v), datepart('day', v), datepart('hour', v)::BIGINT "
        "* 3600000000 + datepart('minute', v)::BIGINT * 60000000 + datepart('microseconds', v)]"
    )
    got = roundtrip(sink, column, wires, read)
    expected = [[y * 12 + mo, d, h * 3_600_000_000 + mi * 60_000_000 + us] for y, mo, d, h, mi, us in parts]
    assert got == expected


@PROPERTY
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")), min_size=1))
def test_text_of_any_script(sink: DuckDBSink, values: list[str]) -> None:
    assert roundtrip(sink, debezium("string", source="TEXT"), values) == values


@PROPERTY
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_bytes_of_every_value(sink: DuckDBSink, values: list[bytes]) -> None:
    wires = [base64.b64encode(v).decode() for v in values]
    assert roundtrip(sink, debezium("bytes", source="BYTEA"), wires) == values


@PROPERTY
@given(st.lists(st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=8), min_size=1, max_size=20))
def test_integer_arrays_with_nulls(sink: DuckDBSink, values: list[list[int | None]]) -> None:
    field = {"type": "array", "items": {"type": "int32"}, "parameters": {"__debezium.source.column.type": "_INT4"}}
    assert roundtrip(sink, from_debezium(field), values) == values


# ---------------------------------------------------------------- MariaDB/MySQL wire forms


@PROPERTY
@given(
    st.lists(
        st.timedeltas(
            dt.timedelta(hours=-838, minutes=-59, seconds=-59), dt.timedelta(hours=838, minutes=59, seconds=59)
        ),
        min_size=1,
        max_size=20,
    )
)
def test_mysql_time_is_a_duration(sink: DuckDBSink, values: list[dt.timedelta]) -> None:
    kind = my_type("time", "time(6)")
    wires = [wire_row({"v": kind}, {"v": v})["v"] for v in values]
    read = (
        "datepart('hour', v)::BIGINT * 3600000000 + datepart('minute', v)::BIGINT * 60000000 "
        "+ datepart('microseconds', v)"
    )
    assert roundtrip(sink, kind.column, wires, read) == [v // dt.timedelta(microseconds=1) for v in values]


@PROPERTY
@given(st.lists(st.decimals(min_value=-(10**35) + 1, max_value=10**35 - 1, places=30), min_size=1, max_size=20))
def test_mysql_decimal_65_30_keeps_every_digit(sink: DuckDBSink, values: list[decimal.Decimal]) -> None:
    kind = my_type("decimal", "decimal(65,30)", 65, 30)
    wires = [wire_row({"v": kind}, {"v": v})["v"] for v in values]
    back = roundtrip(sink, kind.column, wires)
    assert [decimal.Decimal(b) for b in back] == values
    assert all("E" not in b for b in back)


@PROPERTY
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.integers(0, 2**n - 1), min_size=1))))
def test_mysql_bits_keep_their_width(sink: DuckDBSink, case: tuple[int, list[int]]) -> None:
    width, values = case
    kind = my_type("bit", f"bit({width})")
    # The snapshot's client gives bytes; the binlog library a string of digits: both are the same bits.
    from_bytes = [wire_row({"v": kind}, {"v": v.to_bytes((width + 7) // 8, "big")})["v"] for v in values]
    from_digits = [wire_row({"v": kind}, {"v": format(v, "b").rjust(width, "0")})["v"] for v in values]
    assert from_bytes == from_digits
    back = roundtrip(sink, kind.column, from_bytes, "CAST(v AS VARCHAR)")
    assert [int(b, 2) for b in back] == values and all(len(b) == width for b in back)

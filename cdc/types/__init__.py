"""Column types: what a source column becomes in the replica, and how both sides are compared.

Readers hand over *wire values*: what the source's log carries, as JSON (Debezium's encodings for
PostgreSQL, the binlog's values as exact text for MariaDB/MySQL). A `ColumnType` says, per
column, how DuckDB turns that wire value into the replica value (`decode`, a SQL expression run
over a whole batch at once), and how a replica value is written as canonical text for
`cdc verify` (`canonical`, DuckDB SQL; the dialect module holds the source side's twin).
Conversion happens per column inside DuckDB, never per value in Python. A wire value that does
not decode is not stored as NULL or as something else: the event goes to the dead-letter table.

One module per dialect (`postgres`, `mysql`) owns its source types; this module holds what they
share and the mapping for Debezium's generic Kafka Connect types (any connector's topics).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

UNAVAILABLE = "__debezium_unavailable_value"
"""Debezium's placeholder for an unchanged TOASTed value (text, and inside arrays)."""
UNAVAILABLE_B64 = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="
"""The same placeholder in a `bytes` field (base64 of its UTF-8)."""


UNAVAILABLE_CODES = list(UNAVAILABLE.encode())
"""The placeholder in an array of numbers: its bytes, one element each."""

PLACEHOLDER = (
    r"__debezium_unavailable_value|X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==|"
    r"95,\s*95,\s*100,\s*101,\s*98,\s*101,\s*122,\s*105,\s*117,\s*109"
)
"""A regular expression for the placeholder in any of its encodings, in a row's JSON text (a false
alarm only costs speed)."""


def is_unavailable(value: Any) -> bool:
    if isinstance(value, list):
        return UNAVAILABLE in value or value == UNAVAILABLE_CODES
    return value in (UNAVAILABLE, UNAVAILABLE_B64)


@dataclass(frozen=True, slots=True)
class ColumnType:
    """One column's type in every form coexist needs.

    `decode` is DuckDB SQL over `{v}` (the wire value as text) or `{j}` (as JSON) giving the
    replica value, or NULL when the wire value cannot be stored exactly. `canonical` is DuckDB SQL
    over `{c}` (a replica column) giving the text `cdc verify` compares with the source's.
    """

    source: str
    replica: str
    decode: str
    canonical: str = "CAST({c} AS VARCHAR)"
    note: str = ""
    connect: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    prepare: Callable[[Any], Any] | None = field(default=None, compare=False, hash=False)
    """For the few wire encodings SQL cannot read (Debezium's base64 decimals and bit sets): a
    per-value step in Python before the batch goes to DuckDB. Exact; never through a float or
    a 28-digit decimal context."""

    def decode_sql(self, text: str, json: str) -> str:
        return self.decode.replace("{v}", text).replace("{j}", json)

    def canonical_sql(self, column: str) -> str:
        return self.canonical.replace("{c}", column)


CANON_TEXT = "CAST({c} AS VARCHAR)"
CANON_FLOAT = (
    "CASE WHEN isnan({c}) THEN 'NaN' WHEN {c} = 'inf'::DOUBLE THEN 'Infinity' WHEN {c} = '-inf'::DOUBLE "
    "THEN '-Infinity' ELSE printf('%.16e', CAST({c} AS DOUBLE)) END"
)
"""17 significant digits in exponent form: exact for every double, and printable by both sources."""
CANON_TIMESTAMP = "CASE WHEN isfinite({c}) THEN CAST(epoch_us({c}) AS VARCHAR) ELSE CAST({c} AS VARCHAR) END"
CANON_INTERVAL = (
    "CAST(datepart('year', {c}) * 12 + datepart('month', {c}) AS VARCHAR) || ',' || "
    "CAST(datepart('day', {c}) AS VARCHAR) || ',' || CAST(datepart('hour', {c})::BIGINT * 3600000000 + "
    "datepart('minute', {c})::BIGINT * 60000000 + datepart('microseconds', {c}) AS VARCHAR)"
)
CANON_BLOB = "lower(hex({c}))"
CANON_BOOL = "CASE WHEN {c} THEN 't' WHEN NOT {c} THEN 'f' END"
CANON_LIST = "CAST(to_json({c}) AS VARCHAR)"

REPLICA_CANONICAL = {
    "FLOAT": CANON_FLOAT,
    "DOUBLE": CANON_FLOAT,
    "BOOLEAN": CANON_BOOL,
    "BLOB": CANON_BLOB,
    "TIMESTAMP": CANON_TIMESTAMP,
    "TIMESTAMPTZ": CANON_TIMESTAMP,
    "INTERVAL": CANON_INTERVAL,
}

# ---------------------------------------------------------------- Kafka Connect's generic types

_CONNECT = {
    "int8": "SMALLINT",
    "int16": "SMALLINT",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float32": "FLOAT",
    "float": "FLOAT",
    "float64": "DOUBLE",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "string": "VARCHAR",
}

ISO_DURATION = (
    r"^P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)W)?(?:(-?\d+)D)?(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?[\d.]+)S)?)?$"
)
MACROS = r"""
CREATE OR REPLACE TEMP MACRO cx_micros_time(m) AS (
    CASE WHEN m BETWEEN 0 AND 86400000000 THEN TRY_CAST(printf('%02d:%02d:%02d.%06d', m // 3600000000,
        m // 60000000 % 60, m // 1000000 % 60, m % 1000000) AS TIME) END);
CREATE OR REPLACE TEMP MACRO cx_iso_interval(t) AS (
    CASE WHEN regexp_full_match(t, '{iso}') THEN
    (SELECT to_months(coalesce(TRY_CAST(m.y AS BIGINT), 0) * 12 + coalesce(TRY_CAST(m.mo AS BIGINT), 0))
        + to_days(coalesce(TRY_CAST(m.w AS BIGINT), 0) * 7 + coalesce(TRY_CAST(m.d AS BIGINT), 0))
        + to_microseconds(coalesce(TRY_CAST(m.h AS BIGINT), 0) * 3600000000
            + coalesce(TRY_CAST(m.mi AS BIGINT), 0) * 60000000
            + CAST(coalesce(TRY_CAST(m.s AS DECIMAL(38,9)), 0) * 1000000 AS BIGINT))
     FROM (SELECT regexp_extract(t, '{iso}', ['y', 'mo', 'w', 'd', 'h', 'mi', 's']) AS m)) END);
"""
"""DuckDB macros the decode expressions use; created on every connection that decodes."""
MACROS = MACROS.replace("{iso}", ISO_DURATION)

EPOCH_DAYS = "DATE '1970-01-01' + TRY_CAST({v} AS INTEGER)"
MICRO_TS = "make_timestamp(TRY_CAST({v} AS BIGINT))"
MILLI_TS = "make_timestamp(TRY_CAST({v} AS BIGINT) * 1000)"
DIGITS = r"-?[0-9]+(\.[0-9]+)?"


def unscaled_text(raw: Any, scale: int) -> str | None:
    """Debezium's precise decimal (base64 of the two's-complement unscaled value) as exact digits."""
    if not isinstance(raw, str):
        return None if raw is None else str(raw)
    try:
        unscaled = int.from_bytes(base64.b64decode(raw, validate=True), "big", signed=True)
    except ValueError:
        return None  # not base64: the decode finds no value and the event is dead-lettered
    digits = str(abs(unscaled)).rjust(scale + 1, "0")
    sign = "-" if unscaled < 0 else ""
    return f"{sign}{digits[: len(digits) - scale]}.{digits[len(digits) - scale :]}" if scale else f"{sign}{digits}"


def _variable_scale(value: Any) -> Any:
    if isinstance(value, dict):
        return unscaled_text(value.get("value"), int(value.get("scale") or 0))
    return value


def bits_text(raw: Any, length: int) -> Any:
    """Debezium's `Bits` (little-endian bytes of the bit string's value) as the bit string itself."""
    if not isinstance(raw, str):
        return raw
    try:
        value = int.from_bytes(base64.b64decode(raw, validate=True), "little")
    except ValueError:
        return raw
    text = format(value, "b") if value else ""
    return text.rjust(length if 0 < length < 2**31 - 1 else max(len(text), 1), "0")


def decimal_type(source: str, precision: int, scale: int, connect: dict[str, Any] | None = None) -> ColumnType:
    """DECIMAL(p,s) when DuckDB holds it exactly (p <= 38), else the exact digits as text."""
    if 0 < precision <= 38 and 0 <= scale <= precision:
        return ColumnType(
            source,
            f"DECIMAL({precision},{scale})",
            f"TRY_CAST({{v}} AS DECIMAL({precision},{scale}))",
            CANON_TEXT,
            connect=connect or {},
        )
    return ColumnType(
        source,
        "VARCHAR",
        f"CASE WHEN regexp_full_match({{v}}, '{DIGITS}') THEN {{v}} END",
        CANON_TEXT,
        "exact digits as text (wider than DuckDB's 38)",
        connect or {},
    )


def connect_type(field_schema: dict[str, Any]) -> ColumnType:
    """A column of any Debezium connector, from its Kafka Connect schema alone."""
    name = field_schema.get("name")
    kind = str(field_schema.get("type", "string"))
    params = field_schema.get("parameters") or {}
    schema = {k: v for k, v in field_schema.items() if k not in ("field", "optional")}

    def typed(source: str, replica: str, decode: str, note: str = "") -> ColumnType:
        return ColumnType(source, replica, decode, REPLICA_CANONICAL.get(replica, CANON_TEXT), note, schema)

    if name == "org.apache.kafka.connect.data.Decimal":
        scale = int(params.get("scale", 0))
        precision = int(params.get("connect.decimal.precision", 0) or 0)
        column = decimal_type(f"decimal({precision},{scale})", precision, scale, schema)
        return replace(column, prepare=lambda v: unscaled_text(v, scale))
    if name == "io.debezium.data.VariableScaleDecimal":
        return ColumnType(
            "numeric",
            "VARCHAR",
            f"CASE WHEN regexp_full_match({{v}}, '{DIGITS}') THEN {{v}} END",
            CANON_TEXT,
            "exact digits as text",
            schema,
            _variable_scale,
        )
    if name in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
        return typed("date", "DATE", EPOCH_DAYS)
    if name == "io.debezium.time.MicroTime":
        return typed("time", "TIME", "cx_micros_time(TRY_CAST({v} AS BIGINT))")
    if name in ("io.debezium.time.Time", "org.apache.kafka.connect.data.Time"):
        return typed("time", "TIME", "cx_micros_time(TRY_CAST({v} AS BIGINT) * 1000)")
    if name == "io.debezium.time.NanoTime":
        return typed("time", "TIME", "cx_micros_time(TRY_CAST({v} AS BIGINT) // 1000)", "nanoseconds to microseconds")
    if name == "io.debezium.time.MicroTimestamp":
        return typed("timestamp", "TIMESTAMP", MICRO_TS)
    if name in ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"):
        return typed("timestamp", "TIMESTAMP", MILLI_TS)
    if name == "io.debezium.time.NanoTimestamp":
        return typed("timestamp", "TIMESTAMP", "make_timestamp(TRY_CAST({v} AS BIGINT) // 1000)", "ns to µs")
    if name == "io.debezium.time.ZonedTimestamp":
        return typed("timestamptz", "TIMESTAMPTZ", "TRY_CAST({v} AS TIMESTAMPTZ)")
    if name == "io.debezium.time.ZonedTime":
        return ColumnType(
            "timetz",
            "TIMETZ",
            "TRY_CAST({v} AS TIMETZ)",
            "CAST(CAST({c} AS TIME) AS VARCHAR)",
            "normalised to UTC by Debezium",
            schema,
        )
    if name == "io.debezium.time.Interval":
        return typed("interval", "INTERVAL", "cx_iso_interval({v})")
    if name == "io.debezium.time.MicroDuration":
        return typed(
            "interval",
            "INTERVAL",
            "to_microseconds(TRY_CAST({v} AS BIGINT))",
            "Debezium's micro-duration counts a month as 30.4375 days: use interval.handling.mode=string",
        )
    if name == "io.debezium.time.Year":
        return typed("year", "SMALLINT", "TRY_CAST({v} AS SMALLINT)")
    if name == "io.debezium.data.Json":
        return typed("json", "JSON", "CASE WHEN json_valid({v}) THEN {v} END")
    if name == "io.debezium.data.Uuid":
        return typed("uuid", "UUID", "TRY_CAST({v} AS UUID)")
    if name == "io.debezium.data.Bits":
        length = int(params.get("length", 0) or 0)
        return replace(typed("bit", "BIT", "TRY_CAST({v} AS BIT)"), prepare=lambda v: bits_text(v, length))
    if name == "io.debezium.data.geometry.Point":
        decode = (
            "struct_pack(x := TRY_CAST(json_extract_string({j}, '$.x') AS DOUBLE), "
            "y := TRY_CAST(json_extract_string({j}, '$.y') AS DOUBLE))"
        )
        return typed("point", "STRUCT(x DOUBLE, y DOUBLE)", decode)
    if name in ("io.debezium.data.geometry.Geometry", "io.debezium.data.geometry.Geography"):
        return typed("geometry", "BLOB", "TRY(from_base64(json_extract_string({j}, '$.wkb')))", "WKB")
    if kind == "bytes":
        return typed("bytes", "BLOB", "TRY(from_base64({v}))")
    if kind == "array":
        return list_of(connect_type(field_schema.get("items") or {"type": "string"}), schema)
    if kind in ("map", "struct"):
        return typed(kind, "JSON", "CAST({j} AS VARCHAR)", "as JSON")
    replica = _CONNECT.get(kind, "VARCHAR")
    return typed(kind, replica, f"TRY_CAST({{v}} AS {replica})")


def list_of(element: ColumnType, connect: dict[str, Any] | None = None) -> ColumnType:
    """A one-dimensional array of `element`; a nested array does not decode (dead letter)."""
    inner = element.decode_sql("json_extract_string(e, '$')", "e")
    ok = "json_type(e) NOT IN ('ARRAY', 'OBJECT')" if not element.replica.endswith("JSON") else "true"
    decode = (
        f"CASE WHEN json_type({{j}}) = 'ARRAY' AND coalesce(list_bool_and(list_transform(CAST({{j}} AS JSON[]), "
        f"lambda e: e IS NULL OR json_type(e) = 'NULL' OR ({ok} AND ({inner}) IS NOT NULL))), true) "
        f"THEN list_transform(CAST({{j}} AS JSON[]), lambda e: CASE WHEN json_type(e) <> 'NULL' THEN {inner} END) END"
    )
    prepare = None
    if element.prepare is not None:
        each = element.prepare
        prepare = lambda v: [None if x is None else each(x) for x in v] if isinstance(v, list) else v  # noqa: E731
    return ColumnType(
        f"{element.source}[]", f"{element.replica}[]", decode, CANON_LIST, "one-dimensional", connect or {}, prepare
    )


def of_replica(replica: str) -> ColumnType:
    """A column known only by its replica type (schemaless events; an existing replica column)."""
    replica = replica.upper()
    if replica == "BLOB":
        return ColumnType("bytes", "BLOB", "TRY(from_base64({v}))", CANON_BLOB)
    if replica.endswith("[]") or replica.startswith(("STRUCT", "MAP")):
        return ColumnType(replica.lower(), replica, f"TRY_CAST({{j}} AS {replica})", CANON_LIST)
    if replica == "JSON":
        return ColumnType("json", "JSON", "CASE WHEN json_valid({v}) THEN {v} END", CANON_TEXT)
    return ColumnType(
        replica.lower(), replica, f"TRY_CAST({{v}} AS {replica})", REPLICA_CANONICAL.get(replica, CANON_TEXT)
    )


def infer(value: Any) -> ColumnType:
    """A column of an event without a schema, from its first non-null wire value."""
    if isinstance(value, bool):
        return of_replica("BOOLEAN")
    if isinstance(value, int):
        return of_replica("BIGINT")
    if isinstance(value, float):
        return of_replica("DOUBLE")
    if isinstance(value, dict | list):
        return ColumnType("json", "JSON", "CAST({j} AS VARCHAR)", CANON_TEXT)
    return of_replica("VARCHAR")


REPLICA_CONNECT_NAME = "io.coexist.replica"


def connect_schema(kind: ColumnType) -> dict[str, Any]:
    """The Kafka Connect field schema a column is published with."""
    if kind.connect:
        return kind.connect
    return {"type": "string", "name": REPLICA_CONNECT_NAME, "parameters": {"replica": kind.replica}}

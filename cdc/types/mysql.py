"""MariaDB/MySQL types: the wire form of binlog and snapshot values, the replica type, canonical text.

The binlog library and the snapshot's client decode values into Python objects; `to_wire` turns
each into an exact JSON value (decimals as their digits, times as microseconds, bytes as base64,
bits as a bit string, sets in their declared order), and DuckDB does the rest per column.
Where the library returns None for something that is not NULL (a zero date, an empty set),
its own reason (`none_sources`) restores the truth: `''` for the empty set, and a zero date is
kept as the text `0000-00-00`, which no DATE holds, so the event is dead-lettered, never NULL.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cdc.types import CANON_BLOB, CANON_FLOAT, CANON_TEXT, ColumnType, decimal_type

ZERO_DATE = "0000-00-00"
CONNECT_NAME = "io.coexist.mysql"
"""The Kafka Connect schema name of a MariaDB/MySQL column published by coexist (wire values as here)."""

MY_TIME_MICROS = (
    "CAST(CAST(TRUNCATE(TIME_TO_SEC({c}), 0) AS SIGNED) * 1000000 + IF({c} < 0, -1, 1) * MICROSECOND({c}) AS CHAR)"
)
DUCK_TIME_MICROS = (
    "CAST(datepart('hour', {c})::BIGINT * 3600000000 + datepart('minute', {c})::BIGINT * 60000000 "
    "+ datepart('microseconds', {c}) AS VARCHAR)"
)


@dataclass(frozen=True, slots=True)
class MyType:
    """One MariaDB/MySQL column type.

    `canonical` is MariaDB SQL over `{c}`; None means the column is shipped to DuckDB as
    `select` text and compared there (doubles: MariaDB prints them in its own shortest format).
    """

    column: ColumnType
    to_wire: Callable[[Any], Any] | None = None
    canonical: str | None = "CAST({c} AS CHAR)"
    select: str = "{c}"


def _text(value: Any) -> Any:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes | bytearray) else value


def _bytes(width: int = 0) -> Callable[[Any], Any]:
    def wire(value: Any) -> Any:
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogateescape")
        if width and len(value) < width:
            value = value + b"\x00" * (width - len(value))  # BINARY(n) is right-padded with zero bytes
        return base64.b64encode(value).decode()

    return wire


def _decimal(value: Any) -> Any:
    return format(value, "f") if isinstance(value, decimal.Decimal) else value


def _float(value: Any) -> Any:
    return repr(float(value)) if isinstance(value, float | int | decimal.Decimal) else value


def _date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return _text(value)


def _micros(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    return value


def _bits(width: int) -> Callable[[Any], Any]:
    def wire(value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            value = format(int.from_bytes(value, "big"), "b")
        elif isinstance(value, int):
            value = format(value, "b")
        return str(value).rjust(width, "0")[-width:] if width else str(value)

    return wire


def _set(members: list[str]) -> Callable[[Any], Any]:
    order = {m: i for i, m in enumerate(members)}

    def wire(value: Any) -> Any:
        if isinstance(value, set | frozenset | list | tuple):
            return ",".join(sorted((_text(v) for v in value), key=lambda m: order.get(m, len(order))))
        return _text(value)

    return wire


def _year(value: Any) -> Any:
    return 0 if value == 1900 else value  # the binlog library reads YEAR 0000 as 1900 (not a valid YEAR)


def _members(column_type: str) -> list[str]:
    inside = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    return [m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", inside)]


def _t(source: str, replica: str, decode: str, canonical: str = CANON_TEXT, note: str = "") -> ColumnType:
    return ColumnType(source, replica, decode, canonical, note)


_INTS = {
    "tinyint": ("TINYINT", "UTINYINT"),
    "smallint": ("SMALLINT", "USMALLINT"),
    "mediumint": ("INTEGER", "UINTEGER"),
    "int": ("INTEGER", "UINTEGER"),
    "bigint": ("BIGINT", "UBIGINT"),
}


def my_type(data_type: str, column_type: str, precision: int | None = None, scale: int | None = None) -> MyType:
    """The MyType of a column, from `information_schema.columns` (`data_type`, `column_type`)."""
    found = _my_type(data_type, column_type, precision, scale)
    numeric = found.column.replica in _NUMERIC_WIRE
    connect = {
        "type": "int64" if numeric else "string",
        "name": CONNECT_NAME,
        "parameters": {
            "data_type": data_type,
            "column_type": column_type,
            "precision": "" if precision is None else str(precision),
            "scale": "" if scale is None else str(scale),
        },
    }
    return replace(found, column=replace(found.column, connect=connect))


_NUMERIC_WIRE = {"TINYINT", "UTINYINT", "SMALLINT", "USMALLINT", "INTEGER", "UINTEGER", "BIGINT", "UBIGINT", "INTERVAL"}


def _my_type(data_type: str, column_type: str, precision: int | None, scale: int | None) -> MyType:
    kind = data_type.lower()
    full = column_type.lower()
    width_match = re.search(r"\((\d+)", full)
    width = int(width_match.group(1)) if width_match else 0
    if kind in _INTS:
        replica = _INTS[kind][1 if "unsigned" in full else 0]
        return MyType(_t(full, replica, f"TRY_CAST({{v}} AS {replica})"))
    if kind == "decimal":
        column = decimal_type(full, int(precision or 10), int(scale or 0))
        return MyType(column, _decimal)
    if kind in ("float", "double"):
        replica = "FLOAT" if kind == "float" else "DOUBLE"
        # A FLOAT read as text keeps 6 digits: the snapshot selects it as the exact double it is.
        return MyType(
            _t(full, replica, f"TRY_CAST({{v}} AS {replica})", CANON_FLOAT), _float, None, "CAST({c} AS DOUBLE)"
        )
    if kind == "year":
        return MyType(_t("year", "SMALLINT", "TRY_CAST({v} AS SMALLINT)"), _year, "CAST({c} + 0 AS CHAR)")
    if kind == "date":
        return MyType(
            _t("date", "DATE", "TRY_CAST({v} AS DATE)", note="zero dates: dead letter"),
            _date,
            "DATE_FORMAT({c}, '%Y-%m-%d')",
            "CAST({c} AS CHAR)",
        )
    if kind in ("datetime", "timestamp"):
        canonical = "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c}) AS CHAR)"
        return MyType(
            _t(
                full,
                "TIMESTAMP",
                "TRY_CAST({v} AS TIMESTAMP)",
                "CAST(epoch_us({c}) AS VARCHAR)",
                "zero dates: dead letter",
            ),
            _date,
            canonical,
            "CAST({c} AS CHAR)",
        )
    if kind == "time":
        return MyType(
            _t(
                full, "INTERVAL", "to_microseconds(TRY_CAST({v} AS BIGINT))", DUCK_TIME_MICROS, "a duration: ±838:59:59"
            ),
            _micros,
            MY_TIME_MICROS,
        )
    if kind == "bit":
        return MyType(
            _t(full, "BIT", "TRY_CAST({v} AS BIT)"), _bits(width or 1), f"LPAD(BIN({{c}}), {width or 1}, '0')"
        )
    if kind in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"):
        pad = width if kind == "binary" else 0
        return MyType(_t(full, "BLOB", "TRY(from_base64({v}))", CANON_BLOB), _bytes(pad), "LOWER(HEX({c}))")
    if kind in (
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
    ):
        return MyType(
            _t(full, "BLOB", "TRY(from_base64({v}))", CANON_BLOB, "WKB"),
            lambda v: _bytes()(v[4:] if isinstance(v, bytes | bytearray) else v),
            "LOWER(HEX(ST_AsWKB({c})))",
            "CONCAT(REPEAT(CHAR(0), 4), ST_AsWKB({c}))",
        )
    if kind == "set":
        return MyType(_t(full, "VARCHAR", "{v}", note="members in declared order"), _set(_members(column_type)))
    if kind == "json":
        return MyType(_t("json", "JSON", "CASE WHEN json_valid({v}) THEN {v} END"), _text)
    return MyType(_t(full, "VARCHAR", "{v}"), _text)


def from_connect(field_schema: dict[str, Any]) -> ColumnType:
    """A column published by coexist's Kafka publisher, back from its Connect schema."""
    p = field_schema.get("parameters") or {}
    precision = int(p["precision"]) if p.get("precision") not in (None, "") else None
    scale = int(p["scale"]) if p.get("scale") not in (None, "") else None
    return my_type(str(p.get("data_type", "varchar")), str(p.get("column_type", "varchar")), precision, scale).column


def wire_row(
    types: dict[str, MyType], row: dict[str, Any], none_sources: dict[str, str] | None = None
) -> dict[str, Any]:
    """A row as exact JSON wire values; a None the binlog library returned for a non-NULL value is restored."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        kind = types.get(name)
        if value is None:
            reason = (none_sources or {}).get(name, "null")
            if reason == "empty set":
                out[name] = ""
            elif reason.startswith("out of date"):
                out[name] = ZERO_DATE
            else:
                out[name] = None
        elif kind is not None and kind.to_wire is not None:
            out[name] = kind.to_wire(value)
        else:
            out[name] = _text(value) if isinstance(value, bytes | bytearray) else value
    return out

"""PostgreSQL types: Debezium's encoding of each, the replica type, and both sides' canonical text.

Embedded Debezium runs with `decimal.handling.mode=string`, `interval.handling.mode=string` and
`column.propagate.source.type=.*`, so every field carries its PostgreSQL type and numerics and
intervals arrive as exact text. `from_debezium` reads a field's schema; `from_catalog` reads
the catalog (for the re-snapshot, which selects Debezium's encoding in SQL, and for verify).
Both return the same `PgType` for the same column, so the paths agree by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from cdc.types import (
    CANON_BLOB,
    CANON_BOOL,
    CANON_FLOAT,
    CANON_INTERVAL,
    CANON_TEXT,
    CANON_TIMESTAMP,
    DIGITS,
    ColumnType,
    bits_text,
    connect_type,
    decimal_type,
    list_of,
)

# Debezium's stand-ins for ±infinity (PGStatement's infinity constants); for dates, the same
# constants in milliseconds overflowed into an int of days. No real value is that far out.
POS_INF_TS = 9223372036825200000
NEG_INF_TS = -9223372036832400000
POS_INF_DATE = -622191234
NEG_INF_DATE = -625821272
# Streaming: PostgreSQL's own ±infinity day numbers (INT_MAX/INT_MIN since 2000) moved to 1970, wrapped.
POS_INF_DATE_STREAM = -2147472692
NEG_INF_DATE_STREAM = -2147472691

CANON_MAP = "CAST(to_json(map_from_entries(list_sort(map_entries({c})))) AS VARCHAR)"
"""Keys in byte order, so the order a source or Debezium wrote them in does not matter."""
CANON_POINT = (
    "CASE WHEN {c} IS NOT NULL THEN '(' || "
    + CANON_FLOAT.replace("{c}", "{c}.x")
    + " || ',' || "
    + CANON_FLOAT.replace("{c}", "{c}.y")
    + " || ')' END"
)
PG_FLOAT = (
    "CASE WHEN {c} = 'NaN' OR {c} IN ('Infinity', '-Infinity') THEN {c}::text "
    "ELSE ltrim(to_char({c}::float8, '9.9999999999999999EEEE')) END"
)
PG_TIMESTAMP = (
    "CASE WHEN isfinite({c}) THEN (extract(epoch from {c}) * 1000000)::numeric(30,0)::text ELSE {c}::text END"
)
PG_INTERVAL = (
    "(extract(year from {c}) * 12 + extract(month from {c}))::bigint::text || ',' || "
    "extract(day from {c})::bigint::text || ',' || (extract(hour from {c}) * 3600000000 "
    "+ extract(minute from {c}) * 60000000 + extract(microseconds from {c}))::bigint::text"
)


@dataclass(frozen=True, slots=True)
class PgType:
    """One PostgreSQL column type: the replica side, PostgreSQL's canonical text, and its Debezium wire form."""

    column: ColumnType
    canonical: str = "{c}::text"
    """PostgreSQL SQL over `{c}`: the same text as `column.canonical` gives for the replica value."""
    wire: str = "{c}"
    """PostgreSQL SQL over `{c}`: the value as Debezium encodes it (JSON-compatible), for re-snapshots."""


def _t(source: str, replica: str, decode: str, canonical: str = CANON_TEXT, note: str = "") -> ColumnType:
    return ColumnType(source, replica, decode, canonical, note)


_TEXT = PgType(_t("text", "VARCHAR", "{v}"))
_SIMPLE: dict[str, PgType] = {
    "smallint": PgType(_t("smallint", "SMALLINT", "TRY_CAST({v} AS SMALLINT)")),
    "integer": PgType(_t("integer", "INTEGER", "TRY_CAST({v} AS INTEGER)")),
    "bigint": PgType(_t("bigint", "BIGINT", "TRY_CAST({v} AS BIGINT)")),
    "oid": PgType(_t("oid", "UINTEGER", "TRY_CAST({v} AS UINTEGER)")),
    "real": PgType(_t("real", "FLOAT", "TRY_CAST({v} AS FLOAT)", CANON_FLOAT), PG_FLOAT, "{c}::text"),
    "double precision": PgType(
        _t("double precision", "DOUBLE", "TRY_CAST({v} AS DOUBLE)", CANON_FLOAT), PG_FLOAT, "{c}::text"
    ),
    "boolean": PgType(
        _t("boolean", "BOOLEAN", "TRY_CAST({v} AS BOOLEAN)", CANON_BOOL),
        "CASE WHEN {c} THEN 't' WHEN NOT {c} THEN 'f' END",
    ),
    "bytea": PgType(
        _t("bytea", "BLOB", "TRY(from_base64({v}))", CANON_BLOB),
        "encode({c}, 'hex')",
        "translate(encode({c}, 'base64'), E'\\n', '')",
    ),
    "date": PgType(
        _t(
            "date",
            "DATE",
            f"CASE WHEN TRY_CAST({{v}} AS BIGINT) IN ({POS_INF_DATE}, {POS_INF_DATE_STREAM}) THEN 'infinity'::DATE "
            f"WHEN TRY_CAST({{v}} AS BIGINT) IN ({NEG_INF_DATE}, {NEG_INF_DATE_STREAM}) THEN '-infinity'::DATE "
            "ELSE DATE '1970-01-01' + TRY_CAST({v} AS INTEGER) END",
            "replace(CAST({c} AS VARCHAR), ' (BC)', ' BC')",
        ),
        "{c}::text",
        f"CASE WHEN {{c}} = 'infinity' THEN {POS_INF_DATE} WHEN {{c}} = '-infinity' THEN {NEG_INF_DATE} "
        "ELSE {c} - DATE '1970-01-01' END",
    ),
    "time": PgType(
        _t("time", "TIME", "cx_micros_time(TRY_CAST({v} AS BIGINT))"),
        "{c}::text",
        "(extract(epoch from {c}) * 1000000)::bigint",
    ),
    "time with time zone": PgType(
        _t("timetz", "TIMETZ", "TRY_CAST({v} AS TIMETZ)", "CAST(CAST({c} AS TIME) AS VARCHAR)", "normalised to UTC"),
        "(({c}) AT TIME ZONE 'UTC')::time::text",
        "(({c}) AT TIME ZONE 'UTC')::time::text || 'Z'",
    ),
    "interval": PgType(_t("interval", "INTERVAL", "cx_iso_interval({v})", CANON_INTERVAL), PG_INTERVAL, "{c}::text"),
    "json": PgType(_t("json", "JSON", "CASE WHEN json_valid({v}) THEN {v} END"), "{c}::text", "{c}::text"),
    "jsonb": PgType(
        _t("jsonb", "JSON", "CASE WHEN json_valid({v}) THEN {v} END", note="as PostgreSQL prints jsonb"),
        "{c}::text",
        "{c}::text",
    ),
    "uuid": PgType(_t("uuid", "UUID", "TRY_CAST({v} AS UUID)")),
    "money": PgType(
        _t("money", "DECIMAL(19,2)", "TRY_CAST(replace({v}, ',', '') AS DECIMAL(19,2))", note="two fraction digits"),
        "{c}::numeric::text",
        "{c}::numeric::text",
    ),
    "hstore": PgType(
        _t("hstore", "MAP(VARCHAR, VARCHAR)", "TRY_CAST(CAST({v} AS JSON) AS MAP(VARCHAR, VARCHAR))", CANON_MAP),
        "CASE WHEN {c} IS NOT NULL THEN (SELECT '{' || coalesce(string_agg(to_json(k)::text || ':' || "
        "coalesce(to_json(v)::text, 'null'), ',' ORDER BY k COLLATE \"C\"), '') || '}' FROM each({c}) AS e(k, v)) END",
        "hstore_to_json({c})::text",
    ),
    "point": PgType(
        _t(
            "point",
            "STRUCT(x DOUBLE, y DOUBLE)",
            "struct_pack(x := TRY_CAST(json_extract_string({j}, '$.x') AS DOUBLE), "
            "y := TRY_CAST(json_extract_string({j}, '$.y') AS DOUBLE))",
            CANON_POINT,
        ),
        "CASE WHEN {c} IS NOT NULL THEN '(' || "
        + PG_FLOAT.replace("{c}", "({c})[0]")
        + " || ',' || "
        + PG_FLOAT.replace("{c}", "({c})[1]")
        + " || ')' END",
        "CASE WHEN {c} IS NOT NULL THEN json_build_object('x', ({c})[0], 'y', ({c})[1]) END",
    ),
}
_TIMESTAMP_DECODE = (
    f"CASE TRY_CAST({{v}} AS HUGEINT) * {{scale}} WHEN {POS_INF_TS} THEN 'infinity'::TIMESTAMP WHEN {NEG_INF_TS} "
    "THEN '-infinity'::TIMESTAMP WHEN 9223372036854775807 THEN NULL WHEN -9223372036854775808 THEN NULL "
    "ELSE make_timestamp(TRY_CAST(TRY_CAST({v} AS HUGEINT) * {scale} AS BIGINT)) END"
)
OUTPUT = "CASE WHEN {c} IS NOT NULL THEN format('%s', {c}) END"
"""PostgreSQL's output function's text (what the log carries); `::text` differs for inet and char(n)."""
_TEXTUAL = {
    "text",
    "character varying",
    "character",
    "name",
    "citext",
    "xml",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "tsvector",
    "tsquery",
    "ltree",
    "int4range",
    "int8range",
    "numrange",
    "tsrange",
    "tstzrange",
    "daterange",
    "int4multirange",
    "int8multirange",
    "nummultirange",
    "tsmultirange",
    "tstzmultirange",
    "datemultirange",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "pg_lsn",
    "txid_snapshot",
    "regclass",
    "bit varying",
}
_DEBEZIUM_NAMES = {
    "INT2": "smallint",
    "INT4": "integer",
    "INT8": "bigint",
    "FLOAT4": "real",
    "FLOAT8": "double precision",
    "BOOL": "boolean",
    "BPCHAR": "character",
    "VARCHAR": "character varying",
    "TEXT": "text",
    "NAME": "name",
    "BYTEA": "bytea",
    "DATE": "date",
    "TIME": "time",
    "TIMETZ": "time with time zone",
    "TIMESTAMP": "timestamp",
    "TIMESTAMPTZ": "timestamp with time zone",
    "INTERVAL": "interval",
    "JSON": "json",
    "JSONB": "jsonb",
    "XML": "xml",
    "UUID": "uuid",
    "INET": "inet",
    "CIDR": "cidr",
    "MACADDR": "macaddr",
    "MACADDR8": "macaddr8",
    "BIT": "bit",
    "VARBIT": "bit varying",
    "POINT": "point",
    "MONEY": "money",
    "OID": "oid",
    "HSTORE": "hstore",
    "CITEXT": "citext",
    "LTREE": "ltree",
    "TSVECTOR": "tsvector",
    "INT4RANGE": "int4range",
    "INT8RANGE": "int8range",
    "NUMRANGE": "numrange",
    "TSRANGE": "tsrange",
    "TSTZRANGE": "tstzrange",
    "DATERANGE": "daterange",
}


def pg_type(type_text: str) -> PgType | None:
    """The PgType for a `format_type()` text such as `numeric(38,10)` or `timestamp(3) without time zone`."""
    text = type_text.strip().lower()
    if text.endswith("[]"):
        return _array(pg_type(text[:-2]) or _TEXT)
    if text.startswith("numeric"):
        m = re.match(r"numeric\((\d+),\s*(-?\d+)\)", text)
        if m is None:
            column = _t(
                "numeric",
                "VARCHAR",
                f"CASE WHEN {{v}} IN ('NAN', 'NaN') THEN 'NaN' "
                f"WHEN regexp_full_match({{v}}, '{DIGITS}') THEN {{v}} END",
                note="exact digits as text, NaN as `NaN`",
            )
            return PgType(column, "{c}::text", "{c}::text")
        precision, scale = int(m.group(1)), int(m.group(2))
        column = decimal_type(text, precision, scale)
        return PgType(column, "{c}::text", "{c}::text")
    m = re.match(r"(timestamp|time)(?:\((\d)\))? with(out)? time zone", text) or re.match(
        r"(timestamp|time)(?:\((\d)\))?$", text
    )
    if m is not None:
        kind, digits = m.group(1), m.group(2)
        zoned = "with time zone" in text and "without" not in text
        if kind == "time":
            return _SIMPLE["time with time zone" if zoned else "time"]
        if zoned:
            column = _t("timestamptz", "TIMESTAMPTZ", "TRY_CAST({v} AS TIMESTAMPTZ)", CANON_TIMESTAMP)
            wire = (
                "CASE WHEN isfinite({c}) THEN to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                "ELSE {c}::text END"
            )
            return PgType(column, PG_TIMESTAMP, wire)
        millis = digits is not None and int(digits) <= 3
        column = _t(
            "timestamp", "TIMESTAMP", _TIMESTAMP_DECODE.replace("{scale}", "1000" if millis else "1"), CANON_TIMESTAMP
        )
        unit = "1000" if millis else "1000000"
        divisor = 1000 if millis else 1
        wire = (
            f"CASE WHEN {{c}} = 'infinity' THEN {POS_INF_TS // divisor} "
            f"WHEN {{c}} = '-infinity' THEN {NEG_INF_TS // divisor} "
            f"ELSE (extract(epoch from {{c}}) * {unit})::numeric(40,0) END"
        )
        return PgType(column, PG_TIMESTAMP, wire)
    m = re.match(r"(?:character|char|bpchar)(?:\((\d+)\))?$", text)
    if m is not None:  # char(n) keeps its padding, which PostgreSQL's cast to text drops
        padded = f"rpad({{c}}::text, {int(m.group(1) or 1)})"
        return PgType(_t(text, "VARCHAR", "{v}", note="padded to its length"), padded, padded)
    m = re.match(r"bit(?:\((\d+)\))?$", text)
    if m is not None:
        return PgType(_t(text, "BIT", "TRY_CAST({v} AS BIT)"), "{c}::text", "{c}::text")
    base = re.sub(r"\(.*\)", "", text).strip()
    if base in _SIMPLE:
        return _SIMPLE[base]
    if base in _TEXTUAL:
        return PgType(_t(base, "VARCHAR", "{v}"), OUTPUT, OUTPUT)
    return None


def _each(array_sql: str, element_sql: str) -> str:
    """PostgreSQL SQL: a JSON array of `element_sql` (over `{c}`) applied to each element, in order."""
    inner = element_sql.replace("{c}", "x")
    return (
        f"CASE WHEN {array_sql} IS NOT NULL THEN (SELECT coalesce(array_to_json(array_agg(({inner}) ORDER BY n)), "
        f"'[]'::json) FROM unnest({array_sql}) WITH ORDINALITY AS u(x, n)) END"
    )


def _array(element: PgType) -> PgType:
    """A one-dimensional array; PostgreSQL's multi-dimensional arrays reach the dead-letter table."""
    column = list_of(element.column)
    canonical = element.column.canonical.replace("{c}", "x")
    column = replace(column, canonical=f"CAST(to_json(list_transform({{c}}, lambda x: {canonical})) AS VARCHAR)")
    return PgType(
        column,
        _each("{c}", element.canonical) + "::text",
        "CASE WHEN array_ndims({c}) > 1 THEN array_to_json({c}) ELSE " + _each("{c}", element.wire) + " END",
    )


def from_catalog(type_text: str, typtype: str = "b") -> PgType:
    """A column as the catalog describes it (`format_type` of its base type; `typtype` 'e' for enums)."""
    if typtype == "e":
        return PgType(_t("enum", "VARCHAR", "{v}"), OUTPUT, OUTPUT)
    found = pg_type(type_text)
    return (
        found
        if found is not None
        else PgType(_t(type_text, "VARCHAR", "{v}", note="as PostgreSQL prints it"), OUTPUT, OUTPUT)
    )


def from_debezium(field_schema: dict[str, Any]) -> ColumnType:
    """A column of the PostgreSQL connector, from its Connect schema and propagated source type."""
    params = field_schema.get("parameters") or {}
    generic = connect_type(field_schema)
    source = str(params.get("__debezium.source.column.type") or "")
    if not source:
        return generic
    array = source.startswith("_")
    name = _DEBEZIUM_NAMES.get(source.lstrip("_"))
    length = int(params.get("__debezium.source.column.length") or 0)
    scale = int(params.get("__debezium.source.column.scale") or 0)
    if source.lstrip("_") == "NUMERIC":
        name = f"numeric({length},{scale})" if 0 < length <= 1000 and not array else "numeric"
    elif name == "bit":
        name = f"bit({length})"
    elif name == "character" and length > 0:
        name = f"character({length})"
    elif name in ("timestamp", "time") and field_schema.get("name") in ("io.debezium.time.Timestamp",):
        name = "timestamp(3)"
    if name is None:
        return generic  # a domain, enum or extension type: Debezium's Connect type says enough
    found = pg_type(name + ("[]" if array else ""))
    if found is None:
        return generic
    column = found.column
    if name.startswith("bit("):
        column = replace(column, prepare=lambda v: bits_text(v, length))
    elif generic.prepare is not None and not array:
        column = replace(column, prepare=generic.prepare)
    return replace(column, connect={k: v for k, v in field_schema.items() if k not in ("field", "optional")})

"""Changes as Arrow columns: a batch of Debezium JSON decoded in bulk, no Python object per event.

An `EventFrame` holds the changes of one table of one source, in order, under one row schema:
their envelope fields as columns and their row images as JSON text (wire values), which the sink
decodes per column in DuckDB (`cdc.replica`). `decode_messages` makes frames of raw Debezium JSON
messages (Kafka records) with one DuckDB query over the whole batch; a message it cannot take
as a plain change (not valid, a TRUNCATE, unchanged-TOAST placeholders, no schema, a table whose
schema changes within the batch) goes through the per-event `DebeziumDecoder` instead, with all
the other messages of its table, so each table's changes stay in order and every error message is
the decoder's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cdc.events import ChangeEvent, DeadLetter, DebeziumDecoder, DecodeError, dumps, json_default, position_key
from cdc.types import PLACEHOLDER, ColumnType

FRAME_FIELDS = pa.schema(
    [
        ("op", pa.string()),
        ("key", pa.string()),
        ("before", pa.string()),
        ("after", pa.string()),
        ("position", pa.string()),
        ("ts_ms", pa.int64()),
        ("partition", pa.string()),
        ("snapshot", pa.string()),
    ]
)
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_PAYLOAD = b',"payload":'


@dataclass(slots=True)
class EventFrame:
    """Changes of one table of one source, in order, sharing one row schema (`columns`)."""

    source: str
    table: str
    columns: dict[str, ColumnType | str]
    key_columns: list[str]
    data: pa.Table
    checked: bool = False
    """Already known to hold no unchanged-TOAST placeholder (the bulk decoder's query looked)."""

    def __len__(self) -> int:
        return self.data.num_rows

    def has_placeholders(self) -> bool:
        if self.checked:
            return False
        return any(
            pc.any(pc.match_substring_regex(self.data[side], PLACEHOLDER)).as_py() for side in ("after", "before")
        )

    @classmethod
    def from_events(cls, events: list[ChangeEvent]) -> EventFrame:
        """A frame of ChangeEvents of one table and one schema (their wire values as JSON)."""
        first = events[0]

        def text(row: dict[str, Any] | None) -> str | None:
            return None if row is None else orjson.dumps(row, default=json_default, option=_OPTIONS).decode()

        data = pa.table(
            {
                "op": [e.op for e in events],
                "key": [dumps(e.key) if e.key else None for e in events],
                "before": [text(e.before) for e in events],
                "after": [text(e.after) for e in events],
                "position": [e.position for e in events],
                "ts_ms": [e.ts_ms for e in events],
                "partition": [e.partition for e in events],
                "snapshot": [e.snapshot for e in events],
            },
            schema=FRAME_FIELDS,
        )
        return cls(first.source, first.table, first.columns, list(first.key), data)

    def filter(self, mask: pa.Array) -> EventFrame:
        return EventFrame(self.source, self.table, self.columns, self.key_columns, self.data.filter(mask), self.checked)

    def to_events(self) -> list[ChangeEvent]:
        """The same changes as ChangeEvents, for the paths that need Python values."""
        loads = orjson.loads
        return [
            ChangeEvent(
                self.source,
                self.table,
                row["op"],
                loads(row["key"]) if row["key"] else {},
                loads(row["before"]) if row["before"] is not None else None,
                loads(row["after"]) if row["after"] is not None else None,
                row["position"],
                row["ts_ms"],
                row["partition"] or "",
                row["snapshot"],
                columns=self.columns,
            )
            for row in self.data.to_pylist()
        ]


@dataclass(slots=True)
class Message:
    """One raw message as a broker delivered it."""

    source: str
    table: str | None
    """The topic's table when configured, else None (the event's own)."""
    partition: str
    offset: int
    key: bytes | str | None
    value: bytes | str | None
    origin: str | None = None
    """Where it came from when `table` is None (a Debezium destination), named by its dead letter."""


_ENVELOPE = """
WITH m AS (
    SELECT seq, source, table_override, part, koffset, k, coalesce(p, v) AS v, schema_no, p IS NOT NULL AS split,
           CASE WHEN k IS NOT NULL THEN try(json_extract(k, ['$.schema', '$.payload'])) END AS kx,
           CASE WHEN p IS NULL THEN try(json_extract(v, ['$.schema', '$.payload'])) END AS top
    FROM _cx_msgs
    WHERE starts_with(ltrim(coalesce(p, v)), '{')
), e AS (
    SELECT *, split OR top[1] IS NOT NULL AS enveloped,
           (split OR top IS NOT NULL) AND (k IS NULL OR kx IS NOT NULL) AS valid,
           CASE WHEN split THEN v WHEN top[1] IS NOT NULL THEN CAST(top[2] AS VARCHAR) ELSE v END AS payload,
           CASE WHEN kx IS NULL THEN NULL WHEN kx[1] IS NOT NULL THEN kx[2] ELSE json(k) END AS key_doc
    FROM m
), f AS (
    SELECT seq, source, table_override, part, koffset, enveloped, split, schema_no, top[1] AS row_schema_doc, key_doc,
           pl IS NOT NULL AS parsed, pl[1]->>'$' AS op, pl[2] AS before, pl[3] AS after, pl[4] AS src,
           pl[5]->>'$' AS ts, pl[6]->>'$' AS src_schema, pl[7]->>'$' AS src_table, pl[8]->>'$' AS src_snapshot,
           pl[9]->>'$' AS src_ts_ms, pl[10]->>'$' AS src_coexist_position, pl[11]->>'$' AS src_sequence,
           pl[12]->>'$' AS src_lsn
    FROM (SELECT *, CASE WHEN valid AND starts_with(ltrim(payload), '{') THEN
                        try(json_extract(payload, ['$.op', '$.before', '$.after', '$.source', '$.ts_ms',
                                                   '$.source.schema', '$.source.table', '$.source.snapshot',
                                                   '$.source.ts_ms', '$.source.coexist_position',
                                                   '$.source.sequence', '$.source.lsn'])) END AS pl
          FROM e)
), t AS (
    SELECT *, CAST(before AS VARCHAR) AS before_text, CAST(after AS VARCHAR) AS after_text FROM f
)
SELECT seq, source,
       coalesce(table_override, CASE WHEN src_schema IS NOT NULL AND src_schema NOT IN ('public', 'dbo')
                THEN src_schema || '_' || src_table ELSE src_table END) AS table_name,
       op, CAST(key_doc AS VARCHAR) AS key,
       CASE WHEN before_text = 'null' THEN NULL ELSE before_text END AS before,
       CASE WHEN after_text = 'null' THEN NULL ELSE after_text END AS after,
       {position} AS position,
       coalesce(TRY_CAST(ts AS BIGINT), TRY_CAST(src_ts_ms AS BIGINT), 0) AS ts_ms,
       part AS partition,
       CASE WHEN op = 'r' AND src_snapshot IS NOT NULL AND src_snapshot <> 'false' THEN src_snapshot END AS snapshot,
       CASE WHEN split THEN 'known:' || schema_no
            ELSE CAST(hash(CAST(row_schema_doc AS VARCHAR)) AS VARCHAR) || ':'
                 || length(CAST(row_schema_doc AS VARCHAR)) END AS schema_id,
       CASE WHEN key_doc IS NULL THEN '' ELSE array_to_string(json_keys(key_doc), chr(31)) END AS key_cols,
       parsed AND (op IN ('c', 'u', 'r') AND starts_with(after_text, '{')
            AND (before IS NULL OR starts_with(before_text, '{') OR before_text = 'null')
        OR op = 'd' AND starts_with(before_text, '{'))
       AND starts_with(CAST(src AS VARCHAR), '{') AND src_table IS NOT NULL
       AND (key_doc IS NULL OR starts_with(CAST(key_doc AS VARCHAR), '{') OR CAST(key_doc AS VARCHAR) = 'null')
       AND enveloped AND (split OR row_schema_doc IS NOT NULL)
       AND NOT {placeholder_after} AND NOT {placeholder_before}
       AS plain
FROM t
"""
"""One row per message that starts as a JSON object; `plain`: it is a valid change the frames can carry
(everything else is decoded message by message). Each payload is parsed once: every field the frames
need comes out of one `json_extract`, and the shapes are checked on its (minified) output text."""


def _placeholder(image: str) -> str:
    """SQL: the image (JSON text) may hold an unchanged-TOAST placeholder (`PLACEHOLDER` is `$1`)."""
    return (
        f"coalesce(contains({image}, '__debezium_unavailable_value') "
        f"OR contains({image}, 'X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==') "
        f"OR contains({image}, '95,') AND regexp_matches({image}, $1), false)"
    )


_ENVELOPE = _ENVELOPE.replace("{placeholder_after}", _placeholder("after_text")).replace(
    "{placeholder_before}", _placeholder("before_text")
)

KAFKA_POSITION = "coalesce(src_coexist_position, lpad(CAST(koffset AS VARCHAR), 20, '0'))"
"""A Kafka message's position: the publisher's own (`coexist_position`), else its offset."""
POSTGRES_POSITION = (
    "lpad(CAST(coalesce(TRY_CAST(regexp_extract(src_sequence, '^\\[\\s*\"?([0-9]+)', 1) AS UBIGINT), 0) "
    "AS VARCHAR), 20, '0') || '/' || lpad(CAST(coalesce(TRY_CAST(src_lsn AS UBIGINT), 0) AS VARCHAR), 20, '0') "
    "|| '/' || lpad(CASE WHEN op = 'd' THEN '0' ELSE '1' END, 20, '0')"
)
"""`cdc.events.debezium_position` of the PostgreSQL connector's source block, in SQL."""


class BulkDecoder:
    """Raw Debezium JSON messages to frames (and, for the rest, events and dead letters)."""

    def __init__(
        self, decoder_for: Callable[[str], DebeziumDecoder], position_sql: str = KAFKA_POSITION, kafka: bool = True
    ) -> None:
        """`position_sql`: a message's position from the source block's fields (`src_coexist_position`,
        `src_sequence`, `src_lsn`), `op` and `koffset`; `kafka`:
        messages carry broker offsets (the per-event decoder gets them too)."""
        self.decoder_for = decoder_for
        self.envelope = _ENVELOPE.replace("{position}", position_sql)
        self.kafka = kafka
        self._schemas: dict[str, dict[str, ColumnType | str]] = {}
        self._known: list[tuple[bytes, dict[str, Any]]] = []
        """Schema prefixes seen (`{"schema":{...},"payload":`) with their schema: a message that starts
        with one is sent to DuckDB as its payload alone (the schema is most of a message's bytes)."""
        self.con = duckdb.connect(config={"python_enable_replacements": False})
        self.con.execute("SET threads = 2")

    def _columns(self, schema_id: str, message: Message, decoder: DebeziumDecoder) -> dict[str, ColumnType | str]:
        """The row schema's column types, parsed once per distinct schema."""
        columns = self._schemas.get(schema_id)
        if columns is None:
            if schema_id.startswith("known:"):
                schema = self._known[int(schema_id.split(":")[1])][1]
            else:
                schema = orjson.loads(message.value or b"{}").get("schema") or {}
            row = next(
                (
                    f
                    for f in schema.get("fields", [])
                    if f.get("field") in ("after", "before") and f.get("type") == "struct"
                ),
                None,
            )
            columns = decoder.plan(row).columns if row is not None else {}
            if len(self._schemas) > 10_000:
                self._schemas.clear()
            self._schemas[schema_id] = columns
        return columns

    def decode(self, messages: list[Message]) -> tuple[list[EventFrame], list[ChangeEvent], list[DeadLetter]]:
        """Frames for the tables whose messages are all plain changes; events (and dead letters) for the
        rest, in message order."""
        if not messages:
            return [], [], []
        split = [self._split(m.value) for m in messages]
        table = pa.table(
            {
                "seq": pa.array(np.arange(len(messages), dtype=np.int64)),
                "source": pa.array([m.source for m in messages], pa.string()),
                "table_override": pa.array([m.table for m in messages], pa.string()),
                "part": pa.array([m.partition for m in messages], pa.string()),
                "koffset": pa.array([m.offset for m in messages], pa.int64()),
                "k": pa.array([_text(m.key) for m in messages], pa.string()),
                "v": pa.array(
                    [None if cut else _text(m.value) for m, cut in zip(messages, split, strict=True)], pa.string()
                ),
                "p": pa.array([cut[1] if cut else None for cut in split], pa.string()),
                "schema_no": pa.array([cut[0] if cut else None for cut in split], pa.int64()),
            }
        )
        self.con.register("_cx_msgs", table)
        try:
            decoded = self.con.sql(self.envelope, params=[PLACEHOLDER]).to_arrow_table()
        finally:
            self.con.unregister("_cx_msgs")
        # What the query could not take as a plain change is decoded one by one first (most of it ends
        # as a dead letter or a tombstone); a table with a change decoded that way is decoded one by
        # one as a whole, keeping its order.
        plain = decoded.filter(pc.fill_null(decoded["plain"], False))
        one_by_one = sorted(set(range(len(messages))) - set(plain["seq"].to_pylist()))
        events, dead = self._each(messages, one_by_one)
        per_event_tables = {(e.source, e.table) for _, e in events}
        frames: list[EventFrame] = []
        groups = plain.group_by(["source", "table_name"]).aggregate([("key_cols", "count_distinct"), ("seq", "min")])
        rest: list[int] = []
        for group in sorted(groups.to_pylist(), key=lambda r: r["seq_min"]):
            source, name = group["source"], group["table_name"]
            mine = plain.filter(pc.and_(pc.equal(plain["source"], source), pc.equal(plain["table_name"], name)))
            columns = self._one_plan(mine, messages, source) if group["key_cols_count_distinct"] == 1 else None
            if columns is None or (source, name) in per_event_tables:
                rest.extend(mine["seq"].to_pylist())
                continue
            first = mine.slice(0, 1).to_pylist()[0]
            key_cols = [c for c in (first["key_cols"] or "").split(chr(31)) if c]
            data = pa.table({field: mine[field] for field in FRAME_FIELDS.names}, schema=FRAME_FIELDS)
            frames.append(EventFrame(source, name, columns, key_cols, data, checked=True))
        if rest:
            more, more_dead = self._each(messages, rest)
            events = sorted(events + more, key=lambda pair: pair[0])
            dead += more_dead
        return frames, [event for _, event in events], dead

    def _one_plan(self, mine: pa.Table, messages: list[Message], source: str) -> dict[str, ColumnType | str] | None:
        """The row schema all these messages share (schema texts may differ in form, not in columns),
        or None when they do not share one."""
        firsts = mine.group_by("schema_id").aggregate([("seq", "min")]).to_pylist()
        plans = [self._columns(f["schema_id"], messages[f["seq_min"]], self.decoder_for(source)) for f in firsts]
        return plans[0] if all(plan == plans[0] for plan in plans[1:]) else None

    def _split(self, value: bytes | str | None) -> tuple[int, str] | None:
        """(known schema number, payload text) when `value` is Debezium's `{"schema": S, "payload": P}`
        with a schema seen before (learnt here when new); None for anything else."""
        if value is None:
            return None
        raw = value.encode() if isinstance(value, str) else value
        if not raw.endswith(b"}"):
            return None
        for number, (prefix, _) in enumerate(self._known):
            if raw.startswith(prefix):
                return number, raw[len(prefix) : -1].decode("utf-8", errors="replace")
        if not raw.startswith(b'{"schema":'):
            return None
        cut = raw.find(_PAYLOAD)
        try:
            head = orjson.loads(raw[:cut] + b"}") if cut > 0 else None
        except orjson.JSONDecodeError:
            return None  # the text was inside the schema: decoded the long way
        if not isinstance(head, dict) or list(head) != ["schema"] or not isinstance(head["schema"], dict):
            return None
        if len(self._known) >= 256:
            self._known.clear()
            self._schemas = {k: v for k, v in self._schemas.items() if not k.startswith("known:")}
        self._known.append((raw[: cut + len(_PAYLOAD)], head["schema"]))
        return len(self._known) - 1, raw[cut + len(_PAYLOAD) : -1].decode("utf-8", errors="replace")

    def _each(self, messages: list[Message], seqs: list[int]) -> tuple[list[tuple[int, ChangeEvent]], list[DeadLetter]]:
        """The per-event decoder over these messages: (message index, event) pairs, and dead letters."""
        events: list[tuple[int, ChangeEvent]] = []
        dead: list[DeadLetter] = []
        for i in seqs:
            message = messages[i]
            try:
                event = self.decoder_for(message.source).decode(
                    message.key,
                    message.value,
                    partition=message.partition,
                    extra_source={"kafka_offset": message.offset} if self.kafka else None,
                )
            except DecodeError as exc:
                raw = message.value.decode(errors="replace") if isinstance(message.value, bytes) else str(message.value)
                if not self.kafka:
                    raw = f"KEY: {_text(message.key)}\nVALUE: {raw}"
                position = position_key(message.offset) if self.kafka else None
                table = message.table if message.table is not None else message.origin
                dead.append(DeadLetter(message.source, table, str(exc), raw, position, message.partition))
                continue
            if event is None:  # a tombstone: nothing to apply
                continue
            if message.table is not None:
                event.table = message.table
            events.append((i, event))
        return events, dead

    def close(self) -> None:
        self.con.close()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

"""The canonical change event (the Debezium envelope) and a decoder for real Debezium JSON.

Every reader (embedded Debezium, the MariaDB/MySQL binlog reader, Kafka) produces
`ChangeEvent`s; the DuckDB sink consumes nothing else. The decoder accepts Debezium JSON with
and without schemas and reads each field's type from its schema (`cdc.types`); values stay in
their wire form until the sink decodes them per column in DuckDB.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import Any

import orjson

from cdc.types import REPLICA_CONNECT_NAME, UNAVAILABLE, ColumnType, mysql, of_replica, postgres
from core.errors import TerminalError

__all__ = ["UNAVAILABLE", "ChangeEvent", "DeadLetter", "DebeziumDecoder", "DecodeError"]

EPOCH_DATE = dt.date(1970, 1, 1)


def field_type(field_schema: dict[str, Any]) -> ColumnType:
    """The ColumnType of one field of a Debezium row schema (coexist's own MariaDB/MySQL and replica
    schemas included)."""
    if field_schema.get("name") == mysql.CONNECT_NAME:
        return mysql.from_connect(field_schema)
    if field_schema.get("name") == REPLICA_CONNECT_NAME:
        return of_replica(str((field_schema.get("parameters") or {}).get("replica", "VARCHAR")))
    return postgres.from_debezium(field_schema)


class DecodeError(TerminalError, ValueError):
    """An event that cannot be decoded; it goes to `cdc.dead_letter` with this message."""


@dataclass(slots=True)
class ChangeEvent:
    """One row change, in Debezium's envelope.

    `position` orders events of one (source, partition): a replay of an event at or below the
    last committed position is a duplicate. Snapshot events (`op == "r"`) are idempotent upserts
    and are not position-checked; `snapshot == "first"` opens a new snapshot of the source.
    `before`, `after` and `key` hold wire values (JSON-compatible, as the source's log encodes them);
    `columns` maps each column to its `ColumnType` (or a DuckDB type name), which decodes them.
    """

    source: str
    table: str
    op: str
    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    position: str
    ts_ms: int
    partition: str = ""
    snapshot: str | None = None
    source_info: dict[str, Any] = field(default_factory=dict)
    transaction: dict[str, Any] | None = None
    columns: dict[str, ColumnType | str] = field(default_factory=dict)
    resume: dict[str, Any] | None = None

    @property
    def row(self) -> dict[str, Any] | None:
        return self.before if self.op == "d" else self.after

    @property
    def txid(self) -> str:
        """The source transaction ('' when unknown), from Debezium's `txId:lsn` transaction id."""
        return transaction_id((self.transaction or {}).get("id"))


def transaction_id(value: object) -> str:
    """PostgreSQL's part of a Debezium transaction id: its lsn part differs from event to event."""
    return str(value or "").split(":", 1)[0]


@dataclass(slots=True)
class DeadLetter:
    source: str
    table: str | None
    reason: str
    raw: str
    position: str | None = None
    partition: str = ""


def position_key(*parts: int) -> str:
    """A sortable text form of a tuple of non-negative integers."""
    return "/".join(f"{part:020d}" for part in parts)


def json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS)


@dataclass(slots=True)
class _StructPlan:
    columns: dict[str, ColumnType | str]


class DebeziumDecoder:
    """Turns Debezium key/value JSON into ChangeEvents; caches one plan per distinct schema."""

    def __init__(self, source: str, position_of: Any = None) -> None:
        self.source = source
        self._plans: dict[str, _StructPlan] = {}
        self._position_of = position_of or debezium_position

    def plan(self, struct_schema: dict[str, Any]) -> _StructPlan:
        cache_key = dumps(struct_schema)
        plan = self._plans.get(cache_key)
        if plan is None:
            fields = struct_schema.get("fields", [])
            plan = _StructPlan(columns={f["field"]: field_type(f) for f in fields})
            self._plans[cache_key] = plan
        return plan

    def _truncate(
        self, payload: dict[str, Any], source_info: dict[str, Any], partition: str, extra: dict[str, Any] | None
    ) -> ChangeEvent:
        """PostgreSQL's TRUNCATE (Debezium `op = 't'`): the sink empties the replica table in order."""
        source_info = source_info | (extra or {})
        return ChangeEvent(
            source=self.source,
            table=_table_name(source_info),
            op="t",
            key={},
            before=None,
            after=None,
            position=self._position_of(source_info | {"_op": "t"}, partition),
            ts_ms=int(payload.get("ts_ms") or source_info.get("ts_ms") or 0),
            partition=partition,
            source_info=source_info,
        )

    def decode(
        self,
        key_json: str | bytes | None,
        value_json: str | bytes | None,
        partition: str = "",
        extra_source: dict[str, Any] | None = None,
    ) -> ChangeEvent | None:
        """One event, or None for a tombstone (Debezium's follow-up to a delete; nothing to apply)."""
        if value_json is None or value_json in ("", b"", "null", b"null"):
            return None
        try:
            value = orjson.loads(value_json)
            key_doc = orjson.loads(key_json) if key_json not in (None, "", b"") else None
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise DecodeError("event value is not a JSON object")
        payload = value.get("payload", value) if "schema" in value else value
        schema = value.get("schema") if "schema" in value else None
        if not isinstance(payload, dict):
            raise DecodeError("event payload is not a JSON object")
        op = payload.get("op")
        if op not in ("c", "u", "d", "r", "t"):
            raise DecodeError(f"unknown op {op!r}")
        source_info = payload.get("source")
        if not isinstance(source_info, dict) or not source_info.get("table"):
            raise DecodeError("event has no source block naming its table")
        if op == "t":
            return self._truncate(payload, source_info, partition, extra_source)

        row_plan: _StructPlan | None = None
        if schema is not None:
            for part in schema.get("fields", []):
                if part.get("field") in ("after", "before") and part.get("type") == "struct":
                    row_plan = self.plan(part)
                    break
        before = payload.get("before")
        after = payload.get("after")
        if op == "d" and before is None:
            raise DecodeError("delete without a before image (set REPLICA IDENTITY FULL or a primary key)")
        if op != "d" and after is None:
            raise DecodeError(f"{op} event without an after image")
        for side, image in (("before", before), ("after", after)):
            if image is not None and not isinstance(image, dict):
                raise DecodeError(f"event {side} image is not a JSON object but {type(image).__name__}")

        key_payload = key_doc.get("payload", key_doc) if isinstance(key_doc, dict) and "schema" in key_doc else key_doc
        if key_payload is None:
            key: dict[str, Any] = {}  # a table without a primary key: applied by whole-row identity
        elif isinstance(key_payload, dict):
            key = key_payload
        else:
            raise DecodeError("event key is not a JSON object")

        table = _table_name(source_info)
        if extra_source:
            source_info = source_info | extra_source
        snapshot = source_info.get("snapshot")
        snapshot_flag = None if snapshot in (None, "false", False) else str(snapshot)
        return ChangeEvent(
            source=self.source,
            table=table,
            op=op,
            key=key,
            before=before,
            after=after,
            position=self._position_of(source_info | {"_op": op}, partition),
            ts_ms=int(payload.get("ts_ms") or source_info.get("ts_ms") or 0),
            partition=partition,
            snapshot=snapshot_flag if op == "r" else None,
            source_info=source_info,
            transaction=payload.get("transaction"),
            columns=row_plan.columns if row_plan is not None else {},
        )


def _table_name(source_info: dict[str, Any]) -> str:
    schema_name = source_info.get("schema")
    table = str(source_info["table"])
    return f"{schema_name}_{table}" if schema_name and schema_name not in ("public", "dbo") else table


def debezium_position(source_info: dict[str, Any], partition: str = "") -> str:
    """A sortable position from a Debezium source block.

    PostgreSQL: (last commit LSN, LSN) from `sequence`, the order Debezium delivers in (LSNs alone
    interleave across concurrent transactions). MySQL/MariaDB: (binlog file number, pos, row).
    SQL Server: (commit_lsn, change_lsn) as hex. Kafka adds topic offsets of its own elsewhere.
    """
    if "kafka_offset" in source_info:
        return position_key(int(source_info["kafka_offset"]))
    if "lsn" in source_info and source_info.get("connector") == "postgresql":
        sequence = source_info.get("sequence")
        last_commit = 0
        if sequence:
            try:
                parts = orjson.loads(sequence)
                last_commit = int(parts[0]) if parts and parts[0] is not None else 0
            except (orjson.JSONDecodeError, ValueError, TypeError):
                last_commit = 0
        # A primary-key update is one WAL record that Debezium emits as a delete and a create at the
        # same LSN: the third part keeps the pair apart (delete first).
        rank = 0 if source_info.get("_op") == "d" else 1
        return position_key(last_commit, int(source_info.get("lsn") or 0), rank)
    if "file" in source_info and "pos" in source_info:
        file_name = str(source_info.get("file") or "")
        digits = "".join(ch for ch in file_name.rsplit(".", 1)[-1] if ch.isdigit()) or "0"
        return position_key(int(digits), int(source_info.get("pos") or 0), int(source_info.get("row") or 0))
    if "commit_lsn" in source_info:
        commit = str(source_info.get("commit_lsn") or "0").replace(":", "")
        change = str(source_info.get("change_lsn") or "0").replace(":", "")
        return position_key(int(commit or "0", 16), int(change or "0", 16))
    if "scn" in source_info:
        return position_key(int(source_info.get("commit_scn") or source_info["scn"] or 0), int(source_info["scn"] or 0))
    return position_key(int(source_info.get("ts_ms") or 0))

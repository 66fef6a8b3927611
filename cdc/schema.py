"""Schema changes as events: what a DDL statement did to a captured table, and what the replica does.

Readers turn DDL into `SchemaChange`s (MariaDB: the binlog's query events; PostgreSQL: Debezium's
truncate events and a table's schema changing in the stream). The sink applies each in the same
transaction as the changes around it and records it in `cdc.schema_changes`. A change whose effect
on existing rows the log does not carry (a column added with a default, a changed type or key)
is followed by a re-snapshot of the table, swapped in when complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cdc.types import ColumnType

_NAME = r"(?:`?(?:[^`\s.]+)`?\.)?`?([^`\s(),;]+)`?"


@dataclass(slots=True)
class SchemaChange:
    source: str
    table: str
    kind: str
    """truncate | drop_table | rename_table | alter | create_table"""
    ddl: str
    position: str = ""
    new_name: str | None = None
    columns: dict[str, ColumnType] | None = None
    """After an `alter`: the table's columns as the source now has them."""
    key: list[str] | None = None
    renamed: dict[str, str] = field(default_factory=dict)
    """After an `alter`: columns renamed by the statement, old name to new."""
    resnapshot: bool = False
    """Old rows need values the log does not carry: the reader re-snapshots the table next."""
    drop_columns: bool = True
    """A column dropped at the source is dropped from the replica (else kept with its last values)."""
    archive_tables: bool = True
    """A dropped table's replica moves to `replica_<source>_archive` (else it is dropped)."""
    check_backfill: bool = False
    """After an `alter`: the sink reports what changed (`ApplyStats.reshaped`) and the reader decides
    about a re-snapshot from the source's values (PostgreSQL), instead of `resnapshot` up front."""


@dataclass(frozen=True, slots=True)
class Statement:
    kind: str
    tables: tuple[str, ...]
    new_names: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()
    text: str = ""


def parse_mysql_ddl(query: str) -> Statement | None:
    """The DDL statements that change a captured table, as MariaDB/MySQL write them to the binlog."""
    text = re.sub(r"/\*.*?\*/", " ", query, flags=re.S).strip()
    flags = re.I | re.S
    if m := re.match(rf"TRUNCATE\s+(?:TABLE\s+)?{_NAME}", text, flags):
        return Statement("truncate", (m.group(1),))
    if m := re.match(r"DROP\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?(.+)$", text, flags):
        names = tuple(n for part in m.group(1).split(",") if (n := _name(part)))
        return Statement("drop_table", names)
    if m := re.match(r"RENAME\s+TABLES?\s+(.+)$", text, flags):
        pairs = [re.split(r"\s+TO\s+", part.strip(), flags=re.I) for part in m.group(1).split(",")]
        return Statement("rename_table", tuple(_name(p[0]) for p in pairs), tuple(_name(p[1]) for p in pairs))
    if m := re.match(rf"CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}", text, flags):
        return Statement("create_table", (m.group(1),))
    if m := re.match(rf"ALTER\s+(?:ONLINE\s+)?(?:IGNORE\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}\s*(.*)$", text, flags):
        table, rest = m.group(1), m.group(2)
        if to := re.search(rf"(?:^|,)\s*RENAME\s+(?:TO|AS)\s+{_NAME}", rest, flags):
            return Statement("rename_table", (table,), (to.group(1),))
        renamed = [
            (a, b)
            for a, b in re.findall(rf"RENAME\s+COLUMN\s+{_NAME}\s+TO\s+{_NAME}", rest, flags)
            + re.findall(rf"CHANGE\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?{_NAME}\s+{_NAME}", rest, flags)
            if a != b
        ]
        return Statement("alter", (table,), renamed=tuple(renamed), text=rest)
    return None


def _name(part: str) -> str:
    m = re.match(rf"\s*{_NAME}", part)
    return m.group(1) if m else ""


_LADDERS = [
    ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"],
    ["UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"],
    ["FLOAT", "DOUBLE"],
]


def widens(old: str, new: str) -> bool:
    """Whether every value of DuckDB type `old` is exactly a value of `new` (so ALTER in place)."""
    old, new = old.upper(), new.upper()
    if old == new:
        return True
    for ladder in _LADDERS:
        if old in ladder and new in ladder:
            return ladder.index(new) >= ladder.index(old)
    signed = _LADDERS[0]
    if old in _LADDERS[1] and new in signed:  # unsigned into a wider signed type
        return signed.index(new) > _LADDERS[1].index(old)
    old_dec, new_dec = _decimal(old), _decimal(new)
    if new_dec is not None:
        if old_dec is not None:
            return new_dec[1] >= old_dec[1] and new_dec[0] - new_dec[1] >= old_dec[0] - old_dec[1]
        if old in signed:
            digits = (3, 5, 10, 19, 39)[signed.index(old)]
            return new_dec[0] - new_dec[1] >= digits
    return False


def _decimal(kind: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", kind)
    return (int(m.group(1)), int(m.group(2))) if m else None

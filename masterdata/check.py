"""Check an entity definition against its real sources before any run writes: every SQL fragment is
compiled (DuckDB `EXPLAIN`, nothing executed) over the actual columns and types, and each problem is
reported by its configuration key, e.g. `entities.company.survivorship[3].field: ...`."""

from __future__ import annotations

import duckdb

from masterdata.model import Entity
from masterdata.resolve import input_select, source_union
from masterdata.standardise import install


def _compiles(con: duckdb.DuckDBPyConnection, sql: str) -> str | None:
    try:
        con.execute(f"EXPLAIN {sql}")
    except duckdb.Error as exc:
        return str(exc).splitlines()[0]
    return None


def check(con: duckdb.DuckDBPyConnection, name: str, entity: Entity) -> list[str]:
    """Problems with `entity`, each prefixed by its key; empty when every fragment compiles."""
    install(con)
    key = f"entities.{name}"
    problems = []
    for n, source in enumerate(entity.sources):
        if error := _compiles(con, f"SELECT source_id FROM {source.relation()} src"):
            problems.append(f"{key}.sources[{n}]: {error}")
    if problems:
        return problems  # nothing further compiles without its inputs
    union = f"WITH u AS ({source_union(entity)}) "
    for col, expr in entity.standardise.items():
        if error := _compiles(con, f"{union}SELECT {expr} AS {col} FROM u"):
            problems.append(f"{key}.standardise.{col}: {error}")
    if problems:
        return problems
    records = f"WITH i AS ({input_select(entity)}) "
    pair = f"{records}SELECT {{}} FROM i l, i r"
    fragments: list[tuple[str, str]] = []
    for n, rule in enumerate(entity.deterministic):
        fragments.append((f"{key}.deterministic[{n}].condition", pair.format(rule.condition)))
        for c in rule.block:
            fragments.append((f"{key}.deterministic[{n}].block", pair.format(f"l.{c} = r.{c}")))
    for n, block in enumerate(entity.blocking):
        for expr in block:
            fragments.append((f"{key}.blocking[{n}]", f"{records}SELECT {expr} FROM i"))
    for n, comparison in enumerate(entity.comparisons):
        for m, level in enumerate(comparison.levels):
            fragments.append(
                (f"{key}.comparisons[{n}].levels[{m}].when", pair.format(f"CASE WHEN {level.when} THEN 1 END"))
            )
            if level.tf:
                fragments.append((f"{key}.comparisons[{n}].levels[{m}].tf", f"{records}SELECT {level.tf} FROM i"))
    for n, survivor in enumerate(entity.survivorship):
        fragments.append((f"{key}.survivorship[{n}].field", f"{records}SELECT {survivor.field} FROM i"))
        if survivor.rule == "most_recent":
            fragments.append((f"{key}.survivorship[{n}].rule", f"{records}SELECT CAST(updated_at AS TIMESTAMP) FROM i"))
    for where, sql in fragments:
        if error := _compiles(con, sql):
            problems.append(f"{where}: {error}")
    return problems

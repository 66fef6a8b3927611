"""Entity definitions: configuration, not code (see entities.toml for the built-in ones)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from core.models import Strict
from core.warehouse import literal


class Source(Strict):
    """One input: a SQL query, a table, or a Parquet/CSV path; it must yield `source_id`."""

    system: str
    sql: str | None = None
    table: str | None = None
    path: str | None = None
    id_column: str = "source_id"
    columns: dict[str, str] | None = Field(default=None, description="field -> SQL expression over the input")

    @model_validator(mode="after")
    def _one(self) -> Source:
        if sum(x is not None for x in (self.sql, self.table, self.path)) != 1:
            raise ValueError("give exactly one of sql, table or path")
        return self

    def relation(self) -> str:
        if self.sql:
            base = f"({self.sql})"
        elif self.table:
            base = self.table
        else:
            assert self.path is not None
            reader = "read_csv_auto" if self.path.lower().endswith((".csv", ".csv.gz")) else "read_parquet"
            base = f"{reader}({literal(self.path)})"
        if self.columns:
            cols = ", ".join(f"{expr} AS {name}" for name, expr in self.columns.items())
            return f"(SELECT CAST({self.id_column} AS VARCHAR) AS source_id, {cols} FROM {base} s)"
        if self.id_column != "source_id":
            return f"(SELECT *, CAST({self.id_column} AS VARCHAR) AS source_id FROM {base} s)"
        return base


class Deterministic(Strict):
    name: str
    condition: str
    block: list[str] = Field(min_length=1, description="columns equal on both sides (the join)")


class Level(Strict):
    when: str
    weight: float
    label: str
    tf: str | None = Field(default=None, description="column whose value frequency discounts this level")


class Comparison(Strict):
    name: str
    levels: list[Level] = Field(min_length=1)


class Thresholds(Strict):
    match: float
    review: float

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.match:
            raise ValueError("review threshold must not exceed the match threshold")
        return self


class Survivorship(Strict):
    field: str
    rule: Literal["source_priority", "most_recent", "most_complete", "most_frequent"]
    order: list[str] | None = None


class Entity(Strict):
    id_prefix: str
    order: int = 10
    sources: list[Source] = Field(min_length=1)
    standardise: dict[str, str] = Field(default_factory=dict)
    deterministic: list[Deterministic] = Field(default_factory=list)
    blocking: list[list[str]] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)
    thresholds: Thresholds
    tf_weight: float = 2.0
    max_block_size: int = Field(
        default=500,
        ge=2,
        description="blocks larger than this are skipped by the "
        "probabilistic rules (generic values); deterministic rules are not capped",
    )
    survivorship: list[Survivorship] = Field(default_factory=list)


def builtin_entities() -> dict[str, Entity]:
    raw = tomllib.loads(Path(__file__).with_name("entities.toml").read_text())
    return {name: Entity.model_validate(body) for name, body in raw.items()}

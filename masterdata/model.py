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
    weight: float | None = Field(
        default=None, description="log2 likelihood ratio; omitted: learned (`coexist masterdata train`)"
    )
    label: str
    tf: str | None = Field(default=None, description="column whose value frequency discounts this level")
    null: bool = Field(default=False, description="a value is missing on a side: no evidence either way (weight 0)")

    @model_validator(mode="after")
    def _null_weighs_nothing(self) -> Level:
        if self.null and self.weight not in (None, 0.0):
            raise ValueError("a null level weighs 0: leave its weight out")
        return self


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


class Training(Strict):
    """How weights are learned, and the match probabilities that link or queue a pair with a trained model."""

    match_probability: float = Field(default=0.99, gt=0, lt=1)
    review_probability: float = Field(default=0.5, gt=0, lt=1)
    random_pairs: int = Field(default=1_000_000, ge=100, description="pairs sampled for u")
    max_training_pairs: int = Field(default=5_000_000, ge=100, description="candidate pairs sampled for EM")
    iterations: int = Field(default=50, ge=1)
    initial_prior: float = Field(default=0.05, gt=0, lt=1, description="EM's first guess of λ")

    @model_validator(mode="after")
    def _ordered(self) -> Training:
        if self.review_probability > self.match_probability:
            raise ValueError("review_probability must not exceed match_probability")
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
    thresholds: Thresholds | None = Field(
        default=None,
        description="scores that link / queue a pair with configured weights (a trained model uses training)",
    )
    training: Training = Field(default_factory=Training)
    tf_weight: float = Field(
        default=1.0,
        ge=0,
        description="how strongly a value shared by more records than usual discounts an exact level "
        "(bounded: such a level never weighs below 0)",
    )
    max_block_size: int = Field(
        default=500,
        ge=2,
        description="blocks larger than this are skipped by the "
        "probabilistic rules (generic values); deterministic rules are not capped",
    )
    survivorship: list[Survivorship] = Field(default_factory=list)

    @model_validator(mode="after")
    def _thresholds_unless_trained(self) -> Entity:
        learned = any(lv.weight is None and not lv.null for c in self.comparisons for lv in c.levels)
        if self.comparisons and not learned and self.thresholds is None:
            raise ValueError(
                "thresholds are needed when every weight is configured (or leave weights out to learn them)"
            )
        return self


def builtin_entities() -> dict[str, Entity]:
    raw = tomllib.loads(Path(__file__).with_name("entities.toml").read_text())
    return {name: Entity.model_validate(body) for name, body in raw.items()}

"""Entity definitions: configuration, not code (see entities.toml for the built-in ones)."""

from __future__ import annotations

import re
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


Kind = Literal["exact", "jaro_winkler", "damerau_levenshtein", "date", "numeric_id", "email", "postcode", "name"]


class Comparison(Strict):
    """A field's comparison: its levels, written out or ready-made (`use` with a `column`).

    Ready-made levels start with a null level (missing on a side) and end with the implicit "else";
    their weights are learned. `bands`: similarity thresholds (jaro_winkler, name; default 0.92, 0.88)
    or edit distances (damerau_levenshtein; default 1, 2); `days` (date): within N days (default 1, 31);
    `tf`: the exact level is discounted for common values (default on for `name`)."""

    name: str
    levels: list[Level] = Field(default_factory=list)
    use: Kind | None = None
    column: str | None = None
    bands: list[float] | None = None
    days: list[int] | None = None
    tf: bool | None = None

    @model_validator(mode="after")
    def _levels(self) -> Comparison:
        if self.use is None:
            if not self.levels:
                raise ValueError("give levels, or use a ready-made comparison (use = ..., column = ...)")
            return self
        if self.levels:
            raise ValueError("give either levels or use, not both")
        if not self.column or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.column):
            raise ValueError(f"use = {self.use!r} needs column = the name of an input or standardised column")
        self.levels = ready_made(self.use, self.column, self.bands, self.days, self.tf)
        return self


def ready_made(kind: str, c: str, bands: list[float] | None, days: list[int] | None, tf: bool | None) -> list[Level]:
    """The levels of a ready-made comparison on column `c` (weights left to training)."""
    text = f"coalesce(CAST(l.{c} AS VARCHAR), '') = '' OR coalesce(CAST(r.{c} AS VARCHAR), '') = ''"
    levels = [Level(when=text, label="missing", null=True)]
    with_tf = c if (tf if tf is not None else kind == "name") else None
    if kind in ("exact", "jaro_winkler", "damerau_levenshtein", "name"):
        levels.append(Level(when=f"l.{c} = r.{c}", label="exact", tf=with_tf))
    if kind in ("jaro_winkler", "name"):
        for band in bands or [0.92, 0.88]:
            when = f"jaro_winkler_similarity(CAST(l.{c} AS VARCHAR), CAST(r.{c} AS VARCHAR)) >= {float(band)}"
            levels.append(Level(when=when, label=f"jw>={band}"))
    elif kind == "damerau_levenshtein":
        for band in bands or [1, 2]:
            when = f"damerau_levenshtein(CAST(l.{c} AS VARCHAR), CAST(r.{c} AS VARCHAR)) <= {int(band)}"
            levels.append(Level(when=when, label=f"dl<={int(band)}"))
    elif kind == "date":
        a, b = f"CAST(l.{c} AS DATE)", f"CAST(r.{c} AS DATE)"
        levels.append(Level(when=f"{a} = {b}", label="exact", tf=with_tf))
        levels.append(
            Level(
                when=f"year({a}) = year({b}) AND day({a}) = month({b}) AND month({a}) = day({b})",
                label="day and month swapped",
            )
        )
        for n in days or [1, 31]:
            levels.append(Level(when=f"abs(datediff('day', {a}, {b})) <= {int(n)}", label=f"within {int(n)} days"))
    elif kind == "numeric_id":
        a, b = f"cx_digits(CAST(l.{c} AS VARCHAR))", f"cx_digits(CAST(r.{c} AS VARCHAR))"
        levels.append(Level(when=f"{a} = {b}", label="exact", tf=with_tf))
        levels.append(Level(when=f"damerau_levenshtein({a}, {b}) <= 1", label="one typo"))
    elif kind == "email":
        a, b = f"cx_email(CAST(l.{c} AS VARCHAR))", f"cx_email(CAST(r.{c} AS VARCHAR))"
        levels.append(Level(when=f"{a} = {b}", label="exact", tf=with_tf))
        user_a, user_b = f"split_part({a}, '@', 1)", f"split_part({b}, '@', 1)"
        # No "similar user" level: users made from names are similar for everyone of a name, which
        # random pairs do not show and EM then takes for a sign of a match.
        levels.append(Level(when=f"{user_a} = {user_b}", label="same user, other domain"))
    elif kind == "postcode":
        a = f"upper(regexp_replace(CAST(l.{c} AS VARCHAR), '[^A-Za-z0-9]', '', 'g'))"
        b = f"upper(regexp_replace(CAST(r.{c} AS VARCHAR), '[^A-Za-z0-9]', '', 'g'))"
        levels.append(Level(when=f"{a} = {b}", label="exact", tf=with_tf))
        # The district: all but the last three characters (UK inward code, a ZIP's last digits), at least two.
        district = "left({p}, greatest(length({p}) - 3, 2))"
        levels.append(Level(when=f"{district.format(p=a)} = {district.format(p=b)}", label="same district"))
        levels.append(Level(when=f"left({a}, 2) = left({b}, 2)", label="same area"))
    return levels


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
    max_training_pairs: int = Field(default=1_000_000, ge=100, description="candidate pairs sampled for EM")
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

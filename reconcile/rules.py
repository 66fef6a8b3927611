"""Reconciliation rules: what to compare, by which keys, within which tolerances.

A rule is configuration, validated here; `reconcile.engine` turns it into DuckDB SQL.
The same shape compares two arbitrary tables the way datacompy compares two dataframes.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from core.cron import cron_trigger
from core.models import Strict
from core.warehouse import literal


class Dataset(Strict):
    """Exactly one of `table`, `sql`, `sql_file` or `path` (Parquet or CSV); `where` filters it."""

    table: str | None = None
    sql: str | None = None
    sql_file: str | None = Field(default=None, description="SQL file, relative to the project's sql/ directory")
    path: str | None = Field(default=None, description="Parquet or CSV file (globs allowed)")
    where: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Dataset:
        given = [x for x in (self.table, self.sql, self.sql_file, self.path) if x]
        if len(given) != 1:
            raise ValueError("give exactly one of table, sql, sql_file or path")
        return self

    def relation(self, sql_dir: Path) -> str:
        """A FROM-able SQL relation for this dataset."""
        if self.table:
            base = self.table
        elif self.sql:
            base = f"({self.sql})"
        elif self.sql_file:
            base = f"({(sql_dir / self.sql_file).read_text().strip().rstrip(';')})"
        else:
            assert self.path is not None
            reader = "read_csv_auto" if self.path.lower().endswith((".csv", ".csv.gz")) else "read_parquet"
            base = f"{reader}({literal(self.path)})"
        if self.where:
            return f"(SELECT * FROM {base} AS src WHERE {self.where})"
        return f"(SELECT * FROM {base} AS src)"


class Measure(Strict):
    """A numeric column compared within tolerances; `break_type` names a difference."""

    left: str
    right: str
    abs_tol: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="absolute tolerance, finite, >= 0")
    rel_tol: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="relative tolerance, finite, >= 0")
    break_type: str = "amount_mismatch"
    name: str | None = None
    currency: tuple[str, str] | None = Field(
        default=None,
        description="(left currency column, right currency column): convert both to the "
        "reporting currency through the rule's fx table before comparing",
    )
    fx_date: tuple[str, str] | None = Field(default=None, description="(left date, right date) for the rate")

    @property
    def label(self) -> str:
        return self.name or self.left


class Attribute(Strict):
    """A non-numeric column that must be equal (after an optional value map on the left)."""

    left: str
    right: str
    break_type: str
    name: str | None = None
    map: dict[str, str] | None = Field(default=None, description="left value -> expected right value")

    @property
    def label(self) -> str:
        return self.name or self.left


class Fx(Strict):
    table: str
    date: str = "rate_date"
    from_ccy: str = "from_ccy"
    to_ccy: str = "to_ccy"
    rate: str = "rate"
    reporting_currency: str = "USD"


class Context(Strict):
    """Columns (SQL expressions per side) that describe a break for the people who act on it."""

    project: tuple[str, str] | None = None
    period: tuple[str, str] | None = None
    legal_entity: tuple[str, str] | None = None
    golden_project: tuple[str, str] | None = Field(default=None, description="the project's golden id (mdm.xref)")
    customer: tuple[str, str] | None = Field(default=None, description="the customer's golden id (mdm.xref)")


ROW_SOURCE = r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"


class History(Strict):
    """Where each side's rows come from, as `source.table.column` in `cdc.changelog` (the column
    holding the rule's `row_id`): the workbench shows a break's rows' change history from it."""

    left: str | None = Field(default=None, pattern=ROW_SOURCE, description="e.g. psa.time_entries.entry_id")
    right: str | None = Field(default=None, pattern=ROW_SOURCE, description="e.g. erp.labor_postings.posting_id")


class Rule(Strict):
    left: Dataset
    right: Dataset
    keys: list[tuple[str, str]] = Field(min_length=1)
    fallback_keys: list[tuple[str, str]] | None = Field(
        default=None,
        description="for rows unmatched by `keys` whose key is missing: match on these instead, "
        "when every measure agrees too",
    )
    grain: Literal["line"] | list[tuple[str, str]] = "line"
    measures: list[Measure] = Field(default_factory=list)
    attributes: list[Attribute] = Field(default_factory=list)
    check_order: list[str] | None = Field(
        default=None, description="break types in priority order; a pair of rows gets the first that applies"
    )
    fx: Fx | None = None
    context: Context = Field(default_factory=Context)
    left_name: str = "left"
    right_name: str = "right"
    duplicates: bool = Field(default=True, description="report keys posted more than once on the right")
    duplicate_type: str = "duplicate_posting"
    row_id: tuple[str, str] | None = Field(
        default=None, description="(left, right) expressions naming a row, e.g. a document number; defaults to the key"
    )
    schedule: str | None = Field(
        default=None, description="cron expression for the scheduler: 5 fields, or 6 with seconds first"
    )
    description: str | None = None
    history: History = Field(default_factory=History)

    @model_validator(mode="after")
    def _measures_need_fx(self) -> Rule:
        for measure in self.measures:
            if measure.currency and self.fx is None:
                raise ValueError(f"measure {measure.label!r} converts currency but the rule has no fx table")
        if self.schedule is not None:
            try:
                cron_trigger(self.schedule)
            except ValueError as exc:
                raise ValueError(f"schedule: {exc}") from None
        return self

    @property
    def missing_left_type(self) -> str:
        return f"missing_in_{self.left_name.lower()}"

    @property
    def missing_right_type(self) -> str:
        return f"missing_in_{self.right_name.lower()}"

    def break_types(self) -> list[str]:
        """Every break type this rule can report."""
        types = [self.missing_right_type, self.missing_left_type]
        if self.duplicates and self.grain == "line":
            types.append(self.duplicate_type)
        types += [m.break_type for m in self.measures] + [a.break_type for a in self.attributes]
        return list(dict.fromkeys(types))

    def version(self) -> str:
        """A hash of what decides the rule's results (not `history`, which only shows them)."""
        body = self.model_dump(mode="json", exclude={"history"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def missing_files(rule: Rule, sql_dir: Path) -> list[str]:
    """`left.sql_file: ...` for each side whose SQL file does not exist (checked when the settings load)."""
    return [
        f"{side}.sql_file: no file {sql_dir / dataset.sql_file}"
        for side, dataset in (("left", rule.left), ("right", rule.right))
        if dataset.sql_file and not (sql_dir / dataset.sql_file).is_file()
    ]


def builtin_rules() -> dict[str, Rule]:
    """The built-in PSA/ERP reconciliations (`builtin.toml`): time, invoices, margin."""
    raw = tomllib.loads(Path(__file__).with_name("builtin.toml").read_text())
    return {name: Rule.model_validate(body) for name, body in raw.items()}

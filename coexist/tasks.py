"""The one way to run a reconciliation, a master-data refresh or the analyst snapshot.

The CLI, the service's jobs and the demo all call these, on a connection (or cursor) of the
warehouse they already hold, so a scheduled run and a manual one do exactly the same work:
run, then (re)install the analyst views that read what was just written.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

import duckdb

from coexist.analyst import snapshot, views
from coexist.config import Settings
from core import warehouse
from core.errors import ConfigError, TerminalError, UsageError
from masterdata.check import check
from masterdata.model import Entity
from masterdata.resolve import DDL as MDM_DDL
from masterdata.resolve import Resolver, ResolveResult, train_entity
from masterdata.train import Model
from reconcile.engine import Engine, RunResult

Progress = Callable[[str], None]
T = TypeVar("T")


def _each(
    kind: str, defined: Collection[str], names: list[str] | None, on_start: Progress | None, run: Callable[[str], T]
) -> list[T]:
    """`run` each named item (all of `defined` when None, in its order); unknown names and DuckDB errors are
    reported naming the item."""
    unknown = [n for n in names or [] if n not in defined]
    if unknown:
        raise UsageError(f"unknown {kind} {unknown[0]!r}; defined: {', '.join(defined) or 'none'}")
    results = []
    for name in names or list(defined):
        if on_start:
            on_start(name)
        try:
            results.append(run(name))
        except duckdb.Error as exc:
            raise TerminalError(f"{kind} {name!r} failed: {exc}") from None
    return results


def confine(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Configured SQL (rules, entities) may read the files the configuration names and the data dir, no more."""
    paths = [d.path for rule in settings.all_reconciliations().values() for d in (rule.left, rule.right) if d.path]
    paths += [s.path for entity in settings.all_entities().values() for s in entity.sources if s.path]
    own = [settings.data_dir, settings.warehouse_path.parent]  # snapshot, spill files beside the warehouse
    warehouse.confine(con, [*own, *(warehouse.glob_root(p) for p in paths)])


def reconcile(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    names: list[str] | None = None,
    trigger: str = "manual",
    on_start: Progress | None = None,
    full: bool = False,
) -> list[RunResult]:
    """Run the named reconciliations (all when None) and record breaks and history; incrementally
    where the rule allows (`reconcile.incremental`), unless `full`."""
    rules = settings.all_reconciliations()
    confine(con, settings)
    con.execute(MDM_DDL)  # the built-in rules read mdm.xref (empty until master data runs: codes are used)
    engine = Engine(con)
    results = _each("reconciliation", rules, names, on_start, lambda name: engine.run(name, rules[name], trigger, full))
    views.install(con)
    return results


def refresh_masterdata(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    names: list[str] | None = None,
    incremental: bool | None = None,
    on_start: Progress | None = None,
) -> list[ResolveResult]:
    """Resolve the named entities (all when None, in their order) into golden records.

    `incremental=None` resolves incrementally each entity that has run before, fully the others.
    """
    entities = settings.all_entities()
    check_entities(con, settings, names)
    resolver = Resolver(con)
    # Views over mdm tables exist before the first golden record does: a snapshot taken between this
    # run's commit and its closing view install must not hold golden records without `golden_xref`.
    views.install(con)

    def resolve(name: str) -> ResolveResult:
        mode = incremental if incremental is not None else resolver.has_run(name)
        return resolver.resolve(name, entities[name], incremental=mode)

    results = _each("entity", entities, names, on_start, resolve)
    views.install(con)
    return results


def train_masterdata(
    con: duckdb.DuckDBPyConnection, settings: Settings, names: list[str] | None = None, from_labels: bool = False
) -> list[tuple[Entity, Model]]:
    """Learn the comparison weights of the named entities (all when None) from their current records;
    the next runs score with them."""
    entities = settings.all_entities()
    check_entities(con, settings, names)
    resolver = Resolver(con)

    def fit(name: str) -> tuple[Entity, Model]:
        entity = entities[name]
        records = resolver.input_table(entity)
        try:
            model = train_entity(con, name, entity, records, from_labels=from_labels)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return entity, model

    return _each("entity", entities, names, None, fit)


def check_entities(con: duckdb.DuckDBPyConnection, settings: Settings, names: list[str] | None = None) -> None:
    """Compile every entity's SQL against its real sources before anything is written; ConfigError lists
    each problem by its configuration key."""
    entities = settings.all_entities()
    confine(con, settings)
    Resolver(con)  # the (empty) mdm tables, which later entities read (projects join customers' golden IDs)
    found = _each("entity", entities, names, None, lambda name: check(con, name, entities[name]))
    problems = [problem for each in found for problem in each]
    if problems:
        raise ConfigError("master data configuration:\n  " + "\n  ".join(problems))


def publish_snapshot(con: duckdb.DuckDBPyConnection, settings: Settings) -> snapshot.Published:
    """Copy the warehouse to the analyst's read-only snapshot, atomically."""
    return snapshot.publish(con, settings.snapshot_path, settings.service.snapshot_exclude)

"""The one way to run a reconciliation, a master-data refresh or the analyst snapshot.

The CLI, the service's jobs and the demo all call these, on a connection (or cursor) of the
warehouse they already hold, so a scheduled run and a manual one do exactly the same work:
run, then (re)install the analyst views that read what was just written.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from coexist.analyst import snapshot, views
from coexist.config import Settings
from core.errors import TerminalError, UsageError
from masterdata.resolve import Resolver, ResolveResult
from reconcile.engine import Engine, RunResult

Progress = Callable[[str], None]


def _chosen(kind: str, defined: dict[str, object], names: list[str] | None) -> list[str]:
    if not names:
        return list(defined)
    unknown = [n for n in names if n not in defined]
    if unknown:
        raise UsageError(f"unknown {kind} {unknown[0]!r}; defined: {', '.join(defined) or 'none'}")
    return list(names)


def reconcile(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    names: list[str] | None = None,
    trigger: str = "manual",
    on_start: Progress | None = None,
) -> list[RunResult]:
    """Run the named reconciliations (all when None) and record breaks and history."""
    rules = settings.all_reconciliations()
    results = []
    engine = Engine(con)
    for name in _chosen("reconciliation", dict(rules), names):
        if on_start:
            on_start(name)
        try:
            results.append(engine.run(name, rules[name], trigger=trigger))
        except duckdb.Error as exc:
            raise TerminalError(f"reconciliation {name!r} failed: {exc}") from None
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
    resolver = Resolver(con)
    results = []
    for name in _chosen("entity", dict(entities), names):
        if on_start:
            on_start(name)
        mode = incremental if incremental is not None else resolver.has_run(name)
        try:
            results.append(resolver.resolve(name, entities[name], incremental=mode))
        except duckdb.Error as exc:
            raise TerminalError(f"entity {name!r} failed: {exc}") from None
    views.install(con)
    return results


def publish_snapshot(con: duckdb.DuckDBPyConnection, settings: Settings) -> snapshot.Published:
    """Copy the warehouse to the analyst's read-only snapshot, atomically."""
    return snapshot.publish(con, settings.snapshot_path, settings.service.snapshot_exclude)

"""`coexist reconcile ...`: run reconciliations, list runs and breaks."""

from __future__ import annotations

from typing import Annotated

import typer

from coexist import tasks
from coexist.cli.common import read_warehouse, settings, write_warehouse
from coexist.cli.output import CsvOpt, JsonOpt, Output, err_console
from core.errors import GateFailed
from reconcile import history

app = typer.Typer(help="Reconciliations between the PSA and the ERP (or any two datasets).", no_args_is_help=True)

LimitOpt = Annotated[
    int | None, typer.Option(help="rows to show; 0 for all (default: a screenful in a table, all with --json/--csv)")
]


def _limit(out: Output, asked: int | None, screen: int) -> int:
    return asked if asked is not None else (screen if out.human else 0)


@app.command("run")
def run(
    name: Annotated[list[str] | None, typer.Argument(help="reconciliation(s) to run; all when omitted")] = None,
    fail_on: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-on",
            help="exit 1 when the run finds: 'new' (breaks first seen now), 'open' (any open break) "
            "or a break type (an open break of it); repeat for several",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="compare every row, not only the keys changed since the last run")
    ] = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Run reconciliations now and record their breaks and history.

    A rule whose inputs are replica tables and that ran before compares only the keys the CDC
    changelog says changed since (`mode` incremental); `--full` compares everything.

    Example: coexist reconcile run time invoices
    Example, a period-close gate: coexist reconcile run --fail-on new --fail-on missing_in_erp --json
    """
    from rich.progress import Progress

    out = Output(as_json, as_csv)
    cfg = settings()
    rules = cfg.all_reconciliations()
    chosen = name or list(rules)
    history.check_gate({n: rules[n] for n in chosen if n in rules}, fail_on or [])
    con = write_warehouse()
    try:
        with Progress(console=err_console, transient=True, disable=not out.human) as progress:
            task = progress.add_task("reconciling", total=len(chosen))

            def started(recon: str) -> None:
                progress.update(task, description=f"reconciling {recon}", completed=chosen.index(recon))

            results = tasks.reconcile(con, cfg, name, on_start=started, full=full)
        failures = history.gate(
            con, {r.recon: rules[r.recon] for r in results}, {r.recon: r.new_breaks for r in results}, fail_on or []
        )
    finally:
        con.close()
    out.rows(
        [
            {
                "recon": r.recon,
                "run_id": r.run_id,
                "left_rows": r.left_rows,
                "right_rows": r.right_rows,
                "matched": r.matched,
                "breaks": r.breaks,
                "new": r.new_breaks,
                "resolved": r.resolved_breaks,
                "mode": r.mode,
                "seconds": round(r.seconds, 2),
                "by_type": r.counts_by_type,
            }
            for r in results
        ],
        title="reconciliation runs",
    )
    if failures:
        raise GateFailed("; ".join(failures))


@app.command("runs")
def runs(limit: LimitOpt = None, as_json: JsonOpt = False, as_csv: CsvOpt = False) -> None:
    """List recent reconciliation runs with their counts, newest first.

    Example: coexist reconcile runs --limit 5
    """
    out = Output(as_json, as_csv)
    limit = _limit(out, limit, 20)
    con = read_warehouse()
    try:
        rows = history.runs(con, limit + 1 if limit else None)
    finally:
        con.close()
    more = bool(limit) and len(rows) > limit
    out.rows(rows[:limit] if limit else rows, history.RUN_COLUMNS, title="runs", more=more, limit=limit)


@app.command("breaks")
def breaks(
    open_only: Annotated[bool, typer.Option("--open/--all", help="only open breaks")] = True,
    break_type: Annotated[str | None, typer.Option("--type", help="only this break type")] = None,
    recon: Annotated[str | None, typer.Option("--recon", help="only this reconciliation")] = None,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Show breaks with both sides, the delta, project, period and legal entity.

    Example: coexist reconcile breaks --open --type duplicate_posting
    """
    out = Output(as_json, as_csv)
    limit = _limit(out, limit, 50)
    con = read_warehouse()
    try:
        rows = history.breaks(con, recon, break_type, open_only, limit + 1 if limit else None)
    finally:
        con.close()
    more = bool(limit) and len(rows) > limit
    shown = rows[:limit] if limit else rows
    columns = history.BREAK_COLUMNS if not out.human else history.BREAK_COLUMNS[:-1]
    out.rows(shown, columns, title=f"{len(shown):,} breaks", more=more, limit=limit)

"""`coexist query`, `coexist export` and `coexist report`: what analysts and finance leads read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coexist.cli.common import read_warehouse, settings
from coexist.cli.output import CsvOpt, JsonOpt, Output

SnapshotOpt = Annotated[bool, typer.Option("--snapshot", help="read the analyst snapshot, not the warehouse")]


def query(
    sql: Annotated[str, typer.Argument(help="one query (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)")],
    limit: Annotated[int, typer.Option(help="rows to print (0 for all); a cut is stated")] = 100,
    timeout: Annotated[float, typer.Option(help="seconds before the query is stopped")] = 60.0,
    snapshot: SnapshotOpt = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Query the warehouse read-only: replicas, cdc.*, mdm.*, recon.*, analytics.* views.

    One statement; no file access, ATTACH, COPY, INSTALL or SET.

    Example: coexist query "SELECT * FROM analytics.open_breaks" --csv
    """
    from coexist.analyst import query as analyst_query

    out = Output(as_json, as_csv)
    analyst_query.check(sql)
    con = read_warehouse(snapshot)
    try:
        result = analyst_query.run(con, sql, limit or None, timeout)
    finally:
        con.close()
    out.rows(
        [dict(zip(result.columns, row, strict=True)) for row in result.rows],
        result.columns,
        more=result.truncated,
        limit=limit,
    )


def export(
    parquet: Annotated[Path, typer.Option("--parquet", help="directory to write one Parquet file per table")],
    snapshot: SnapshotOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export the analytics views, the master-data and reconciliation tables and the workbench's work as Parquet.

    Example: coexist export --parquet out/
    """
    out = Output(as_json)
    con = read_warehouse(snapshot)
    parquet.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        names = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN "
            "('analytics', 'mdm', 'recon', 'work') ORDER BY 1, 2"
        ).fetchall()
        for schema, table in names:
            target = parquet / f"{schema}.{table}.parquet"
            relation = con.table(f'"{schema}"."{table}"')
            relation.write_parquet(str(target))
            written.append(target.name)
    finally:
        con.close()
    out.document(
        {"directory": str(parquet), "files": written},
        lambda: out.say(f"{len(written)} files in {parquet}: {', '.join(written)}"),
    )


def report(
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write")] = None,
    snapshot: SnapshotOpt = False,
    png: Annotated[Path | None, typer.Option("--png", help="also render it in headless Chromium to this PNG")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one self-contained HTML report: breaks by type and age, margin PSA vs ERP, CDC lag, match quality.

    Reads the warehouse read-only, or the analyst snapshot when the service holds the warehouse.

    Example: coexist report --out report.html --png report.png
    """
    from coexist.analyst import report as report_module

    out = Output(as_json)
    target = out_file or settings().data_dir / "report.html"
    con = read_warehouse(snapshot)
    try:
        with out.status("drawing the report"):
            report_module.write(con, target)
    finally:
        con.close()
    if png is not None:
        report_module.render_png(target, png)
    out.document(
        {"report": str(target), "png": str(png) if png else None},
        lambda: out.say(f"report written to {target}" + (f", rendered to {png}" if png else "")),
    )

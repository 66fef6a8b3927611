"""The `coexist` command. Every subcommand works with no flags against the local sandbox."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coexist.config import ConfigError, Settings, load_settings
from coexist.sandbox import SandboxError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    help="coexist keeps a legacy ERP and a PSA in step: CDC into DuckDB, master data, reconciliation.\n\n"
    "Example: coexist sandbox up && coexist seed --scale small && coexist cdc run --until-idle",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(help="The local sandbox: a private PostgreSQL (PSA) and MariaDB (ERP).",
                          no_args_is_help=True)
cdc_app = typer.Typer(help="Change data capture into the DuckDB warehouse.", no_args_is_help=True)
recon_app = typer.Typer(help="Reconciliations between the PSA and the ERP (or any two datasets).",
                        no_args_is_help=True)
schedule_app = typer.Typer(help="The job schedule (reconciliations on cron triggers).", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(cdc_app, name="cdc")
app.add_typer(recon_app, name="reconcile")
app.add_typer(schedule_app, name="schedule")
mdm_app = typer.Typer(help="Master data: golden records for customers, projects and resources.", no_args_is_help=True)
app.add_typer(mdm_app, name="masterdata")

_state: dict[str, Any] = {"config": None}


class UserError(Exception):
    """An error meant for the user: printed without a traceback."""


def settings() -> Settings:
    cached = _state.get("settings")
    if cached is None:
        cached = load_settings(_state["config"])
        _state["settings"] = cached
    return cached


@app.callback()
def _main(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="coexist.toml to use",
                                                envvar="COEXIST_CONFIG")] = None,
) -> None:
    _state["config"] = config
    _state.pop("settings", None)


# ---------------------------------------------------------------- sandbox


@sandbox_app.command("up")
def sandbox_up() -> None:
    """Start the sandbox databases (idempotent; restarts them after a crash).

    Example: coexist sandbox up
    """
    from coexist import sandbox

    with console.status("starting PostgreSQL (PSA) and MariaDB (ERP)..."):
        state = sandbox.up(settings())
    console.print(f"[green]sandbox up[/] in {state.root}")
    _print_status(sandbox.status(settings(), with_counts=False))


@sandbox_app.command("status")
def sandbox_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show URLs, ports, pids and row counts per table.

    Example: coexist sandbox status --json
    """
    from coexist import sandbox

    report = sandbox.status(settings())
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _print_status(report)


@sandbox_app.command("down")
def sandbox_down(
    destroy: Annotated[bool, typer.Option("--destroy", help="also delete the sandbox data")] = False,
) -> None:
    """Stop both sandbox databases by pid (safe after a crash).

    Example: coexist sandbox down
    """
    from coexist import sandbox

    if destroy:
        sandbox.destroy(settings())
        console.print("sandbox stopped and its data deleted")
        return
    stopped = sandbox.down(settings())
    for name, was_running in stopped.items():
        console.print(f"{name}: {'stopped' if was_running else 'was not running'}")


def _print_status(report: dict[str, Any]) -> None:
    if not report.get("initialised"):
        console.print(f"no sandbox in {report['data_dir']}: run `coexist sandbox up`")
        return
    table = Table(title="sandbox")
    for column in ("server", "role", "up", "pid", "url"):
        table.add_column(column)
    for name in ("postgres", "mariadb"):
        info = report[name]
        table.add_row(name, info["role"], "[green]yes[/]" if info["up"] else "[red]no[/]",
                      str(info["pid"] or "-"), info["url"])
    console.print(table)
    counts = report.get("row_counts")
    if counts:
        rows = Table(title="row counts")
        rows.add_column("system")
        rows.add_column("table")
        rows.add_column("rows", justify="right")
        for system, tables in counts.items():
            for name, count in tables.items():
                rows.add_row(system, name, f"{count:,}")
        console.print(rows)
    console.print(f"warehouse: {report['warehouse']}")


# ---------------------------------------------------------------- seed


@app.command("seed")
def seed(
    scale: Annotated[str, typer.Option(help="small | medium | large")] = "small",
    customers: Annotated[int | None, typer.Option(help="override: number of true customers")] = None,
    time_entries: Annotated[int | None, typer.Option(help="override: number of PSA time entries")] = None,
    seed_value: Annotated[int, typer.Option("--seed", help="random seed")] = 7,
    reset: Annotated[bool, typer.Option(help="empty both databases first")] = True,
) -> None:
    """Fill both sandbox databases with a coherent firm and plant known discrepancies.

    Writes the ground-truth manifest to <data_dir>/manifest/.

    Example: coexist seed --scale small
    """
    from coexist import generator, sandbox

    spec = generator.Scale.named(scale, customers=customers, time_entries=time_entries, seed=seed_value)
    state = sandbox.require_state(settings())
    summary = generator.seed(state, spec, settings().data_dir / "manifest", reset=reset, console=console)
    table = Table(title=f"seeded ({scale})")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


@app.command("demo")
def demo(
    scale: Annotated[str, typer.Option(help="generator scale for the demo firm")] = "small",
) -> None:
    """The main job on the local sandbox, end to end: sandbox, seed, capture, and what it found.

    Example: coexist demo
    """
    from coexist import demo as demo_module

    try:
        demo_module.run(settings(), scale=scale, console=console)
    except RuntimeError as exc:
        err_console.print(f"[red]demo failed:[/] {exc}")
        _exit_jvm(2)
    _exit_jvm(0)


# ---------------------------------------------------------------- cdc


def _open_warehouse(read_only: bool = False) -> Any:
    import duckdb

    from cdc.sink import DuckDBSink

    path = settings().warehouse_path
    try:
        if read_only:
            if not path.exists():
                raise UserError(f"no warehouse at {path}: run `coexist cdc run` first")
            try:
                return duckdb.connect(str(path), read_only=True)
            except duckdb.IOException:
                snap = settings().snapshot_path
                if not snap.exists():
                    raise
                err_console.print(f"[yellow]the warehouse is in use (service running): reading the snapshot {snap}[/]")
                return duckdb.connect(str(snap), read_only=True)
        return DuckDBSink(path)
    except duckdb.IOException as exc:
        raise UserError(f"the warehouse {path} is in use by another process (DuckDB has one writer): {exc}") from None


@cdc_app.command("run")
def cdc_run(
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="only this source (repeatable)")] = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="stop once every source is quiet")] = False,
    idle_seconds: Annotated[float | None, typer.Option(help="quiet spell that counts as idle")] = None,
) -> None:
    """Capture changes from the sources into the warehouse until Ctrl-C (or idle).

    Example: coexist cdc run --until-idle
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from cdc.runner import Capture
    from coexist import sources as sources_module

    cfg = settings()
    readers = sources_module.readers(cfg, source)
    if any(type(r).__name__ == "KafkaReader" for r in readers):
        from coexist import logs

        logs.setup("text")  # group membership (partitions assigned/revoked) goes to stderr
    try:
        capture = Capture(_capture_target(cfg, readers), readers)
    except Exception as exc:
        raise UserError(f"cannot open the warehouse {cfg.warehouse_path}: {exc}") from None
    idle = (idle_seconds or cfg.cdc.idle_seconds) if until_idle else None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        tasks = {r.name: progress.add_task(f"{r.name}: starting", total=None) for r in readers}

        def on_batch(name: str, stats: Any) -> None:
            p = capture.progress[name]
            progress.update(tasks[name], description=f"{name}: {p.applied:,} applied, {p.duplicates:,} duplicates, "
                                                     f"{p.dead_letters:,} dead letters")

        capture.on_batch = on_batch
        result = capture.run(idle_seconds=idle)
    failed = False
    for name, p in result.items():
        line = f"{name}: {p.applied:,} events applied in {p.batches:,} batches, {p.duplicates:,} duplicates skipped, " \
               f"{p.dead_letters:,} dead letters"
        if p.error:
            failed = True
            err_console.print(f"[red]{name} stopped:[/] {p.error}")
        console.print(line)
    _exit_jvm(2 if failed else 0)


def _capture_target(cfg: Settings, readers: list[Any]) -> Any:
    """The warehouse; shared turn by turn (a file lock) when Kafka group members may run beside this one."""
    from cdc.handoff import HandoffSink
    from cdc.kafka import KafkaReader

    group = [r for r in readers if isinstance(r, KafkaReader)]
    if not group:
        return cfg.warehouse_path
    sink = HandoffSink(cfg.warehouse_path, hold_seconds=min(r.config.hold_seconds for r in group))
    for reader in group:
        reader.release = sink.release
    return sink


@cdc_app.command("publish")
def cdc_publish(
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="only this database (repeatable)")] = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="stop once every source is quiet")] = False,
    idle_seconds: Annotated[float | None, typer.Option(help="quiet spell that counts as idle")] = None,
    bootstrap_servers: Annotated[str | None, typer.Option(help="Kafka brokers (else publish.bootstrap_servers)")]
    = None,
) -> None:
    """Read the databases and publish their changes to Kafka as Debezium topics (<source>.<db>.<table>).

    Keyed by primary key; one Kafka transaction per batch holds the events and the reader's
    position, so a restart neither skips nor repeats.

    Example: coexist cdc publish --bootstrap-servers 127.0.0.1:9092
    """
    from cdc.kafka import KafkaPublishSink
    from cdc.runner import Capture
    from coexist import sources as sources_module

    cfg = settings()
    if bootstrap_servers:
        cfg.publish.bootstrap_servers = bootstrap_servers
    readers = sources_module.readers(cfg, source, databases_only=True)
    try:
        sink = KafkaPublishSink(cfg.publish)
    except Exception as exc:
        raise UserError(f"cannot reach Kafka at {cfg.publish.bootstrap_servers}: {exc}") from None
    capture = Capture(sink, readers)
    idle = (idle_seconds or cfg.cdc.idle_seconds) if until_idle else None
    with console.status("publishing to Kafka") as status:
        capture.on_batch = lambda name, stats: status.update(
            "published " + ", ".join(f"{n}: {p.applied:,}" for n, p in capture.progress.items()))
        result = capture.run(idle_seconds=idle)
    failed = False
    for name, p in result.items():
        if p.error:
            failed = True
            err_console.print(f"[red]{name} stopped:[/] {p.error}")
        console.print(f"{name}: {p.applied:,} events published in {p.batches:,} transactions, "
                      f"{p.dead_letters:,} dead letters")
    _exit_jvm(2 if failed else 0)


def _exit_jvm(code: int) -> None:
    """A started JVM keeps the process alive at exit; leave without waiting for it."""
    import jpype

    if jpype.isJVMStarted():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        raise typer.Exit(code)


@cdc_app.command("status")
def cdc_status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Per source: position, lag, events and dead letters per table.

    Example: coexist cdc status --json
    """
    from cdc.status import capture_status, kafka_status
    from coexist import sources as sources_module

    con = _open_warehouse(read_only=True)
    try:
        report = capture_status(con, sources_module.configured_sources(settings(), required=False))
        kafka = [kafka_status(con, name, config) for name, config in sources_module.kafka_sources(settings()).items()]
    finally:
        con.close()
    if as_json:
        print(json.dumps(report + kafka, indent=2, default=str))
        return
    for entry in kafka:
        console.print(f"[bold]{entry['source']}[/] (kafka) {entry['url']}  "
                      + (f"lag {entry['lag_total']:,} messages (max {entry['lag_max']:,} in one partition)"
                         if entry["reachable"] else f"[red]unreachable[/] {entry['error']}"))
        table = Table(show_header=True)
        for col in ("topic", "partition", "next offset", "high water", "lag"):
            table.add_column(col, justify="right" if col != "topic" else "left")
        for p in entry["partitions"]:
            table.add_row(p["topic"], str(p["partition"]), f"{p['next_offset']:,}",
                          "?" if p["high_water"] is None else f"{p['high_water']:,}",
                          "?" if p["lag"] is None else f"{p['lag']:,}")
        console.print(table)
    for entry in report:
        state = entry["source_state"]
        behind = state.get("behind_bytes")
        console.print(f"[bold]{entry['source']}[/] ({entry['kind']}) {entry['url']}  snapshot "
                      f"{'done' if entry['snapshot_done'] else 'not finished'}  events {entry['events']:,}  "
                      f"dead letters {entry['dead_letters']:,}  lag p50/p95 {entry['lag_p50_s']}/{entry['lag_p95_s']} s"
                      f"  behind {behind if behind is not None else '?'} bytes")
        table = Table(show_header=True)
        table.add_column("table")
        table.add_column("events", justify="right")
        table.add_column("dead letters", justify="right")
        for name, counts in entry["tables"].items():
            table.add_row(name, f"{counts['events']:,}", f"{counts['dead_letters']:,}")
        console.print(table)


@cdc_app.command("verify")
def cdc_verify(
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="only this source")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Compare every replica table with its live source: counts, then a per-key hash diff.

    Exits 1 when any table differs.

    Example: coexist cdc verify
    """
    from dataclasses import asdict

    from cdc.verify import verify_source
    from coexist import sources as sources_module

    configured = sources_module.configured_sources(settings())
    con = _open_warehouse(read_only=True)
    diffs = []
    try:
        for name, config in configured.items():
            if source and name not in source:
                continue
            diffs.extend(verify_source(con, name, config))
    finally:
        con.close()
    if as_json:
        print(json.dumps([asdict(d) | {"equal": d.equal} for d in diffs], indent=2))
    else:
        table = Table(title="replica vs source")
        for col in ("source", "table", "source rows", "replica rows", "missing", "extra", "different", "ok"):
            table.add_column(col)
        for d in diffs:
            table.add_row(d.source, d.table, f"{d.source_rows:,}", f"{d.replica_rows:,}", str(d.n_missing),
                          str(d.n_extra), str(d.n_different),
                          "[green]yes[/]" if d.equal else f"[red]no[/] {d.note or ''}")
        console.print(table)
        for d in diffs:
            for kind in ("missing", "extra", "different"):
                keys = getattr(d, kind)
                if keys:
                    console.print(f"{d.source}.{d.table} {kind}: {', '.join(keys)}")
    if not all(d.equal for d in diffs):
        raise typer.Exit(1)


@cdc_app.command("resnapshot")
def cdc_resnapshot(
    table: Annotated[list[str] | None, typer.Argument(help="table(s) to reload; all when omitted")] = None,
    source: Annotated[str | None, typer.Option("--source", "-s", help="source holding the table")] = None,
) -> None:
    """Reload tables from a fresh consistent snapshot of the source (capture keeps its position).

    Run it while `coexist cdc run` is stopped (DuckDB has one writer).

    Example: coexist cdc resnapshot customers --source erp
    """
    from cdc.binlog import BinlogReader
    from cdc.pgsnapshot import pg_snapshot
    from coexist import sources as sources_module
    from coexist.config import MariaDBSource

    cfg = settings()
    configured = sources_module.configured_sources(cfg)
    names = [source] if source else list(configured)
    sink = _open_warehouse()
    total = 0
    try:
        for name in names:
            if name not in configured:
                raise UserError(f"unknown source {name!r}; configured: {', '.join(configured)}")
            config = configured[name]
            if isinstance(config, MariaDBSource):
                reader = BinlogReader(name, config, batch_size=cfg.cdc.batch_size)
                conn = reader.connect()
                available = reader.list_tables(conn)
                conn.close()
            else:
                available = sorted(sink.replica_tables(name)) or list(config.tables or [])
            wanted = [t for t in (table or available) if t in available]
            if table and not wanted:
                continue
            batches = reader.snapshot(wanted) if isinstance(config, MariaDBSource) else \
                pg_snapshot(name, config, wanted, cfg.cdc.batch_size)
            with console.status(f"resnapshot {name}: {', '.join(wanted)}"):
                for batch in batches:
                    total += sink.apply(batch).applied
            console.print(f"{name}: reloaded {', '.join(wanted)}")
    finally:
        sink.close()
    if table and total == 0 and not names:
        raise UserError(f"no source has table(s) {', '.join(table)}")
    console.print(f"{total:,} rows reloaded")


# ---------------------------------------------------------------- reconcile


@recon_app.command("run")
def reconcile_run(
    name: Annotated[list[str] | None, typer.Argument(help="reconciliation(s) to run; all when omitted")] = None,
) -> None:
    """Run reconciliations now and record their breaks and history.

    Example: coexist reconcile run time invoices
    """
    import duckdb

    from reconcile.engine import Engine

    rules = settings().all_reconciliations()
    chosen = name or list(rules)
    unknown = [n for n in chosen if n not in rules]
    if unknown:
        raise UserError(f"unknown reconciliation {unknown[0]!r}; configured: {', '.join(rules)}")
    path = settings().warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        raise UserError(f"the warehouse {path} is in use by another process: {exc}") from None
    table = Table(title="reconciliation runs")
    for col in ("recon", "left rows", "right rows", "matched", "breaks", "new", "resolved", "seconds", "by type"):
        table.add_column(col)
    try:
        engine = Engine(con)
        from rich.progress import Progress

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("reconciling", total=len(chosen))
            for recon in chosen:
                progress.update(task, description=f"reconciling {recon}")
                try:
                    result = engine.run(recon, rules[recon])
                except duckdb.Error as exc:
                    raise UserError(f"reconciliation {recon!r} failed: {exc}") from None
                table.add_row(recon, f"{result.left_rows:,}", f"{result.right_rows:,}", f"{result.matched:,}",
                              f"{result.breaks:,}", f"{result.new_breaks:,}", f"{result.resolved_breaks:,}",
                              f"{result.seconds:.2f}",
                              ", ".join(f"{k} {v}" for k, v in sorted(result.counts_by_type.items())))
                progress.advance(task)
        from coexist import views

        views.install(con)
    finally:
        con.close()
    console.print(table)


@recon_app.command("runs")
def reconcile_runs(limit: Annotated[int, typer.Option(help="how many recent runs")] = 20) -> None:
    """List recent reconciliation runs with their counts.

    Example: coexist reconcile runs --limit 5
    """
    con = _open_warehouse(read_only=True)
    try:
        rows = con.execute(
            "SELECT run_id, recon, rule_version, started_at, round(seconds, 2), left_rows, right_rows, breaks, "
            "new_breaks, resolved_breaks, trigger FROM recon.runs ORDER BY started_at DESC LIMIT ?", [limit]
        ).fetchall()
    except Exception as exc:
        raise UserError(f"no reconciliation has run yet ({exc})") from None
    finally:
        con.close()
    table = Table(title="runs")
    for col in ("run", "recon", "rule version", "started", "s", "left", "right", "breaks", "new", "resolved",
                "trigger"):
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(table)


@recon_app.command("breaks")
def reconcile_breaks(
    open_only: Annotated[bool, typer.Option("--open/--all", help="only open breaks")] = True,
    break_type: Annotated[str | None, typer.Option("--type", help="only this break type")] = None,
    recon: Annotated[str | None, typer.Option("--recon", help="only this reconciliation")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show breaks with both sides, the delta, project, period and legal entity.

    Example: coexist reconcile breaks --open --type duplicate_posting
    """
    from reconcile.engine import open_breaks

    con = _open_warehouse(read_only=True)
    try:
        rows = open_breaks(con, recon, break_type, open_only)
    except Exception as exc:
        raise UserError(f"no reconciliation has run yet ({exc})") from None
    finally:
        con.close()
    cols = ("recon", "break_type", "key", "left_id", "right_id", "delta", "project", "period", "legal_entity",
            "status", "first_seen_run", "details")
    if as_json:
        print(json.dumps([dict(zip(cols, r, strict=True)) for r in rows], default=str, indent=2))
        return
    table = Table(title=f"{len(rows):,} breaks" + (f" (first {limit})" if len(rows) > limit else ""))
    for col in cols[:-1]:
        table.add_column(col)
    for row in rows[:limit]:
        table.add_row(*["" if v is None else (f"{v:,.2f}" if isinstance(v, float) else str(v)) for v in row[:-1]])
    console.print(table)


@schedule_app.command("list")
def schedule_list() -> None:
    """List scheduled jobs with their cron triggers and next run times.

    Example: coexist schedule list
    """
    from coexist.scheduler import list_jobs

    table = Table(title="schedule")
    for col in ("job", "trigger", "next run"):
        table.add_column(col)
    for job in list_jobs(settings()):
        table.add_row(job["id"], job["trigger"], job["next_run"] or "-")
    console.print(table)


# ---------------------------------------------------------------- masterdata


def _writable_warehouse() -> Any:
    import duckdb

    path = settings().warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        raise UserError(f"the warehouse {path} is in use by another process: {exc}") from None


@mdm_app.command("run")
def masterdata_run(
    entity: Annotated[list[str] | None, typer.Option("--entity", "-e", help="only this entity (repeatable)")] = None,
    incremental: Annotated[bool, typer.Option(help="re-resolve only records changed since the last run")] = False,
) -> None:
    """Resolve entities into golden records (customers first: projects use their golden IDs).

    Example: coexist masterdata run --incremental
    """
    import duckdb

    from masterdata.resolve import Resolver

    entities = settings().all_entities()
    chosen = {n: e for n, e in entities.items() if not entity or n in entity}
    if entity and len(chosen) != len(entity):
        raise UserError(f"unknown entity; defined: {', '.join(entities)}")
    con = _writable_warehouse()
    table = Table(title="master data")
    for col in ("entity", "mode", "records", "changed", "links", "reviews", "golden records", "touched", "new IDs",
                "s"):
        table.add_column(col)
    try:
        resolver = Resolver(con)
        for name, definition in chosen.items():
            try:
                r = resolver.resolve(name, definition, incremental=incremental)
            except duckdb.Error as exc:
                raise UserError(f"entity {name!r} failed: {exc}") from None
            table.add_row(name, r.mode, f"{r.records:,}", f"{r.changed_records:,}", f"{r.links:,}", f"{r.reviews:,}",
                          f"{r.clusters:,}", f"{r.touched_clusters:,}", f"{r.new_ids:,}", f"{r.seconds:.2f}")
        from coexist import views

        views.install(con)
    finally:
        con.close()
    console.print(table)


@mdm_app.command("review")
def masterdata_review(
    entity: Annotated[str | None, typer.Option("--entity", "-e", help="only this entity")] = None,
    limit: Annotated[int, typer.Option(help="pairs to show")] = 30,
) -> None:
    """Show pairs between the review and match thresholds, with the evidence per field.

    Decide with `coexist masterdata override link|split A B`.

    Example: coexist masterdata review --entity customer
    """
    con = _open_warehouse(read_only=True)
    try:
        rows = con.execute(
            "SELECT entity, l_rid, r_rid, round(score, 2), evidence FROM mdm.review_queue "
            "WHERE ? IS NULL OR entity = ? ORDER BY score DESC LIMIT ?", [entity, entity, limit]).fetchall()
    except Exception as exc:
        raise UserError(f"master data has not run yet ({exc})") from None
    finally:
        con.close()
    table = Table(title=f"review queue ({len(rows)} shown)")
    for col in ("entity", "record A", "record B", "score", "evidence"):
        table.add_column(col)
    for row in rows:
        table.add_row(row[0], row[1], row[2], str(row[3]), row[4])
    console.print(table)


@mdm_app.command("override")
def masterdata_override(
    action: Annotated[str, typer.Argument(help="link | split")],
    record_a: Annotated[str, typer.Argument(help="SYSTEM:ID, e.g. psa:12")],
    record_b: Annotated[str, typer.Argument(help="SYSTEM:ID, e.g. erp:C010044")],
    entity: Annotated[str, typer.Option("--entity", "-e", help="entity of both records")] = "customer",
    note: Annotated[str | None, typer.Option(help="why")] = None,
) -> None:
    """Record a manual decision that every later run honours, and re-resolve the entity.

    Example: coexist masterdata override split psa:12 erp:C010044 --entity customer --note "two companies"
    """
    import datetime as dt

    from masterdata.resolve import Resolver

    if action not in ("link", "split"):
        raise UserError("action must be link or split")
    entities = settings().all_entities()
    if entity not in entities:
        raise UserError(f"unknown entity {entity!r}; defined: {', '.join(entities)}")
    con = _writable_warehouse()
    try:
        resolver = Resolver(con)
        known = {r[0] for r in con.execute("SELECT rid FROM mdm.xref WHERE entity = ? AND rid IN (?, ?)",
                                           [entity, record_a, record_b]).fetchall()}
        missing = [r for r in (record_a, record_b) if r not in known]
        if missing:
            raise UserError(f"no {entity} record {missing[0]!r} (use SYSTEM:ID as `masterdata explain` shows it)")
        con.execute("INSERT INTO mdm.overrides VALUES (?, ?, ?, ?, ?, ?)",
                    [entity, action, record_a, record_b, dt.datetime.now(dt.UTC), note])
        result = resolver.resolve(entity, entities[entity])
    finally:
        con.close()
    console.print(f"recorded: {action} {record_a} {record_b}; {entity} re-resolved "
                  f"({result.clusters:,} golden records)")


@mdm_app.command("explain")
def masterdata_explain(
    record: Annotated[str, typer.Argument(help="SYSTEM:ID or a bare source id")],
    entity: Annotated[str | None, typer.Option("--entity", "-e", help="entity, when the id is ambiguous")] = None,
) -> None:
    """Say why a record sits in its cluster: its golden record, members and the links that join them.

    Example: coexist masterdata explain erp:C010044
    """
    con = _open_warehouse(read_only=True)
    try:
        hits = con.execute("SELECT entity, rid, golden_id, rule, score FROM mdm.xref WHERE (rid = ? OR source_id = ?) "
                           "AND (? IS NULL OR entity = ?)", [record, record, entity, entity]).fetchall()
        if not hits:
            raise UserError(f"no record {record!r} in mdm.xref (run `coexist masterdata run` first)")
        for ent, rid, golden, rule, score in hits:
            members = con.execute("SELECT rid, rule, round(score, 2) FROM mdm.xref WHERE entity = ? AND golden_id = ? "
                                  "ORDER BY rid", [ent, golden]).fetchall()
            links = con.execute(
                "SELECT l_rid, r_rid, rule, round(score, 2), evidence, decision FROM mdm.match_pairs WHERE entity = ? "
                "AND (l_rid IN (SELECT rid FROM mdm.xref WHERE entity = ? AND golden_id = ?) "
                "OR r_rid IN (SELECT rid FROM mdm.xref WHERE entity = ? AND golden_id = ?)) ORDER BY score DESC",
                [ent, ent, golden, ent, golden]).fetchall()
            overrides = con.execute("SELECT action, a_rid, b_rid, note FROM mdm.overrides WHERE entity = ? AND "
                                    "(a_rid = ? OR b_rid = ?)", [ent, rid, rid]).fetchall()
            golden_row = con.execute(f"SELECT * FROM mdm.golden_{ent} WHERE golden_id = ?", [golden]).fetchall()
            cols = [d[0] for d in con.description] if golden_row else []
            console.print(f"[bold]{rid}[/] is {ent} [bold]{golden}[/] (joined by {rule}, score {score})")
            if golden_row:
                shown = {c: v for c, v in zip(cols, golden_row[0], strict=True)
                         if not c.endswith("_source") and c not in ("member_records", "run_id")}
                console.print(f"golden record: {shown}")
            console.print(f"members: {', '.join(m[0] for m in members)}")
            for l_rid, r_rid, r_rule, r_score, evidence, decision in links:
                console.print(f"  {l_rid} ~ {r_rid}: {decision} by {r_rule} (score {r_score}) {evidence}")
            for act, a, b, note in overrides:
                console.print(f"  override {act} {a} {b}: {note or ''}")
    finally:
        con.close()


# ---------------------------------------------------------------- service


@app.command("run")
def run_service(
    http_port: Annotated[int | None, typer.Option(help="health/metrics port on loopback (0 = any free port)")] = None,
    log_format: Annotated[str | None, typer.Option(help="json or text")] = None,
) -> None:
    """Run the service: capture every source continuously and run the scheduled jobs.

    Reconciliations on their cron schedules, the master-data refresh, the analyst snapshot
    (`<data_dir>/snapshot/analyst.duckdb`) and alert checks; GET /healthz and /metrics on
    loopback. Stops cleanly on Ctrl-C or SIGTERM.

    Example: coexist run --http-port 9464
    """
    from coexist import logs
    from coexist.service import Service

    cfg = settings()
    if http_port is not None:
        cfg.service.http_port = http_port
    if log_format is not None:
        if log_format not in ("json", "text"):
            raise UserError(f"--log-format must be json or text, not {log_format!r}")
        cfg.service.log_format = log_format  # type: ignore[assignment]
    logs.setup(cfg.service.log_format)
    try:
        service = Service(cfg)
    except OSError as exc:
        raise UserError(f"cannot listen on {cfg.service.http_host}:{cfg.service.http_port}: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("duckdb"):
            raise UserError(f"cannot open the warehouse {cfg.warehouse_path}: {exc}") from None
        raise
    _exit_jvm(service.run())


# ---------------------------------------------------------------- analysts


@app.command("query")
def query(
    sql: Annotated[str, typer.Argument(help="a SQL query against the warehouse (opened read-only)")],
    as_json: Annotated[bool, typer.Option("--json", help="rows as JSON objects")] = False,
    limit: Annotated[int, typer.Option(help="rows to print")] = 100,
) -> None:
    """Query the warehouse read-only: replicas, cdc.*, mdm.*, recon.*, analytics.* views.

    Example: coexist query "SELECT * FROM analytics.open_breaks"
    """
    import duckdb

    con = _open_warehouse(read_only=True)
    try:
        try:
            cur = con.execute(sql)
        except duckdb.Error as exc:
            raise UserError(f"query failed: {exc}") from None
        cols = [d[0] for d in cur.description or []]
        rows = cur.fetchmany(limit)
    finally:
        con.close()
    if as_json:
        print(json.dumps([dict(zip(cols, r, strict=True)) for r in rows], default=str, indent=2))
        return
    table = Table()
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)


@app.command("export")
def export(
    parquet: Annotated[Path, typer.Option("--parquet", help="directory to write one Parquet file per table")],
) -> None:
    """Export the analytics views and the master-data and reconciliation tables as Parquet.

    Example: coexist export --parquet out/
    """
    con = _open_warehouse(read_only=True)
    parquet.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        names = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema IN "
            "('analytics', 'mdm', 'recon') ORDER BY 1").fetchall()
        for (name,) in names:
            target = parquet / f"{name}.parquet"
            con.execute(f"COPY (SELECT * FROM {name}) TO '{target}' (FORMAT parquet)")
            written.append(target.name)
    finally:
        con.close()
    console.print(f"{len(written)} files in {parquet}: {', '.join(written)}")


@app.command("report")
def report_cmd(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write")] = None,
    snapshot: Annotated[bool, typer.Option("--snapshot", help="read the analyst snapshot, not the warehouse")] = False,
    png: Annotated[Path | None, typer.Option("--png", help="also render it in headless Chromium to this PNG")] = None,
) -> None:
    """Write one self-contained HTML report: breaks by type and age, margin PSA vs ERP, CDC lag, match quality.

    Reads the warehouse read-only, or the analyst snapshot when the service holds the warehouse.

    Example: coexist report --out report.html --png report.png
    """
    import duckdb

    from coexist import report

    cfg = settings()
    target = out or cfg.data_dir / "report.html"
    if snapshot:
        if not cfg.snapshot_path.exists():
            raise UserError(f"no snapshot at {cfg.snapshot_path}: `coexist run` publishes it")
        con = duckdb.connect(str(cfg.snapshot_path), read_only=True)
    else:
        con = _open_warehouse(read_only=True)
    try:
        with console.status("drawing the report"):
            report.write(con, target)
    finally:
        con.close()
    console.print(f"report written to {target}")
    if png is not None:
        try:
            report.render_png(target, png)
        except RuntimeError as exc:
            raise UserError(str(exc)) from None
        console.print(f"rendered to {png}")


def main() -> None:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack to stderr
    try:
        app()
    except (ConfigError, SandboxError, UserError) as exc:
        from rich.markup import escape

        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(2)


if __name__ == "__main__":
    main()

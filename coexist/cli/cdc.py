"""`coexist cdc ...`: capture into the warehouse, publish to Kafka, status, verify, resnapshot."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from coexist.cli.common import exit_process, read_warehouse, settings
from coexist.cli.output import CsvOpt, JsonOpt, Output, err_console
from coexist.config import Settings
from core.errors import CompareFailed, Incomplete, SourceRefused, SourceUnavailable, UsageError, WarehouseBusy

app = typer.Typer(help="Change data capture into the DuckDB warehouse.", no_args_is_help=True)

SourceOpt = Annotated[list[str] | None, typer.Option("--source", "-s", help="only this source (repeatable)")]
UntilIdleOpt = Annotated[bool, typer.Option("--until-idle", help="stop once every source is quiet")]
IdleOpt = Annotated[float | None, typer.Option(help="quiet spell that counts as idle (seconds)")]


def _report(out: Output, result: dict[str, Any], verb: str) -> int:
    """One row per source; a source that stopped is reported on stderr and makes the exit code 2."""
    failed = False
    for name, p in result.items():
        if p.error:
            failed = True
            err_console.print(f"{name} stopped: {p.error}", style="red", markup=False)
    rows = [
        {
            "source": name,
            verb: p.applied,
            "batches": p.batches,
            "duplicates": p.duplicates,
            "dead_letters": p.dead_letters,
            "error": p.error,
        }
        for name, p in result.items()
    ]
    # The error is on stderr already; the table keeps to the counts.
    columns = [c for c in rows[0] if c != "error"] if out.human and rows else None
    out.rows(rows, columns, title="capture")
    return 2 if failed else 0


@app.command("run")
def run(
    source: SourceOpt = None,
    until_idle: UntilIdleOpt = False,
    idle_seconds: IdleOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Capture changes from the sources into the warehouse until Ctrl-C / SIGTERM (or idle).

    Example: coexist cdc run --until-idle
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from cdc.runner import Capture
    from coexist import sources

    out = Output(as_json, as_csv)
    cfg = settings()
    readers = sources.readers(cfg, source)
    if any(type(r).__name__ == "KafkaReader" for r in readers):
        from coexist.service import logs

        logs.setup("text")  # group membership (partitions assigned/revoked) goes to stderr
    capture = Capture(_capture_target(cfg, readers), readers, retry_seconds=cfg.cdc.retry_seconds)
    if hasattr(capture.sink, "drop_columns"):
        capture.sink.drop_columns = cfg.cdc.dropped_columns == "drop"
    idle = (idle_seconds or cfg.cdc.idle_seconds) if until_idle else None
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not out.human,
    ) as progress:
        tasks = {r.name: progress.add_task(f"{r.name}: starting", total=None) for r in readers}

        def on_batch(name: str, stats: Any) -> None:
            p = capture.progress[name]
            progress.update(
                tasks[name],
                description=f"{name}: {p.applied:,} applied, {p.duplicates:,} duplicates, "
                f"{p.dead_letters:,} dead letters",
            )

        capture.on_batch = on_batch
        result = capture.run(idle_seconds=idle)
    exit_process(_report(out, result, "applied"))


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


@app.command("publish")
def publish(
    source: SourceOpt = None,
    until_idle: UntilIdleOpt = False,
    idle_seconds: IdleOpt = None,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="Kafka brokers (else publish.bootstrap_servers)")
    ] = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Read the databases and publish their changes to Kafka as Debezium topics (<source>.<db>.<table>).

    Keyed by primary key; one Kafka transaction per batch holds the events and the reader's
    position, so a restart neither skips nor repeats.

    Example: coexist cdc publish --bootstrap-servers 127.0.0.1:9092
    """
    from cdc.kafka import KafkaPublishSink
    from cdc.runner import Capture
    from coexist import sources
    from core.errors import SourceUnavailable

    out = Output(as_json, as_csv)
    cfg = settings()
    if bootstrap_servers:
        cfg.publish.bootstrap_servers = bootstrap_servers
    readers = sources.readers(cfg, source, databases_only=True)
    for reader in readers:  # the publisher encodes events one by one: no set-based decoding to undo
        if hasattr(reader, "bulk"):
            reader.bulk = None
    try:
        sink = KafkaPublishSink(cfg.publish)
    except Exception as exc:
        raise SourceUnavailable(f"cannot reach Kafka at {cfg.publish.bootstrap_servers}: {exc}") from None
    capture = Capture(sink, readers)
    idle = (idle_seconds or cfg.cdc.idle_seconds) if until_idle else None
    with out.status("publishing to Kafka") as status:
        if status is not None:
            capture.on_batch = lambda name, stats: status.update(
                "published " + ", ".join(f"{n}: {p.applied:,}" for n, p in capture.progress.items())
            )
        result = capture.run(idle_seconds=idle)
    exit_process(_report(out, result, "published"))


@app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Per source: position, lag, events and dead letters per table (works while capture runs).

    Example: coexist cdc status --json
    """
    from cdc.sink import status_path
    from cdc.status import capture_status, kafka_status
    from coexist import sources
    from core import warehouse

    out = Output(as_json)
    # What capture publishes after each commit (so status never waits for, nor blocks, the writer);
    # else the warehouse, or the service's analyst snapshot while the service holds it.
    published = status_path(settings().warehouse_path)
    con = warehouse.connect(published, read_only=True) if published.exists() else read_warehouse()
    try:
        report = capture_status(con, sources.configured_sources(settings(), required=False))
        kafka = [kafka_status(con, name, config) for name, config in sources.kafka_sources(settings()).items()]
    finally:
        con.close()
    if not out.human:
        out.document(report + kafka)
        return
    for entry in kafka:
        out.say(
            f"{entry['source']} (kafka) {entry['url']}  "
            + (
                f"lag {entry['lag_total']:,} messages (max {entry['lag_max']:,} in one partition)"
                if entry["reachable"]
                else f"unreachable: {entry['error']}"
            )
        )
        out.rows(
            [
                {
                    "topic": p["topic"],
                    "partition": p["partition"],
                    "next offset": p["next_offset"],
                    "high water": p["high_water"],
                    "lag": p["lag"],
                }
                for p in entry["partitions"]
            ]
        )
    for entry in report:
        behind = entry["source_state"].get("behind_bytes")
        out.say(
            f"{entry['source']} ({entry['kind']}) {entry['url']}  snapshot "
            f"{'done' if entry['snapshot_done'] else 'not finished'}  events {entry['events']:,}  "
            f"dead letters {entry['dead_letters']:,}  lag p50/p95 {entry['lag_p50_s']}/{entry['lag_p95_s']} s"
            f"  behind {behind if behind is not None else '?'} bytes"
        )
        out.rows(
            [
                {"table": name, "events": counts["events"], "dead letters": counts["dead_letters"]}
                for name, counts in entry["tables"].items()
            ]
        )
        if entry["schema_changes"]:
            out.rows(
                [
                    {"applied": c["applied_at"][:19], "table": c["table"], "change": c["kind"], "ddl": c["ddl"][:60]}
                    for c in entry["schema_changes"][:10]
                ],
                title=f"{entry['source']}: recent schema changes",
            )


@app.command("verify")
def verify(source: SourceOpt = None, as_json: JsonOpt = False, as_csv: CsvOpt = False) -> None:
    """Compare every replica table with its live source: counts, then a per-key hash diff.

    Exit codes: 0 every table equal, 1 a table differs, 3 a source could not be compared.

    Example: coexist cdc verify --source erp
    """
    import psycopg
    import pymysql

    from cdc.verify import verify_source
    from coexist import sources

    out = Output(as_json, as_csv)
    configured = sources.configured_sources(settings())
    unknown = [s for s in source or [] if s not in configured]
    if unknown:
        raise UsageError(f"unknown source {unknown[0]!r}; configured: {', '.join(configured)}")
    con = read_warehouse()
    diffs = []
    try:
        for name, config in configured.items():
            if source and name not in source:
                continue
            try:
                diffs.extend(verify_source(con, name, config))
            except (psycopg.Error, pymysql.Error, OSError, SourceRefused) as exc:
                raise CompareFailed(f"cannot compare source {name!r} ({config.url()}): {exc}") from None
    finally:
        con.close()
    if out.format == "json":
        out.document([asdict(d) | {"equal": d.equal} for d in diffs])
    else:
        out.rows(
            [
                {
                    "source": d.source,
                    "table": d.table,
                    "source rows": d.source_rows,
                    "replica rows": d.replica_rows,
                    "missing": d.n_missing,
                    "extra": d.n_extra,
                    "different": d.n_different,
                    "equal": d.equal,
                    "note": d.note or (f"differs in {', '.join(d.columns)}" if d.columns else None),
                }
                for d in diffs
            ],
            title="replica vs source",
        )
        for d in diffs:
            for kind in ("missing", "extra", "different"):
                keys = getattr(d, kind)
                if keys:
                    out.say(f"{d.source}.{d.table} {kind}: {', '.join(keys)}")
    if not all(d.equal for d in diffs):
        raise typer.Exit(1)


def _resnapshot_online(out: Output, cfg: Settings, source: str, tables: list[str]) -> None:
    """Ask the running capture to re-snapshot `tables` and wait for its answer."""
    from cdc import requests

    request = requests.submit(cfg.warehouse_path, source, tables)
    with out.status(f"waiting for the running capture to re-snapshot {source}: {', '.join(tables)}"):
        done = requests.wait(cfg.warehouse_path, request, timeout=3600)
    if done is None:
        raise Incomplete(f"the running capture did not take the request within an hour (request {request.id})")
    if done.error:
        raise SourceUnavailable(
            f"source {source!r}: the re-snapshot failed: {done.error}; the replica was left as it was"
        )
    row = {"source": source, "tables": ", ".join(tables), "rows": done.rows, "dead_letters": done.dead_letters}
    out.rows(
        [row | {"swapped": done.dead_letters == 0}],
        ["source", "tables", "rows", "dead_letters", "swapped"],
        title="reloaded by the running capture",
    )
    if done.dead_letters:
        raise Incomplete(
            f"{source}: {done.dead_letters} row(s) did not decode (see cdc.dead_letter); "
            "the replica tables were left as they were"
        )


@app.command("resnapshot")
def resnapshot(
    table: Annotated[list[str] | None, typer.Argument(help="table(s) to reload; all when omitted")] = None,
    source: Annotated[str | None, typer.Option("--source", "-s", help="source holding the table")] = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Reload tables from a fresh consistent snapshot of the source (capture keeps its position).

    The tables load into staging and are swapped in only when every row decoded. While `coexist cdc
    run` or `coexist run` holds the warehouse, the running capture does it (name the tables and the
    source), streaming on meanwhile.

    Example: coexist cdc resnapshot customers --source erp
    """
    import psycopg
    import pymysql

    from cdc.binlog import BinlogReader
    from cdc.config import MariaDBSource
    from cdc.pgsnapshot import pg_snapshot
    from cdc.sink import DuckDBSink
    from cdc.sink import resnapshot as resnapshot_tables
    from coexist import sources
    from core import warehouse

    out = Output(as_json, as_csv)
    cfg = settings()
    configured = sources.configured_sources(cfg)
    if source and source not in configured:
        raise UsageError(f"unknown source {source!r}; configured: {', '.join(configured)}")
    names = [source] if source else list(configured)
    try:
        warehouse.connect(cfg.warehouse_path).close()  # a damaged warehouse is reported before any work
    except WarehouseBusy:
        if not (table and source):
            raise UsageError(
                "capture is running (it holds the warehouse): name the table(s) and --source, and it re-snapshots them"
            ) from None
        _resnapshot_online(out, cfg, source, table)
        return
    sink = DuckDBSink(cfg.warehouse_path)
    reloaded: list[dict[str, Any]] = []
    try:
        for name in names:
            config = configured[name]
            if isinstance(config, MariaDBSource):
                reader = BinlogReader(name, config, batch_size=cfg.cdc.batch_size)
                conn = reader.connect()
                available = reader.list_tables(conn)
                conn.close()
            else:
                available = sorted(sink.replica_tables(name)) or list(config.tables or [])
            wanted = [t for t in (table or available) if t in available]
            if not wanted:
                continue
            batches = (
                reader.snapshot(wanted)
                if isinstance(config, MariaDBSource)
                else pg_snapshot(name, config, wanted, cfg.cdc.batch_size)
            )
            try:
                with out.status(f"resnapshot {name}: {', '.join(wanted)}"):
                    loaded = resnapshot_tables(sink.apply, batches, name, wanted)
            except (psycopg.Error, pymysql.Error) as exc:
                raise SourceUnavailable(
                    f"source {name!r}: reading the snapshot failed: {str(exc).splitlines()[0]}; "
                    "the replica tables were left as they were"
                ) from None
            reloaded.append(
                {
                    "source": name,
                    "tables": ", ".join(wanted),
                    "rows": loaded.rows,
                    "dead_letters": loaded.dead_letters,
                    "swapped": loaded.swapped,
                }
            )
    finally:
        sink.close()
    if table and not reloaded:
        raise UsageError(f"no source has table(s) {', '.join(table)}")
    out.rows(reloaded, ["source", "tables", "rows", "dead_letters", "swapped"], title="reloaded")
    failed = [r for r in reloaded if not r["swapped"]]
    if failed:
        raise Incomplete(
            "; ".join(f"{r['source']}: {r['dead_letters']} row(s) of {r['tables']} did not decode" for r in failed)
            + " (see cdc.dead_letter); those replica tables were left as they were"
        )


@app.command("setup-ddl")
def setup_ddl(
    source: Annotated[str, typer.Option("--source", "-s", help="the PostgreSQL source")],
    user: Annotated[str | None, typer.Option(help="a superuser to install as (default: the source's user)")] = None,
    password_env: Annotated[str | None, typer.Option(help="environment variable holding that user's password")] = None,
    print_sql: Annotated[bool, typer.Option("--print", help="print the SQL for a DBA instead of running it")] = False,
) -> None:
    """Let PostgreSQL capture see DROP TABLE and RENAME TABLE (event triggers; needs a superuser).

    Logical decoding carries no DDL: the event triggers write those statements into a log table
    (`ddl_table`, default coexist_ddl) in the captured schema, read from the stream in order. If the
    publication is not FOR ALL TABLES, add that table to it.

    Example: coexist cdc setup-ddl --source psa --user postgres --password-env PGADMIN_PASSWORD
    """
    import psycopg

    from cdc import pgddl
    from cdc.config import PostgresSource
    from coexist import sources

    configured = sources.configured_sources(settings())
    config = configured.get(source)
    if not isinstance(config, PostgresSource):
        postgres = [n for n, c in configured.items() if isinstance(c, PostgresSource)]
        raise UsageError(f"--source: {source!r} is not a configured PostgreSQL source; those are: {postgres}")
    if print_sql:
        typer.echo(pgddl.install_sql(config.schema_name, config.ddl_table))
        typer.echo(f"GRANT SELECT ON {config.schema_name}.{config.ddl_table} TO {config.user};")
        return
    admin = config.model_copy(update={"user": user or config.user, "password_env": password_env or config.password_env})
    try:
        with admin.connect(autocommit=True) as conn:
            pgddl.install(conn, config.schema_name, config.ddl_table, grant_to=config.user)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SourceRefused(
            f"source {source!r}: installing event triggers needs a superuser ({str(exc).strip()}); "
            "pass --user/--password-env, or --print the SQL for a DBA"
        ) from None
    err_console.print(f"{source}: DROP/RENAME TABLE now reach capture through {config.schema_name}.{config.ddl_table}")

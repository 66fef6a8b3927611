"""`coexist sandbox ...`, `coexist seed` and `coexist demo`: the local sandbox and its generated firm."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from coexist.cli.common import exit_process, settings
from coexist.cli.output import CsvOpt, JsonOpt, Output, console

app = typer.Typer(help="The local sandbox: a private PostgreSQL (PSA) and MariaDB (ERP).", no_args_is_help=True)


@app.command("up")
def up(as_json: JsonOpt = False) -> None:
    """Start the sandbox databases (idempotent; restarts them after a crash).

    Example: coexist sandbox up
    """
    from coexist.sandbox import servers

    out = Output(as_json)
    with out.status("starting PostgreSQL (PSA) and MariaDB (ERP)..."):
        state = servers.up(settings())
    out.say(f"sandbox up in {state.root}", "green")
    _show(out, servers.status(settings(), with_counts=False))


@app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Show URLs, ports, pids and row counts per table.

    Example: coexist sandbox status --json
    """
    from coexist.sandbox import servers

    _show(Output(as_json), servers.status(settings()))


@app.command("down")
def down(
    destroy: Annotated[bool, typer.Option("--destroy", help="also delete the sandbox data")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop both sandbox databases by pid (safe after a crash).

    Example: coexist sandbox down
    """
    from coexist.sandbox import servers

    out = Output(as_json)
    if destroy:
        servers.destroy(settings())
        out.document({"stopped": True, "destroyed": True}, lambda: out.say("sandbox stopped and its data deleted"))
        return
    stopped = servers.down(settings())
    out.rows([{"server": name, "was_running": was} for name, was in stopped.items()], title="sandbox down")


def _show(out: Output, report: dict[str, Any]) -> None:
    if not out.human:
        out.document(report)
        return
    if not report.get("initialised"):
        out.say(f"no sandbox in {report['data_dir']}: run `coexist sandbox up`")
        return
    out.rows(
        [
            {
                "server": name,
                "role": report[name]["role"],
                "up": report[name]["up"],
                "pid": report[name]["pid"],
                "url": report[name]["url"],
            }
            for name in ("postgres", "mariadb")
        ],
        title="sandbox",
    )
    counts = report.get("row_counts") or {}
    if counts:
        out.rows(
            [
                {"system": system, "table": name, "rows": count}
                for system, tables in counts.items()
                for name, count in tables.items()
            ],
            title="row counts",
        )
    out.say(f"warehouse: {report['warehouse']}")


def seed(
    scale: Annotated[str, typer.Option(help="tiny | small | medium | large")] = "small",
    customers: Annotated[int | None, typer.Option(help="override: number of true customers")] = None,
    time_entries: Annotated[int | None, typer.Option(help="override: number of PSA time entries")] = None,
    seed_value: Annotated[int, typer.Option("--seed", help="random seed")] = 7,
    reset: Annotated[bool, typer.Option(help="empty both databases first")] = True,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Fill both sandbox databases with a coherent firm and plant known discrepancies.

    Writes the ground-truth manifest to <data_dir>/manifest/.

    Example: coexist seed --scale small
    """
    from coexist.sandbox import generator, servers

    out = Output(as_json, as_csv)
    spec = generator.Scale.named(scale, customers=customers, time_entries=time_entries, seed=seed_value)
    state = servers.require_state(settings())
    summary = generator.seed(
        state, spec, settings().data_dir / "manifest", reset=reset, console=console if out.human else None
    )
    out.rows([{"what": k, "count": v} for k, v in summary.items()], title=f"seeded ({scale})")


def demo(scale: Annotated[str, typer.Option(help="generator scale for the demo firm")] = "small") -> None:
    """The main job on the local sandbox, end to end: sandbox, seed, capture, and what it found.

    Example: coexist demo
    """
    from coexist.sandbox import demo as demo_module

    demo_module.run(settings(), scale=scale, console=console)
    exit_process(0)

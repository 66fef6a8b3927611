"""The `coexist` command. Every subcommand works with no flags against the local sandbox."""

from __future__ import annotations

import json
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
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(cdc_app, name="cdc")

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

    demo_module.run(settings(), scale=scale, console=console)


def main() -> None:
    try:
        app()
    except (ConfigError, SandboxError, UserError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()

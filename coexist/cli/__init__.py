"""The `coexist` command: one module per command group, one output layer, one error handler.

Every error the user can cause is a `core.errors.CoexistError`: `main` prints it as one line
and exits with its code (2, or 3 for "could not compare"); a bug still shows its traceback.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from coexist.cli import analyst, cdc, masterdata, reconcile, sandbox, service, web
from coexist.cli.common import leave_jvm, set_config
from coexist.cli.output import err_console
from core.errors import CoexistError

app = typer.Typer(
    help="coexist keeps a legacy ERP and a PSA in step: CDC into DuckDB, master data, reconciliation.\n\n"
    "Example: coexist sandbox up && coexist seed --scale small && coexist cdc run --until-idle",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(cdc.app, name="cdc")
app.add_typer(reconcile.app, name="reconcile")
app.add_typer(service.schedule_app, name="schedule")
app.add_typer(masterdata.app, name="masterdata")
app.command("seed")(sandbox.seed)
app.command("demo")(sandbox.demo)
app.command("run")(service.run)
app.command("query")(analyst.query)
app.command("export")(analyst.export)
app.command("report")(analyst.report)
app.command("web")(web.web)
app.add_typer(web.users_app, name="users")


def _version() -> str:
    try:
        return version("coexist")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        print(f"coexist {_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="coexist.toml to use", envvar="COEXIST_CONFIG")
    ] = None,
    show_version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    set_config(config)


def main() -> None:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack to stderr
    # What coexist writes (warehouse, snapshot, job store, offsets, logs, state) is for its own user only.
    os.umask(0o077)
    try:
        app()
    except CoexistError as exc:
        err_console.print(Text("error: ", style="red") + Text(str(exc)))
        leave_jvm(exc.exit_code)
        sys.exit(exc.exit_code)

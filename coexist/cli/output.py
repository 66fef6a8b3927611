"""The CLI's one output layer: tables for people, `--json` and `--csv` for scripts.

Data never reaches rich's markup parser (a value like `[/bold]` is printed as it is), tables
are not cut to 80 columns when the output is piped, and a row limit is always stated.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import decimal
import json
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (for scripts)")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="print CSV with a header row (for spreadsheets)")]


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Piped output keeps whole lines: a wide table is not cut to 80 columns.
    return Console(file=stream, width=None if stream.isatty() else 100_000, soft_wrap=not stream.isatty())


console = _console()
err_console = _console(stderr=True)


def plain(value: Any) -> Any:
    """A JSON-safe form of a value: numbers stay numbers, everything else is its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def cell(value: Any) -> Text:
    """A table cell: literal text (no markup), numbers with thousands separators."""
    if value is None:
        return Text("")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, int):
        return Text(f"{value:,}", justify="right")
    if isinstance(value, float):
        return Text(f"{value:,.2f}", justify="right")
    if isinstance(value, dict | list):
        return Text(json.dumps(plain(value), ensure_ascii=False))
    return Text(str(value))


class Output:
    """Where a command's results go, in the format the user asked for."""

    def __init__(self, as_json: bool = False, as_csv: bool = False) -> None:
        if as_json and as_csv:
            from core.errors import UsageError

            raise UsageError("choose one of --json and --csv")
        self.format = "json" if as_json else "csv" if as_csv else "table"

    @property
    def human(self) -> bool:
        return self.format == "table"

    def rows(
        self,
        rows: Sequence[dict[str, Any]],
        columns: Sequence[str] | None = None,
        title: str | None = None,
        more: bool = False,
        limit: int | None = None,
    ) -> None:
        """A list of records. `more` says rows beyond `limit` were left out (stated, never silent)."""
        columns = list(columns or (rows[0].keys() if rows else []))
        if self.format == "json":
            print(json.dumps([{c: plain(r.get(c)) for c in columns} for r in rows], indent=2, ensure_ascii=False))
        elif self.format == "csv":
            writer = csv.writer(sys.stdout)
            writer.writerow(columns)
            for r in rows:
                writer.writerow(["" if r.get(c) is None else plain(r.get(c)) for c in columns])
        else:
            table = Table(title=Text(title) if title else None)
            for c in columns:
                table.add_column(Text(c))
            for r in rows:
                table.add_row(*[cell(r.get(c)) for c in columns])
            console.print(table)
        if more:
            err_console.print(Text(f"showing the first {limit:,} rows; more exist (raise --limit, 0 for all)"))

    def record(self, data: dict[str, Any], title: str | None = None) -> None:
        """One record: a field/value table for people, an object in JSON, one row in CSV."""
        if self.format == "json":
            print(json.dumps(plain(data), indent=2, ensure_ascii=False))
        elif self.format == "csv":
            self.rows([data])
        else:
            self.rows([{"field": k, "value": v} for k, v in data.items()], ["field", "value"], title)

    def document(self, data: Any, render: Any = None) -> None:
        """A nested result: JSON as it is (CSV too, it has no flat form), or `render()` for people."""
        if self.format != "table" or render is None:
            print(json.dumps(plain(data), indent=2, ensure_ascii=False))
        else:
            render()

    def status(self, text: str) -> contextlib.AbstractContextManager[Any]:
        """A spinner while something slow runs; nothing in --json/--csv mode."""
        return err_console.status(Text(text)) if self.human else contextlib.nullcontext()

    def say(self, text: str, style: str | None = None) -> None:
        """A line for people (stderr in --json/--csv mode, so stdout stays parseable)."""
        (console if self.human else err_console).print(Text(text, style=style or ""))


def say(text: str, style: str | None = None) -> None:
    console.print(Text(text, style=style or ""))


def warn(text: str) -> None:
    err_console.print(Text(text, style="yellow"))

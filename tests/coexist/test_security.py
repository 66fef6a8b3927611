"""Attacks by another local account on a sandbox run through the CLI: no login, nothing readable, no secrets."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coexist.config import Settings
from coexist.sandbox import servers as sandbox
from tests.harness import cli, make_data_dir

pytestmark = pytest.mark.slow  # starts a sandbox


@pytest.fixture(scope="module")
def secured() -> Iterator[Settings]:
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    try:
        cli(data_dir, "sandbox", "up")
        cli(data_dir, "seed", "--scale", "tiny")
        cli(data_dir, "cdc", "run", "--until-idle")
        cli(data_dir, "reconcile", "run")
        yield settings
    finally:
        cli(data_dir, "sandbox", "down", check=False)
        shutil.rmtree(data_dir, ignore_errors=True)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={"PATH": os.environ["PATH"]},
    )


def test_another_local_account_cannot_log_in_to_either_server(secured: Settings) -> None:
    state = sandbox.require_state(secured)
    pg, my = state.postgres, state.mariadb
    attempts = {
        "postgres socket": as_nobody(
            "psql", "-w", "-h", pg.socket_dir, "-p", str(pg.port), "-U", "postgres", "-c", "select 1"
        ),
        "postgres tcp": as_nobody(
            "psql", "-w", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-c", "select 1"
        ),
        "mariadb socket": as_nobody("mariadb", "-S", f"{my.socket_dir}/mysqld.sock", "-u", "root", "-e", "select 1"),
        "mariadb tcp": as_nobody("mariadb", "-h", "127.0.0.1", "-P", str(my.port), "-u", "root", "-e", "select 1"),
    }
    for what, proc in attempts.items():
        assert proc.returncode != 0, f"{what}: logged in without a password\n{proc.stdout}"
        assert "password" in proc.stderr.lower() or "denied" in proc.stderr.lower(), (what, proc.stderr)
    # The same logins with the password from the (0600) state file work: the refusals above are authentication.
    ok = subprocess.run(
        ["psql", "-h", pg.socket_dir, "-p", str(pg.port), "-U", "postgres", "-tAc", "select 1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": pg.admin_password},
    )
    assert ok.stdout.strip() == "1", ok.stderr


def test_nothing_coexist_wrote_is_readable_by_others(secured: Settings) -> None:
    data_dir = Path(secured.data_dir)
    written = [
        secured.warehouse_path,
        data_dir / "sandbox" / "state.json",
        data_dir / "sandbox" / "postgres.log",
        data_dir / "sandbox" / "mariadb.log",
        *(data_dir / "cdc").rglob("*"),
        *(data_dir / "manifest").rglob("*"),
    ]
    assert secured.warehouse_path.exists() and any((data_dir / "cdc").rglob("*"))
    readable = [str(p) for p in written if p.is_file() and p.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH)]
    assert readable == [], readable
    for directory in (data_dir / "sandbox", data_dir / "cdc", data_dir / "manifest"):
        assert not directory.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH), directory
    assert as_nobody("cat", str(secured.warehouse_path)).returncode != 0


def test_the_binlog_capture_reads_holds_no_password(secured: Settings) -> None:
    state = sandbox.require_state(secured)
    secrets = [state.mariadb.app_password, state.mariadb.cdc_password, state.mariadb.admin_password]
    logs = list(Path(state.mariadb.data_dir).glob("mysql-bin.[0-9]*"))
    assert logs
    for log in logs:
        content = log.read_bytes()
        assert not any(secret.encode() in content for secret in secrets), log
    assert json.loads((Path(secured.data_dir) / "sandbox" / "state.json").read_text())["mariadb"]["admin_password"]


def test_up_adopts_a_server_restarted_from_outside(secured: Settings) -> None:
    state = sandbox.require_state(secured)
    pg_ctl = str(sandbox._pg_bindir() / "pg_ctl")
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            pg_ctl,
            "-D",
            state.postgres.data_dir,
            "-l",
            state.postgres.log_file,
            "-m",
            "fast",
            "-w",
            "restart",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    live = int((Path(state.postgres.data_dir) / "postmaster.pid").read_text().split()[0])
    assert live != state.postgres.pid  # the state file's pid is now stale
    cli(secured.data_dir, "sandbox", "up")
    after = sandbox.require_state(secured)
    assert after.postgres.pid == live and sandbox.pid_alive(live, "postgres")
    assert json.loads(cli(secured.data_dir, "sandbox", "status", "--json").stdout)["postgres"]["up"]

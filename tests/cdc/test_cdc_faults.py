"""Faults around capture: a dropped replication slot, source restarts, SIGTERM, a broken warehouse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from coexist.config import Settings
from coexist.sandbox import generator
from coexist.sandbox import servers as sandbox
from tests.harness import cli, pg_slot_active, pg_superuser, seeded_and_captured, wait_until


@pytest.fixture(scope="module")
def captured() -> Iterator[Settings]:
    with seeded_and_captured(generator.Scale.named("tiny", seed=9)) as settings:
        yield settings


def assert_replica_equal(settings: Settings) -> None:
    verify = cli(settings.data_dir, "cdc", "verify", "--json", check=False)
    unequal = [d for d in json.loads(verify.stdout) if not d["equal"]]
    assert verify.returncode == 0 and not unequal, unequal


def psa_change(settings: Settings, sql: str) -> None:
    with sandbox.pg_app_connect(sandbox.require_state(settings)) as conn:
        conn.execute(sql)


def erp_change(settings: Settings, sql: str) -> None:
    with sandbox.my_app_connect(sandbox.require_state(settings)) as conn, conn.cursor() as cur:
        cur.execute(sql)


@pytest.mark.slow
def test_dropped_replication_slot_recovers_with_a_fresh_snapshot(captured: Settings) -> None:
    with pg_superuser(captured) as conn:
        conn.execute("SELECT pg_drop_replication_slot('coexist')")
    # Changes made while no slot exists are lost to the log: only a new snapshot can bring them.
    psa_change(captured, "UPDATE clients SET client_name = client_name || ' (slotless)' WHERE client_id <= 5")
    psa_change(captured, "DELETE FROM expenses WHERE expense_id IN (SELECT expense_id FROM expenses LIMIT 7)")
    run = cli(captured.data_dir, "cdc", "run", "--until-idle", "--source", "psa")
    assert "slot" in run.stderr and "fresh snapshot" in run.stderr
    assert_replica_equal(captured)


@pytest.mark.slow
def test_source_restarts_while_capturing_and_sigterm_stops_cleanly(captured: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")} | {
        "COEXIST_DATA_DIR": str(captured.data_dir)
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "coexist", "cdc", "run", "--json"],
        cwd=captured.data_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: pg_slot_active(captured), 60, "PostgreSQL capture to stream")
        erp_change(captured, "UPDATE customers SET city = 'Before Restart' WHERE cust_no LIKE '%3'")
        psa_change(captured, "UPDATE resources SET labor_category = 'Principal' WHERE resource_id % 4 = 0")
        state = sandbox.require_state(captured)
        # Restart both databases underneath the running capture.
        sandbox.stop_pid(state.mariadb.pid, "mariadbd", signal.SIGTERM)
        sandbox.stop_pid(state.postgres.pid, "postgres", signal.SIGINT)
        sandbox.up(captured)
        erp_change(captured, "UPDATE customers SET city = 'After Restart' WHERE cust_no LIKE '%7'")
        erp_change(captured, "DELETE FROM payments ORDER BY payment_id LIMIT 5")
        psa_change(captured, "UPDATE resources SET labor_category = 'Director' WHERE resource_id % 5 = 0")
        # The running capture reconnects by itself (the ERP's binlog reader polls without a standing
        # connection: that it survived is shown by the exit code and report below, its data by verify).
        wait_until(lambda: pg_slot_active(captured), 90, "PostgreSQL capture to reattach after the restart")
        assert proc.poll() is None, proc.communicate()
        # Status while the running capture holds the warehouse's write lock: read from what it publishes.
        status = json.loads(cli(captured.data_dir, "cdc", "status", "--json").stdout)
        assert {s["source"] for s in status} == {"psa", "erp"} and all(s["events"] > 0 for s in status), status
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    report = {row["source"]: row for row in json.loads(out)}
    assert set(report) == {"psa", "erp"} and all(row["error"] is None for row in report.values()), report
    cli(captured.data_dir, "cdc", "run", "--until-idle")
    assert_replica_equal(captured)


@pytest.mark.slow
def test_malformed_source_value_goes_to_dead_letter_and_capture_goes_on(captured: Settings) -> None:
    import duckdb

    # A replica column narrowed by hand makes the next change of that table fail to fit: it must be
    # dead-lettered with its reason, and the other tables' changes still applied.
    con = duckdb.connect(str(captured.warehouse_path))
    con.execute("ALTER TABLE replica_erp.company_codes ALTER COLUMN name SET DATA TYPE INTEGER USING 0")
    con.close()
    erp_change(captured, "UPDATE company_codes SET name = CONCAT(name, ' Group') WHERE company_code = '1000'")
    erp_change(captured, "UPDATE customers SET street = 'Dead Letter Lane 1' WHERE cust_no LIKE '%1'")
    cli(captured.data_dir, "cdc", "run", "--until-idle", "--source", "erp")
    con = duckdb.connect(str(captured.warehouse_path), read_only=True)
    try:
        dead = con.execute("SELECT table_name, reason, raw FROM cdc.dead_letter WHERE source = 'erp'").fetchall()
        streets = con.execute(
            "SELECT count(*) FROM replica_erp.customers WHERE street = 'Dead Letter Lane 1'"
        ).fetchall()[0][0]
    finally:
        con.close()
    assert [d[0] for d in dead] == ["company_codes"]
    assert "Group" in dead[0][2]
    assert streets > 0
    status = json.loads(cli(captured.data_dir, "cdc", "status", "--json").stdout)
    erp = next(s for s in status if s["source"] == "erp")
    assert erp["dead_letters"] == 1 and erp["tables"]["company_codes"]["dead_letters"] == 1
    # Repair: resnapshot the table; afterwards the replica is right again.
    con = duckdb.connect(str(captured.warehouse_path))
    con.execute("DROP TABLE replica_erp.company_codes")
    con.close()
    cli(captured.data_dir, "cdc", "resnapshot", "company_codes", "--source", "erp")
    assert_replica_equal(captured)

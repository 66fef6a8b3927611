"""Capture survives SIGKILL at random moments while both sources change: the replica equals the source."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import duckdb
import pytest

from coexist.config import Settings
from coexist.sandbox import generator, workload
from coexist.sandbox import servers as sandbox
from tests.harness import assert_changelog_exactly_once, cli, make_data_dir


@pytest.mark.slow
def test_random_workload_with_sigkills_leaves_replica_equal_to_source() -> None:
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")} | {
        "COEXIST_DATA_DIR": str(data_dir),
        "COEXIST_CDC__BATCH_SIZE": "500",
    }
    try:
        state = sandbox.up(settings)
        generator.seed(state, generator.Scale.named("tiny", seed=5), data_dir / "manifest")
        # The first kill lands mid-snapshot; afterwards the snapshot completes and streaming is what gets killed.
        log = open(data_dir / "capture.log", "ab")  # noqa: SIM115 (shared by the runs below, closed at the end)
        first = subprocess.Popen(
            [sys.executable, "-m", "coexist", "cdc", "run"], cwd=data_dir, env=env, stdout=log, stderr=log
        )
        time.sleep(4.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
        cli(data_dir, "cdc", "run", "--until-idle", env={"COEXIST_CDC__BATCH_SIZE": "500"})
        stop = threading.Event()
        stats: dict[str, workload.WorkloadStats] = {}
        worker = threading.Thread(
            target=lambda: stats.update(workload.run(state, stop, tx_per_second=25, seed=5, ddl_after=8.0))
        )
        worker.start()
        rng = random.Random(2026)
        kills = 0
        try:
            for _ in range(4):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "coexist", "cdc", "run"], cwd=data_dir, env=env, stdout=log, stderr=log
                )
                time.sleep(rng.uniform(3.0, 8.0))
                assert proc.poll() is None, (
                    "capture exited on its own before it was killed:\n"
                    + (data_dir / "capture.log").read_text(errors="replace")[-3000:]
                )
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
        finally:
            stop.set()
            worker.join()
        log.close()
        assert kills == 4
        assert stats["psa"].transactions > 20 and stats["erp"].transactions > 20
        assert stats["psa"].rollbacks > 0 and stats["erp"].rollbacks > 0
        assert stats["psa"].ddl and stats["erp"].ddl

        done = cli(data_dir, "cdc", "run", "--until-idle", env={"COEXIST_CDC__BATCH_SIZE": "500"})
        assert "stopped" not in done.stderr
        verify = cli(data_dir, "cdc", "verify", "--json", check=False)
        diffs = json.loads(verify.stdout)
        unequal = [d for d in diffs if not d["equal"]]
        assert verify.returncode == 0 and not unequal, (
            unequal,
            done.stdout,
            (data_dir / "capture.log").read_text(errors="replace")[-3000:],
        )
        tables = {(d["source"], d["table"]) for d in diffs}
        assert {("psa", "time_entries"), ("psa", "clients"), ("erp", "labor_postings"), ("erp", "customers")} <= tables

        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        try:
            assert_changelog_exactly_once(con)
            columns = {
                r[0]
                for r in con.execute(
                    "SELECT table_schema || '.' || table_name || '.' || column_name FROM information_schema.columns"
                ).fetchall()
            }
            assert "replica_psa.clients.segment" in columns and "replica_erp.customers.credit_limit" in columns
        finally:
            con.close()
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)

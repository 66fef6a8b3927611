"""The scheduler: cron jobs from the configuration in a persistent store; a due job runs and is logged."""

from __future__ import annotations

import datetime as dt
import shutil
import time

import duckdb
import polars as pl

from coexist.config import load_settings
from coexist.service import scheduler
from tests.harness import cli, make_data_dir


def test_scheduled_reconciliation_fires_once_and_is_logged(monkeypatch) -> None:
    data_dir = make_data_dir()
    try:
        pl.DataFrame({"id": [1, 2, 3], "v": [1.0, 2.0, 3.0]}).write_parquet(data_dir / "a.parquet")
        pl.DataFrame({"id": [1, 2, 4], "v": [1.0, 2.5, 3.0]}).write_parquet(data_dir / "b.parquet")
        config = data_dir / "coexist.toml"
        config.write_text(f"""
data_dir = "{data_dir}"
builtin_reconciliations = false
[reconciliations.files]
left = {{ path = "{data_dir / "a.parquet"}" }}
right = {{ path = "{data_dir / "b.parquet"}" }}
keys = [["id", "id"]]
measures = [{{ left = "v", right = "v", abs_tol = 0.01 }}]
schedule = "0 3 * * *"
""")
        monkeypatch.setenv("COEXIST_CONFIG", str(config))
        settings = load_settings(config)
        listed = cli(data_dir, "schedule", "list", env={"COEXIST_CONFIG": str(config)}).stdout
        assert "reconcile:files" in listed and "03:00:00" in listed

        sched = scheduler.build_scheduler(settings)
        sched.start()
        try:
            ids = scheduler.register_reconciliations(sched, settings)
            assert ids == ["reconcile:files"]
            job = sched.get_job("reconcile:files")
            assert job.max_instances == 1 and job.coalesce is True
            next_run = job.next_run_time
            assert next_run.hour == 3 and next_run.minute == 0
            job.modify(next_run_time=dt.datetime.now(dt.UTC))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if settings.warehouse_path.exists():
                    try:
                        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
                    except (duckdb.IOException, duckdb.ConnectionException):  # the job holds it (same process)
                        time.sleep(0.2)
                        continue
                    try:
                        runs = con.execute("SELECT trigger, breaks FROM recon.runs").fetchall()
                        views = {
                            r[0]
                            for r in con.execute(
                                "SELECT view_name FROM duckdb_views() WHERE schema_name = 'analytics'"
                            ).fetchall()
                        }
                    except duckdb.CatalogException:
                        runs = []
                    finally:
                        con.close()
                    if runs:
                        break
                time.sleep(0.2)
            assert runs == [("schedule", 3)]
            assert "open_breaks" in views, "a scheduled run installs the analyst views like every other run"
            # The job went back to its cron time, and the store persists it for the next process.
            assert sched.get_job("reconcile:files").next_run_time.hour == 3
        finally:
            sched.shutdown(wait=True)
        again = scheduler.build_scheduler(settings)
        again.start(paused=True)
        try:
            assert [j.id for j in again.get_jobs()] == ["reconcile:files"]
        finally:
            again.shutdown(wait=False)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

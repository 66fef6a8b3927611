from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from coexist.sandbox.servers import pid_alive
from tests.harness import cli, make_data_dir, wait_until


def status(data_dir) -> dict:
    return json.loads(cli(data_dir, "sandbox", "status", "--json").stdout)


@pytest.mark.slow
def test_lifecycle_second_up_crash_and_down() -> None:
    data_dir = make_data_dir()
    try:
        cli(data_dir, "sandbox", "up")
        first = status(data_dir)
        assert first["postgres"]["up"] and first["mariadb"]["up"]
        assert first["postgres"]["url"].startswith("postgresql://coexist@127.0.0.1:")
        assert first["row_counts"]["psa"]["time_entries"] == 0
        assert first["row_counts"]["erp"]["labor_postings"] == 0
        pids = (first["postgres"]["pid"], first["mariadb"]["pid"])

        cli(data_dir, "sandbox", "up")  # idempotent: adopts the running servers
        second = status(data_dir)
        assert (second["postgres"]["pid"], second["mariadb"]["pid"]) == pids

        # A crash: both servers die hard. status says so, down copes, up restarts on the same data.
        os.kill(pids[0], signal.SIGKILL)
        os.kill(pids[1], signal.SIGKILL)
        wait_until(
            lambda: not pid_alive(pids[0], "postgres") and not pid_alive(pids[1], "mariadbd"),
            5,
            "both killed servers to die",
            every=0.05,
        )
        crashed = status(data_dir)
        assert not crashed["postgres"]["up"] and not crashed["mariadb"]["up"]
        cli(data_dir, "sandbox", "up")
        revived = status(data_dir)
        assert revived["postgres"]["up"] and revived["mariadb"]["up"]
        assert "time_entries" in revived["row_counts"]["psa"]
        new_pids = (revived["postgres"]["pid"], revived["mariadb"]["pid"])

        # Kill only PostgreSQL's postmaster, then down: it must still stop MariaDB and leave nothing.
        os.kill(new_pids[0], signal.SIGKILL)
        out = json.loads(cli(data_dir, "sandbox", "down", "--json").stdout)
        assert {"server": "mariadb", "was_running": True} in out
        wait_until(
            lambda: not pid_alive(new_pids[0], "postgres") and not pid_alive(new_pids[1], "mariadbd"),
            10,
            "both killed servers' pids to be gone",
        )
        leftovers = [p for p in os.listdir("/proc") if p.isdigit() and str(data_dir) in _cmdline(p)]
        assert leftovers == []
        out = json.loads(cli(data_dir, "sandbox", "down", "--json").stdout)
        assert out == [{"server": "postgres", "was_running": False}, {"server": "mariadb", "was_running": False}]
    finally:
        cli(data_dir, "sandbox", "down", check=False)
        shutil.rmtree(data_dir, ignore_errors=True)


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_status_without_sandbox() -> None:
    data_dir = make_data_dir()
    report = status(data_dir)
    assert report["initialised"] is False
    proc = cli(data_dir, "seed", "--scale", "tiny", check=False)
    assert proc.returncode == 2 and "coexist sandbox up" in proc.stderr

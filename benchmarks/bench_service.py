"""The demo's wall time, and the service's steady-state CPU and memory at idle and at 1k events/s.

Run: .venv/bin/python benchmarks/bench_service.py [--scale small] [--seconds 30]

1. `coexist demo --scale SCALE` in a fresh data dir, timed (the README's first command, installs aside).
2. `coexist run` on the demo's sandbox and warehouse (all built-in jobs on their default schedules),
   sampled with psutil: CPU (share of one core) and RSS over `--seconds` of idle, then over
   `--seconds` of 1k row inserts/s (500/s into each database).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cdc import bulk_insert, create_bench_tables  # noqa: E402

from coexist import sandbox  # noqa: E402
from coexist.config import Settings  # noqa: E402

console = Console()


def sample(proc: psutil.Process, seconds: float, during: object = None) -> tuple[float, float, float]:
    """(mean CPU % of one core, mean RSS MB, peak RSS MB) over `seconds`, calling `during()` every 0.1 s."""
    cpu, rss = [], []
    proc.cpu_percent(None)
    stop_at = time.monotonic() + seconds
    next_sample = time.monotonic() + 1
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        if callable(during):
            during()
        if time.monotonic() >= next_sample:
            cpu.append(proc.cpu_percent(None))
            rss.append(proc.memory_info().rss / 2**20)
            next_sample += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
    return statistics.mean(cpu), statistics.mean(rss), max(rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="small")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cx-bench-svc-", dir="/tmp"))
    os.chmod(data_dir, 0o755)
    settings = Settings(data_dir=data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")} | {
        "COEXIST_DATA_DIR": str(data_dir),
        "COEXIST_SERVICE__HTTP_PORT": "0",
        "COEXIST_WEB__PORT": "0",
    }
    coexist = [sys.executable, "-m", "coexist"]
    try:
        started = time.perf_counter()
        with console.status(f"coexist demo --scale {args.scale}"):
            demo = subprocess.run(
                [*coexist, "demo", "--scale", args.scale], env=env, cwd=data_dir, capture_output=True, text=True
            )
        demo_seconds = time.perf_counter() - started
        if demo.returncode != 0:
            raise SystemExit(f"demo failed:\n{demo.stdout}\n{demo.stderr}")
        state = sandbox.load_state(settings)
        assert state is not None
        create_bench_tables(state)
        log = open(data_dir / "service.log", "w")  # noqa: SIM115
        service = subprocess.Popen([*coexist, "run"], env=env, cwd=data_dir, stdout=log, stderr=log)
        try:
            with console.status("service: start, catch up"):
                deadline = time.monotonic() + 120
                while not (data_dir / "service.json").exists() and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(15)
            proc = psutil.Process(service.pid)
            with console.status(f"idle for {args.seconds:.0f} s"):
                idle = sample(proc, args.seconds)
            next_id = [1_000_000]  # int4 ids: small ones make generate_series ambiguous

            def insert() -> None:
                for source in ("psa", "erp"):
                    bulk_insert(state, source, next_id[0], 50)
                    next_id[0] += 50

            with console.status(f"1k events/s for {args.seconds:.0f} s"):
                busy = sample(proc, args.seconds, insert)
            health = json.loads((data_dir / "service.json").read_text())
        finally:
            service.send_signal(signal.SIGTERM)
            code = service.wait(timeout=120)
            log.close()
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)

    table = Table(title="the demo and the service")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(f"demo wall time (--scale {args.scale})", f"{demo_seconds:.1f} s")
    table.add_row("service idle: CPU / RSS mean / RSS peak", f"{idle[0]:.1f}% / {idle[1]:,.0f} MB / {idle[2]:,.0f} MB")
    table.add_row(
        "service at 1k events/s: CPU / RSS mean / RSS peak", f"{busy[0]:.1f}% / {busy[1]:,.0f} MB / {busy[2]:,.0f} MB"
    )
    inserted = next_id[0] - 1_000_000
    table.add_row("rows inserted during the busy phase (rate)", f"{inserted:,} ({inserted / args.seconds:,.0f}/s)")
    table.add_row("service exit code after SIGTERM", str(code))
    console.print(table)
    console.print(f"(service endpoint was {health.get('http')}; CPU is % of one core, 2 cores on this machine)")


if __name__ == "__main__":
    main()

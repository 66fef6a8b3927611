"""How long `coexist seed --scale large` takes, and the generator's peak memory.

Run: .venv/bin/python benchmarks/bench_seed.py [--scale large]
Starts a private sandbox in a temp dir, seeds it, prints a table, stops the sandbox.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coexist.config import Settings
from coexist.sandbox import generator
from coexist.sandbox import servers as sandbox


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="large")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cx-bench-", dir="/tmp"))
    os.chmod(data_dir, 0o755)
    settings = Settings(data_dir=data_dir)
    console = Console()
    try:
        state = sandbox.up(settings)
        spec = generator.Scale.named(args.scale)
        started = time.monotonic()
        summary = generator.seed(state, spec, data_dir / "manifest", console=console)
        wall = time.monotonic() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        table = Table(title=f"seed --scale {args.scale}")
        for col in ("time entries", "labor postings", "invoices", "wall s", "rows/s", "peak RSS MB"):
            table.add_column(col, justify="right")
        rows = sum(v for k, v in summary.items() if not k.startswith("planted"))
        table.add_row(
            f"{summary['psa.time_entries']:,}",
            f"{summary['erp.labor_postings']:,}",
            f"{summary['psa.invoices']:,}",
            f"{wall:.1f}",
            f"{rows / wall:,.0f}",
            f"{peak_mb:,.0f}",
        )
        console.print(table)
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

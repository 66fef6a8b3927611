"""The demo: the main job on the local sandbox, from nothing to findings, with progress bars."""

from __future__ import annotations

import time

from rich.console import Console

from coexist import generator, sandbox
from coexist.config import Settings


def run(settings: Settings, scale: str = "small", console: Console | None = None) -> dict[str, float]:
    console = console or Console()
    timings: dict[str, float] = {}
    started = time.monotonic()
    with console.status("sandbox up"):
        state = sandbox.up(settings)
    timings["sandbox"] = time.monotonic() - started
    console.print(f"[green]sandbox[/] PostgreSQL :{state.postgres.port}  MariaDB :{state.mariadb.port}")
    mark = time.monotonic()
    summary = generator.seed(state, generator.Scale.named(scale), settings.data_dir / "manifest", console=console)
    timings["seed"] = time.monotonic() - mark
    planted = {k: v for k, v in summary.items() if k.startswith("planted")}
    console.print(f"[green]seeded[/] {summary['psa.time_entries']:,} time entries, "
                  f"{summary['erp.labor_postings']:,} postings, {sum(planted.values()):,} planted breaks")
    timings["total"] = time.monotonic() - started
    console.print(f"demo finished in {timings['total']:.1f} s")
    return timings

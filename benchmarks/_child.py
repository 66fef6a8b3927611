"""Run one benchmark contender in its own process (its own interpreter, its own peak RSS)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path


def run_child(python: str, code: str, *args: str) -> dict[str, object]:
    """Run `code` with `python`; it prints one JSON line last. Errors come back as {"error": ...}."""
    proc = subprocess.run(
        [python, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])

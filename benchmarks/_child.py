"""Run one benchmark contender in its own process (its own interpreter, its own peak RSS).

A child imports this module (`run_child` puts it on the path; it needs only the standard library,
so Splink's interpreter can too) for `peak_rss_mb`."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

SPLINK_QUALITY = """
wall = time.perf_counter() - t
predicted, correct = con.execute('''WITH c AS (SELECT c.unique_id, c.cluster_id, r.true_id FROM clustered c
    JOIN recs r USING (unique_id)) SELECT count(*), count(*) FILTER (WHERE a.true_id = b.true_id) FROM c a
    JOIN c b ON a.cluster_id = b.cluster_id AND a.unique_id < b.unique_id''').fetchall()[0]
actual = con.execute('''SELECT count(*) FROM recs a JOIN recs b ON a.true_id = b.true_id
    AND a.unique_id < b.unique_id''').fetchall()[0][0]
p, r = correct / max(predicted, 1), correct / max(actual, 1)
from _child import peak_rss_mb
print(json.dumps({"wall": wall, "rss_mb": peak_rss_mb(),
                  "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}))
"""
"""The tail of a Splink child script (Splink's own interpreter, so it cannot import coexist): time, peak
RSS and pairwise quality of the clusters in `clustered` against `recs.true_id`, as one JSON line."""


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, not getrusage's ru_maxrss, which Linux carries
    over exec from the parent (a child of a bench holding 1M records reported the parent's 1.5 GB)."""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return float(line.split()[1]) / 1024


def run_child(python: str, code: str, *args: str) -> dict[str, object]:
    """Run `code` with `python`; it prints one JSON line last. Errors come back as {"error": ...}."""
    here = Path(__file__).resolve().parent
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(here), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [python, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=here.parent,
        env=env,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])

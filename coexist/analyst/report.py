"""`coexist report`: one self-contained HTML page a finance lead can open without tools.

Charts are drawn with matplotlib as inline SVG (no scripts, no network), from the analyst
views and history tables: open breaks by type and age, margin PSA vs ERP per project, CDC lag
over time and master-data match quality, plus the key figures and the oldest open breaks.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core.errors import TerminalError  # noqa: E402

plt.rcParams["text.parse_math"] = False  # project codes like `$A$` are data, not mathtext

PALETTE = ["#1f6feb", "#d29922", "#cf222e", "#2da44e", "#8250df", "#57606a", "#bf3989", "#0a3069"]
AGE_ORDER = ["0-1d", "1-7d", "7-30d", "30d+"]


def _has(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    schema, table = name.split(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table]
        ).fetchall()[0][0]
    )


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _empty(message: str) -> str:
    return f'<p class="empty">{html.escape(message)}</p>'


def breaks_by_type_and_age(con: duckdb.DuckDBPyConnection) -> str:
    if not _has(con, "analytics.open_breaks_by_age"):
        return _empty("no reconciliation has run yet")
    rows = con.execute(
        "SELECT recon || ': ' || break_type, age_bucket, breaks FROM analytics.open_breaks_by_age"
    ).fetchall()
    if not rows:
        return _empty("no open breaks")
    labels = sorted({r[0] for r in rows})
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.2))
    left = [0.0] * len(labels)
    for i, bucket in enumerate(AGE_ORDER):
        values = [float(sum(r[2] for r in rows if r[0] == label and r[1] == bucket)) for label in labels]
        ax.barh(labels, values, left=left, color=PALETTE[i], label=bucket)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("open breaks")
    ax.legend(title="age", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def margin_psa_vs_erp(con: duckdb.DuckDBPyConnection, top: int = 15) -> str:
    """One bar pair per project: the golden project once master data has run (all its codes together)."""
    if not _has(con, "analytics.margin_by_project_period"):
        return _empty("no margin data (the replicas are not there yet)")
    rows = con.execute(f"""
        SELECT coalesce(max(golden_project) || ' ', '') || coalesce(max(project_code), max(proj_no))
               || ' (' || currency || ')', sum(coalesce(psa_margin, 0)),
               sum(coalesce(erp_margin, 0)), sum(margin_delta) AS delta
        FROM analytics.margin_by_project_period GROUP BY project_key, currency
        ORDER BY abs(delta) DESC, 1 LIMIT {top}""").fetchall()
    if not rows:
        return _empty("no projects with revenue or cost")
    labels = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.2))
    ys = range(len(labels))
    ax.barh([y - 0.2 for y in ys], [float(r[1]) for r in rows], height=0.4, color=PALETTE[0], label="PSA margin")
    ax.barh([y + 0.2 for y in ys], [float(r[2]) for r in rows], height=0.4, color=PALETTE[1], label="ERP margin")
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    ax.set_xlabel("margin, all periods (project currency)")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def cdc_lag_over_time(con: duckdb.DuckDBPyConnection) -> str:
    if not _has(con, "cdc.batches"):
        return _empty("capture has not run")
    rows = con.execute(
        "SELECT source, committed_at, lag_ms / 1000.0 FROM cdc.batches WHERE lag_ms IS NOT NULL "
        "AND applied > 0 ORDER BY committed_at"
    ).fetchall()
    if not rows:
        return _empty("no batches applied yet")
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for i, source in enumerate(sorted({r[0] for r in rows})):
        points = [(r[1], r[2]) for r in rows if r[0] == source]
        ax.plot(
            [p[0] for p in points], [p[1] for p in points], marker=".", color=PALETTE[i % len(PALETTE)], label=source
        )
    ax.set_ylabel("lag (s)")
    ax.set_yscale("symlog", linthresh=1)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _svg(fig)


def match_quality(con: duckdb.DuckDBPyConnection) -> str:
    if not _has(con, "mdm.xref"):
        return _empty("master data has not run")
    rows = con.execute("""
        SELECT entity, count(*) AS records, count(DISTINCT golden_id) AS golden,
               count(*) FILTER (WHERE rule IS NOT NULL AND rule <> 'singleton') AS linked
        FROM mdm.xref GROUP BY entity ORDER BY entity""").fetchall()
    reviews = (
        dict(con.execute("SELECT entity, count(*) FROM mdm.review_queue GROUP BY entity").fetchall())
        if _has(con, "mdm.review_queue")
        else {}
    )
    scores = (
        con.execute("SELECT decision, score FROM mdm.match_pairs").fetchall() if _has(con, "mdm.match_pairs") else []
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    names = [r[0] for r in rows]
    xs = range(len(names))
    for offset, (label, idx, color) in enumerate(
        (("source records", 1, PALETTE[5]), ("golden records", 2, PALETTE[0]), ("linked records", 3, PALETTE[3]))
    ):
        left.bar([x + (offset - 1) * 0.25 for x in xs], [r[idx] for r in rows], width=0.25, label=label, color=color)
    left.bar([x + 0.5 for x in xs], [reviews.get(n, 0) for n in names], width=0.2, label="to review", color=PALETTE[2])
    left.set_xticks(list(xs), names)
    left.legend(fontsize=8)
    left.set_title("records per entity")
    for i, decision in enumerate(sorted({s[0] for s in scores})):
        right.hist(
            [float(s[1]) for s in scores if s[0] == decision],
            bins=30,
            alpha=0.7,
            label=decision,
            color=PALETTE[i % len(PALETTE)],
        )
    right.set_title("match scores of candidate pairs")
    right.set_xlabel("score (log-odds points)")
    if scores:
        right.legend(fontsize=8)
    return _svg(fig)


def _table(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description or []]
    rows = cur.fetchall()
    if not rows:
        return _empty("none")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2.2rem;border-bottom:1px solid #d0d7de}
.meta{color:#57606a} .kpis{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.kpi{border:1px solid #d0d7de;border-radius:8px;padding:.7rem 1rem;min-width:150px;background:#f6f8fa}
.kpi b{display:block;font-size:1.5rem} table{border-collapse:collapse;width:100%;font-size:12px}
th,td{border-bottom:1px solid #d0d7de;padding:4px 6px;text-align:left} th{background:#f6f8fa}
.empty{color:#57606a;font-style:italic} svg{max-width:100%;height:auto}
"""


def render(con: duckdb.DuckDBPyConnection, title: str = "coexist: PSA and ERP in step?") -> str:
    """The whole page as one string."""
    kpi = []
    if _has(con, "recon.break_state"):
        open_, new_today = con.execute(
            "SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = 'open' AND "
            "first_seen_at > now() - INTERVAL 1 DAY) FROM recon.break_state"
        ).fetchall()[0]
        kpi += [("open breaks", open_), ("new in 24 h", new_today)]
    if _has(con, "analytics.unposted_approved_time"):
        n, amount = con.execute(
            "SELECT count(*), round(coalesce(sum(amount), 0), 2) FROM analytics.unposted_approved_time"
        ).fetchall()[0]
        kpi += [("unposted approved time entries", n), ("their amount", f"{amount:,}")]
    if _has(con, "cdc.offsets"):
        events = con.execute("SELECT coalesce(sum(events), 0) FROM cdc.offsets").fetchall()[0][0]
        kpi.append(("change events captured", f"{events:,}"))
    if _has(con, "mdm.xref"):
        kpi.append(
            (
                "golden customers",
                con.execute("SELECT count(DISTINCT golden_id) FROM mdm.xref WHERE entity = 'customer'").fetchall()[0][
                    0
                ],
            )
        )
    kpis = "".join(f'<div class="kpi"><b>{html.escape(str(v))}</b>{html.escape(k)}</div>' for k, v in kpi)
    sections = [
        ("Open breaks by type and age", breaks_by_type_and_age(con)),
        ("Margin per project: PSA against ERP (largest differences)", margin_psa_vs_erp(con)),
        ("Capture lag over time", cdc_lag_over_time(con)),
        ("Master-data match quality", match_quality(con)),
    ]
    if _has(con, "recon.runs"):
        sections.append(
            (
                "Latest reconciliation runs",
                _table(
                    con,
                    """
            SELECT recon, strftime(finished_at, '%Y-%m-%d %H:%M:%S') AS finished, left_rows, right_rows, matched,
                   breaks, new_breaks AS new, resolved_breaks AS resolved, round(seconds, 2) AS seconds
            FROM recon.runs QUALIFY row_number() OVER (PARTITION BY recon ORDER BY finished_at DESC) = 1
            ORDER BY recon""",
                ),
            )
        )
    if _has(con, "recon.break_state"):
        sections.append(
            (
                "Oldest open breaks (top 25)",
                _table(
                    con,
                    """
            SELECT recon, break_type, key, project, period, legal_entity, round(delta, 2) AS delta,
                   strftime(first_seen_at, '%Y-%m-%d %H:%M') AS first_seen, details
            FROM recon.break_state WHERE status = 'open' ORDER BY first_seen_at, abs(coalesce(delta, 0)) DESC
            LIMIT 25""",
                ),
            )
        )
    if _has(con, "ops.alerts"):
        sections.append(
            (
                "Recent alerts",
                _table(
                    con,
                    """
            SELECT strftime(raised_at, '%Y-%m-%d %H:%M:%S') AS at, kind, subject, state, message
            FROM ops.alerts ORDER BY raised_at DESC LIMIT 20""",
                ),
            )
        )
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="meta">generated {stamp}</p><div class="kpis">{kpis}</div>{body}</body></html>'
    )


def write(con: duckdb.DuckDBPyConnection, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(render(con), encoding="utf-8")
    tmp.replace(out)
    return out


def find_chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render_png(page: Path, png: Path, width: int = 1200, height: int = 2600) -> Path:
    """Render the page in headless Chromium to a PNG (what a reader's browser would show)."""
    import subprocess
    import tempfile

    browser = find_chromium()
    if browser is None:
        raise TerminalError("no Chromium found (Debian: apt install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cx-chromium-") as profile:
        proc = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if proc.returncode != 0 or not png.exists():
        raise TerminalError(f"chromium failed ({proc.returncode}): {proc.stderr[-500:]}")
    return png

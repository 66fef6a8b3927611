"""The reconciliation engine: a rule in, DuckDB SQL out, breaks recorded with their history.

Every step is a table you can look at (`_cx_left`, `_cx_right`, `_cx_pairs`, `_cx_breaks` in the
run's connection), Splink-style; all the work is set-based SQL that DuckDB can spill to disk.

A pair of rows gets at most one break, the first check in priority order that fails
(duplicates, missing on either side, then measures and attributes in the rule's order); every
failing check is listed in `details`, so nothing is hidden by the priority.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from core.warehouse import literal, new_run_id, quote, transaction
from reconcile.rules import Rule

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

HISTORY_DDL = """
CREATE SCHEMA IF NOT EXISTS recon;
CREATE TABLE IF NOT EXISTS recon.runs (
    run_id VARCHAR PRIMARY KEY, recon VARCHAR, rule_version VARCHAR, started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ, seconds DOUBLE, left_rows BIGINT, right_rows BIGINT, matched BIGINT,
    matched_by_fallback BIGINT, breaks BIGINT, new_breaks BIGINT, resolved_breaks BIGINT,
    counts_by_type JSON, trigger VARCHAR, status VARCHAR, error VARCHAR
);
CREATE TABLE IF NOT EXISTS recon.breaks (
    run_id VARCHAR, recon VARCHAR, break_id VARCHAR, break_type VARCHAR, key VARCHAR, left_id VARCHAR,
    right_id VARCHAR, left_values JSON, right_values JSON, measure VARCHAR, delta DOUBLE, details VARCHAR,
    project VARCHAR, period VARCHAR, legal_entity VARCHAR, status VARCHAR, first_seen_run VARCHAR,
    first_seen_at TIMESTAMPTZ, age_days DOUBLE
);
CREATE TABLE IF NOT EXISTS recon.break_state (
    break_id VARCHAR PRIMARY KEY, recon VARCHAR, break_type VARCHAR, key VARCHAR, left_id VARCHAR,
    right_id VARCHAR, project VARCHAR, period VARCHAR, legal_entity VARCHAR, status VARCHAR,
    first_seen_run VARCHAR, first_seen_at TIMESTAMPTZ, last_seen_run VARCHAR, last_seen_at TIMESTAMPTZ,
    resolved_run VARCHAR, resolved_at TIMESTAMPTZ, delta DOUBLE, left_values JSON, right_values JSON,
    details VARCHAR
);
"""


@dataclass
class RunResult:
    run_id: str
    recon: str
    seconds: float
    left_rows: int
    right_rows: int
    matched: int
    matched_by_fallback: int
    breaks: int
    new_breaks: int
    resolved_breaks: int
    counts_by_type: dict[str, int] = field(default_factory=dict)


class Engine:
    """Runs rules against one DuckDB connection (the warehouse, or any DuckDB with the inputs)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR) -> None:
        self.con = con
        self.sql_dir = sql_dir
        con.execute(HISTORY_DDL)

    # ------------------------------------------------------------ SQL building

    def _side(self, rule: Rule, side: int) -> str:
        """SELECT list for one side: keys k*, ids, measures m*, attributes a*, fallback f*, context."""
        dataset = rule.left if side == 0 else rule.right
        rel = dataset.relation(self.sql_dir)
        cols: list[str] = []
        key_exprs = [pair[side] for pair in (rule.keys if rule.grain == "line" else rule.grain)]
        for i, expr in enumerate(key_exprs):
            cols.append(f"{expr} AS k{i}")
        ident = rule.row_id[side] if rule.row_id else None
        id_expr = (
            ident if ident else ("concat_ws('|', " + ", ".join(key_exprs) + ")" if len(key_exprs) > 1 else key_exprs[0])
        )
        cols.append(f"{id_expr} AS _id")
        if rule.fx is not None:
            currency_measure = next((m for m in rule.measures if m.currency), None)
            if currency_measure is not None and currency_measure.currency and currency_measure.fx_date:
                fx = rule.fx
                ccy, date = currency_measure.currency[side], currency_measure.fx_date[side]
                # The rate in force on the date (ASOF), under names that cannot clash with the dataset's.
                rel = (
                    f"(SELECT s.*, CASE WHEN s._cx_ccy = {literal(fx.reporting_currency)} THEN 1.0 "
                    f"ELSE fx._cx_rate END AS _fx FROM (SELECT *, CAST({ccy} AS VARCHAR) AS _cx_ccy, "
                    f"CAST({date} AS DATE) AS _cx_date FROM {rel} s0) s ASOF LEFT JOIN ("
                    f"SELECT {quote(fx.from_ccy)} AS _cx_from, CAST({quote(fx.date)} AS DATE) AS _cx_rate_date, "
                    f"CAST({quote(fx.rate)} AS DOUBLE) AS _cx_rate FROM {fx.table} "
                    f"WHERE {quote(fx.to_ccy)} = {literal(fx.reporting_currency)}) fx "
                    f"ON fx._cx_from = s._cx_ccy AND s._cx_date >= fx._cx_rate_date)"
                )
        for i, measure in enumerate(rule.measures):
            expr = measure.left if side == 0 else measure.right
            value = f"CAST({expr} AS DOUBLE)"
            if measure.currency and rule.fx is not None:
                value = f"({value} * _fx)"
            cols.append(f"{value} AS m{i}")
        for i, attribute in enumerate(rule.attributes):
            expr = attribute.left if side == 0 else attribute.right
            cols.append(f"CAST({expr} AS VARCHAR) AS a{i}")
        for i, pair in enumerate(rule.fallback_keys or []):
            cols.append(f"CAST({pair[side]} AS VARCHAR) AS f{i}")
        for name in ("project", "period", "legal_entity"):
            pair = getattr(rule.context, name)
            cols.append(f"CAST({pair[side]} AS VARCHAR) AS ctx_{name}" if pair else f"NULL::VARCHAR AS ctx_{name}")
        return f"SELECT {', '.join(cols)} FROM {rel} src"

    def _ok(self, rule: Rule, i: int, left: str, right: str) -> str:
        m = rule.measures[i]
        lv, rv = f"coalesce({left}.m{i}, 0)", f"coalesce({right}.m{i}, 0)"
        return f"(abs({lv} - {rv}) <= greatest({m.abs_tol}, {m.rel_tol} * greatest(abs({lv}), abs({rv}))) + 1e-9)"

    def _attr_ok(self, rule: Rule, i: int, left: str, right: str) -> str:
        attribute = rule.attributes[i]
        lv = f"{left}.a{i}"
        if attribute.map:
            cases = " ".join(f"WHEN {lv} = {literal(k)} THEN {literal(v)}" for k, v in attribute.map.items())
            lv = f"(CASE {cases} ELSE {lv} END)"
        return f"({lv} IS NOT DISTINCT FROM {right}.a{i})"

    # ------------------------------------------------------------ run

    def run(self, name: str, rule: Rule, trigger: str = "manual") -> RunResult:
        """Compare, classify, record. Only break rows are materialised with their values and details."""
        con = self.con
        run_id = new_run_id()
        started_at = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        line = rule.grain == "line"
        n_keys = len(rule.keys) if line else len(rule.grain)
        keys = [f"k{i}" for i in range(n_keys)]
        nm, na, nf = len(rule.measures), len(rule.attributes), len(rule.fallback_keys or [])
        has_key = " AND ".join(f"{k} IS NOT NULL" for k in keys)

        for stale in ("_cx_left", "_cx_right", "_cx_left_agg", "_cx_right_agg"):
            con.execute(f"DROP VIEW IF EXISTS {stale}")
            con.execute(f"DROP TABLE IF EXISTS {stale}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW _cx_left AS {self._side(rule, 0)}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW _cx_right AS {self._side(rule, 1)}")

        value_cols = [f"m{i}" for i in range(nm)] + [f"a{i}" for i in range(na)] + [f"f{i}" for i in range(nf)]
        ctx_cols = ["ctx_project", "ctx_period", "ctx_legal_entity"]
        first = ", ".join(
            f"any_value({c}) AS {c}" for c in [f"a{i}" for i in range(na)] + [f"f{i}" for i in range(nf)] + ctx_cols
        )
        summed = ", ".join(f"{'sum' if not line else 'any_value'}(m{i}) AS m{i}" for i in range(nm))
        aggregates = ", ".join(x for x in (summed, first) if x)
        # The right side is aggregated per key (a count above one is a duplicate posting); so is the
        # left side for an aggregate grain. At line grain the left key is taken as unique, as a primary key is.
        if line:
            # Only the duplicated keys are aggregated (a key-only hash aggregate); the comparison then joins raw rows.
            on = " AND ".join(f"r.{k} = d.{k}" for k in keys)
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _cx_dups AS
                SELECT {", ".join(keys)}, count(*) AS _n FROM _cx_right WHERE {has_key}
                GROUP BY {", ".join(keys)} HAVING count(*) > 1""")
            con.execute(f"""
                CREATE OR REPLACE TEMP VIEW _cx_right_agg AS
                SELECT {", ".join(f"r.{k}" for k in keys)}, coalesce(d._n, 1) AS _n, r._id,
                       {", ".join(f"r.{c}" for c in value_cols + ctx_cols)}
                FROM _cx_right r LEFT JOIN _cx_dups d ON {on} WHERE {has_key.replace("k", "r.k")}""")
        else:
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _cx_right_agg AS
                SELECT {", ".join(keys)}, count(*) AS _n, min(_id) AS _id, {aggregates}
                FROM _cx_right WHERE {has_key} GROUP BY {", ".join(keys)}""")
        if line:
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW _cx_left_agg AS SELECT {', '.join(keys)}, 1 AS _n, _id, "
                f"{', '.join(value_cols + ctx_cols)} FROM _cx_left WHERE {has_key}"
            )
        else:
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _cx_left_agg AS
                SELECT {", ".join(keys)}, count(*) AS _n, min(_id) AS _id, {aggregates}
                FROM _cx_left WHERE {has_key} GROUP BY {", ".join(keys)}""")

        # Rows whose key is missing on the right may still be the same thing: match them on the
        # fallback keys, one-to-one, when every measure agrees.
        con.execute("CREATE OR REPLACE TEMP TABLE _cx_fallback (l_id VARCHAR, r_id VARCHAR)")
        if nf and line:
            fb = " AND ".join(f"l.f{i} = r.f{i}" for i in range(nf))
            oks = " AND ".join(self._ok(rule, i, "l", "r") for i in range(nm)) or "TRUE"
            part = ", ".join(f"f{i}" for i in range(nf))
            con.execute(f"""
                INSERT INTO _cx_fallback
                WITH lu AS (SELECT * FROM _cx_left_agg a WHERE NOT EXISTS (
                                SELECT 1 FROM _cx_right_agg b WHERE {" AND ".join(f"a.{k} = b.{k}" for k in keys)})
                            QUALIFY count(*) OVER (PARTITION BY {part}) = 1),
                     ru AS (SELECT * FROM _cx_right WHERE NOT ({has_key})
                            QUALIFY count(*) OVER (PARTITION BY {part}) = 1)
                SELECT CAST(l._id AS VARCHAR), CAST(r._id AS VARCHAR) FROM lu l JOIN ru r ON {fb} WHERE {oks}""")
        fallback_matched = con.execute("SELECT count(*) FROM _cx_fallback").fetchall()[0][0]

        checks: list[tuple[str, str]] = []
        if line and rule.duplicates:
            checks.append((rule.duplicate_type, "r._n > 1"))
        if not line and rule.duplicates:
            checks.append((f"duplicate_in_{rule.left_name.lower()}", "l._n > 1"))
        checks.append((rule.missing_right_type, "r._n IS NULL"))
        checks.append((rule.missing_left_type, "l._n IS NULL"))
        value_checks = [
            (m.break_type, f"NOT {self._ok(rule, i, 'l', 'r')}", m.label) for i, m in enumerate(rule.measures)
        ]
        value_checks += [
            (a.break_type, f"NOT {self._attr_ok(rule, i, 'l', 'r')}", a.label) for i, a in enumerate(rule.attributes)
        ]
        if rule.check_order:
            order = {t: n for n, t in enumerate(rule.check_order)}
            value_checks.sort(key=lambda c: order.get(c[0], len(order)))
        if not line:
            checks = [c for c in checks if not c[0].startswith("duplicate_in_")]
        case = " ".join(f"WHEN {cond} THEN {literal(bt)}" for bt, cond in checks)
        case += " " + " ".join(f"WHEN {cond} THEN {literal(bt)}" for bt, cond, _ in value_checks)
        fallback_filter = (
            "WHERE l._id IS NULL OR CAST(l._id AS VARCHAR) NOT IN (SELECT l_id FROM _cx_fallback)"
            if fallback_matched
            else ""
        )
        # The comparison pass: one full outer join; only rows that break are kept.
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _cx_pairs AS
            SELECT * FROM (
                SELECT {", ".join(f"coalesce(l.{k}, r.{k}) AS {k}" for k in keys)},
                       l._n AS l_n, r._n AS r_n, l._id AS l_id, r._id AS r_id,
                       {", ".join(f"l.{c} AS l_{c}, r.{c} AS r_{c}" for c in value_cols + ctx_cols)},
                       CASE {case} ELSE NULL END AS break_type
                FROM _cx_left_agg l FULL OUTER JOIN _cx_right_agg r ON {" AND ".join(f"l.{k} = r.{k}" for k in keys)}
                {fallback_filter}
            ) WHERE break_type IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY {", ".join(keys)} ORDER BY r_id) = 1 OR k0 IS NULL""")
        left_rows = con.execute("SELECT count(*) FROM _cx_left").fetchall()[0][0]
        right_rows = con.execute("SELECT count(*) FROM _cx_right").fetchall()[0][0] or 0

        def side_values(prefix: str, n: str) -> str:
            return (
                "json_object("
                + ", ".join(
                    [f"{literal(m.label)}, {prefix}_m{i}" for i, m in enumerate(rule.measures)]
                    + [f"{literal(a.label)}, {prefix}_a{i}" for i, a in enumerate(rule.attributes)]
                    + [f"'rows', {n}"]
                )
                + ")"
            )

        details = (
            (
                "concat_ws('; ', "
                + ", ".join(
                    f"CASE WHEN l_n IS NOT NULL AND r_n IS NOT NULL AND {cond.replace('l.', 'l_').replace('r.', 'r_')} "
                    f"THEN {literal(label + ': ' + bt)} END"
                    for bt, cond, label in value_checks
                )
                + ")"
            )
            if value_checks
            else "NULL"
        )
        delta = "coalesce(r_m0, 0) - coalesce(l_m0, 0)" if nm else "NULL"
        key_text = f"concat_ws('|', {', '.join(keys)})"
        dup_ids = (
            f"(SELECT string_agg(CAST(x._id AS VARCHAR), ',' ORDER BY x._id) FROM _cx_right x "
            f"WHERE {' AND '.join(f'x.{k} = p.{k}' for k in keys)})"
        )
        unkeyed_values = side_values("r", "1").replace("r_m", "r.m").replace("r_a", "r.a")
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _cx_breaks AS
            WITH b AS (
                SELECT nullif({key_text}, '') AS key, CAST(l_id AS VARCHAR) AS left_id,
                       CASE WHEN r_n > 1 THEN {dup_ids} ELSE CAST(r_id AS VARCHAR) END AS right_id,
                       break_type, {details} AS details, {delta} AS delta, l_n,
                       {side_values("l", "l_n")} AS left_values, {side_values("r", "r_n")} AS right_values,
                       coalesce(l_ctx_project, r_ctx_project) AS project,
                       coalesce(l_ctx_period, r_ctx_period) AS period,
                       coalesce(l_ctx_legal_entity, r_ctx_legal_entity) AS legal_entity
                FROM _cx_pairs p
                UNION ALL
                SELECT NULL, NULL, CAST(r._id AS VARCHAR), {literal(rule.missing_left_type)}, NULL,
                       {"r.m0" if nm else "NULL"}, NULL, json_object('rows', 0), {unkeyed_values},
                       r.ctx_project, r.ctx_period, r.ctx_legal_entity
                FROM _cx_right r WHERE NOT ({has_key.replace("k", "r.k")})
                  AND CAST(r._id AS VARCHAR) NOT IN (SELECT r_id FROM _cx_fallback)
            )
            SELECT *, md5(concat_ws('|', ?, break_type, coalesce(key, ''),
                                    CASE WHEN l_n IS NULL THEN coalesce(right_id, '') ELSE '' END)) AS break_id
            FROM b""",
            [name],
        )
        counts = dict(con.execute("SELECT break_type, count(*) FROM _cx_breaks GROUP BY 1 ORDER BY 1").fetchall())
        breaks_with_left = con.execute("SELECT count(*) FROM _cx_breaks WHERE l_n IS NOT NULL").fetchall()[0][0]
        left_keyed = left_rows if line else con.execute("SELECT count(*) FROM _cx_left_agg").fetchall()[0][0]
        matched = max(0, int(left_keyed) - int(breaks_with_left) - int(fallback_matched))
        new, resolved = self._record(name, run_id, started_at)
        seconds = time.perf_counter() - t0
        result = RunResult(
            run_id,
            name,
            seconds,
            int(left_rows),
            int(right_rows),
            matched,
            int(fallback_matched),
            sum(counts.values()),
            new,
            resolved,
            counts,
        )
        con.execute(
            "INSERT INTO recon.runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', NULL)",
            [
                run_id,
                name,
                rule.version(),
                started_at,
                dt.datetime.now(dt.UTC),
                seconds,
                left_rows,
                right_rows,
                matched,
                fallback_matched,
                result.breaks,
                new,
                resolved,
                json.dumps(counts),
                trigger,
            ],
        )
        return result

    def _record(self, name: str, run_id: str, now: dt.datetime) -> tuple[int, int]:
        """Lifecycle: new breaks open, seen ones keep their first run, absent ones resolve."""
        con = self.con
        with transaction(con):
            new = con.execute("""
                SELECT count(*) FROM _cx_breaks b WHERE NOT EXISTS (
                    SELECT 1 FROM recon.break_state s WHERE s.break_id = b.break_id AND s.status = 'open')
            """).fetchall()[0][0]
            resolved = con.execute(
                """
                SELECT count(*) FROM recon.break_state s WHERE s.recon = ? AND s.status = 'open'
                AND NOT EXISTS (SELECT 1 FROM _cx_breaks b WHERE b.break_id = s.break_id)""",
                [name],
            ).fetchall()[0][0]
            con.execute(
                """
                UPDATE recon.break_state SET status = 'resolved', resolved_run = ?, resolved_at = ?
                WHERE recon = ? AND status = 'open'
                AND NOT EXISTS (SELECT 1 FROM _cx_breaks b WHERE b.break_id = recon.break_state.break_id)
            """,
                [run_id, now, name],
            )
            con.execute(
                """
                INSERT INTO recon.break_state
                SELECT break_id, ?, break_type, key, left_id, right_id, project, period, legal_entity, 'open',
                       ?, ?, ?, ?, NULL, NULL, delta, left_values, right_values, details
                FROM _cx_breaks
                ON CONFLICT (break_id) DO UPDATE SET
                    status = 'open', last_seen_run = excluded.last_seen_run, last_seen_at = excluded.last_seen_at,
                    first_seen_run = CASE WHEN recon.break_state.status = 'open' THEN recon.break_state.first_seen_run
                                          ELSE excluded.first_seen_run END,
                    first_seen_at = CASE WHEN recon.break_state.status = 'open' THEN recon.break_state.first_seen_at
                                         ELSE excluded.first_seen_at END,
                    resolved_run = NULL, resolved_at = NULL, delta = excluded.delta,
                    left_values = excluded.left_values, right_values = excluded.right_values,
                    details = excluded.details
            """,
                [name, run_id, now, run_id, now],
            )
            con.execute(
                """
                INSERT INTO recon.breaks
                SELECT ?, ?, b.break_id, b.break_type, b.key, b.left_id, b.right_id, b.left_values, b.right_values,
                       NULL, b.delta, b.details, b.project, b.period, b.legal_entity,
                       CASE WHEN s.first_seen_run = ? THEN 'new' ELSE 'open' END, s.first_seen_run, s.first_seen_at,
                       date_diff('second', s.first_seen_at, ?::TIMESTAMPTZ) / 86400.0
                FROM _cx_breaks b JOIN recon.break_state s USING (break_id)
            """,
                [run_id, name, run_id, now],
            )
            con.execute(
                """
                INSERT INTO recon.breaks
                SELECT ?, recon, break_id, break_type, key, left_id, right_id, left_values, right_values, NULL, delta,
                       details, project, period, legal_entity, 'resolved', first_seen_run, first_seen_at,
                       date_diff('second', first_seen_at, ?::TIMESTAMPTZ) / 86400.0
                FROM recon.break_state WHERE recon = ? AND resolved_run = ?
            """,
                [run_id, now, name, run_id],
            )
        return int(new), int(resolved)

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
from reconcile import incremental
from reconcile.rules import Dataset, Rule

CONTEXT = ("project", "period", "legal_entity", "golden_project", "customer")
"""What a break carries besides its values: where it belongs and whose it is (codes and golden ids)."""

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
    first_seen_run VARCHAR, first_seen_at TIMESTAMPTZ, changed_run VARCHAR, changed_at TIMESTAMPTZ,
    resolved_run VARCHAR, resolved_at TIMESTAMPTZ, delta DOUBLE, left_values JSON, right_values JSON,
    details VARCHAR
);
ALTER TABLE recon.runs ADD COLUMN IF NOT EXISTS mode VARCHAR;
ALTER TABLE recon.runs ADD COLUMN IF NOT EXISTS full_because VARCHAR;
ALTER TABLE recon.runs ADD COLUMN IF NOT EXISTS watermark TIMESTAMPTZ;
ALTER TABLE recon.breaks ADD COLUMN IF NOT EXISTS golden_project VARCHAR;
ALTER TABLE recon.breaks ADD COLUMN IF NOT EXISTS customer VARCHAR;
ALTER TABLE recon.break_state ADD COLUMN IF NOT EXISTS golden_project VARCHAR;
ALTER TABLE recon.break_state ADD COLUMN IF NOT EXISTS customer VARCHAR;
"""


def ensure_history(con: duckdb.DuckDBPyConnection) -> None:
    """The `recon` tables, as this version writes them (a warehouse of an earlier version is brought up
    to date: `break_state.last_seen_*` became `changed_*` when history became events)."""
    con.execute(HISTORY_DDL)
    old = {
        name
        for (name,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'recon' AND table_name = 'break_state' "
            "AND column_name IN ('last_seen_run', 'last_seen_at')"
        ).fetchall()
    }
    for name in sorted(old):
        con.execute(f"ALTER TABLE recon.break_state RENAME COLUMN {name} TO {name.replace('last_seen', 'changed')}")


@dataclass
class RunResult:
    run_id: str
    recon: str
    seconds: float
    left_rows: int | None
    """None on an incremental run, which reads only the rows of changed keys."""
    right_rows: int | None
    matched: int | None
    matched_by_fallback: int
    breaks: int
    """Open breaks of the rule after this run."""
    new_breaks: int
    resolved_breaks: int
    counts_by_type: dict[str, int] = field(default_factory=dict)
    mode: str = "full"
    full_because: str | None = None


_COMPARED = (
    "left_id", "right_id", "project", "period", "legal_entity", "delta", "left_values", "right_values", "details",
    "golden_project", "customer",
)  # fmt: skip
"""What makes a break seen again a changed break (its id already says rule, type and key)."""


_INTEGER_TYPES = frozenset(
    f"{u}{t}" for u in ("", "U") for t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
)


def _more(columns: list[str]) -> str:
    """`, a, b` to follow a SELECT list's fixed columns; nothing when there are none."""
    return "".join(f", {c}" for c in columns)


def _measure_ok(rule: Rule, i: int, left: str, right: str) -> str:
    m = rule.measures[i]
    lv, rv = f"coalesce({left}.m{i}, 0)", f"coalesce({right}.m{i}, 0)"
    if not m.rel_tol:
        return f"(abs({lv} - {rv}) <= {m.abs_tol + 1e-9!r})"
    return f"(abs({lv} - {rv}) <= greatest({m.abs_tol}, {m.rel_tol} * greatest(abs({lv}), abs({rv}))) + 1e-9)"


def _attribute_ok(rule: Rule, i: int, left: str, right: str) -> str:
    attribute = rule.attributes[i]
    lv = f"{left}.a{i}"
    if attribute.map:
        cases = " ".join(f"WHEN {lv} = {literal(k)} THEN {literal(v)}" for k, v in attribute.map.items())
        lv = f"(CASE {cases} ELSE {lv} END)"
    return f"({lv} IS NOT DISTINCT FROM {right}.a{i})"


@dataclass
class _Plan:
    """The column names and checks a rule compiles to, shared by the steps of a run."""

    rule: Rule
    line: bool = field(init=False)
    keys: list[str] = field(init=False)
    value_cols: list[str] = field(init=False)
    ctx_cols: list[str] = field(init=False)
    aggregates: str = field(init=False)
    value_checks: list[tuple[str, str, str]] = field(init=False)
    has_dups: bool = False
    """Line grain: `_cx_dups` holds a key (set by `Engine._inputs`)."""

    def __post_init__(self) -> None:
        rule = self.rule
        self.line = rule.grain == "line"
        self.keys = [f"k{i}" for i in range(len(rule.keys) if self.line else len(rule.grain))]
        nm, na, nf = len(rule.measures), len(rule.attributes), len(rule.fallback_keys or [])
        self.value_cols = [f"m{i}" for i in range(nm)] + [f"a{i}" for i in range(na)] + [f"f{i}" for i in range(nf)]
        self.ctx_cols = [f"ctx_{name}" for name in CONTEXT if getattr(rule.context, name)]
        """Only the context a rule has travels through the join; the rest is NULL in the breaks."""
        first = [
            f"any_value({c}) AS {c}"
            for c in [f"a{i}" for i in range(na)] + [f"f{i}" for i in range(nf)] + self.ctx_cols
        ]
        self.aggregates = ", ".join([f"sum(m{i}) AS m{i}" for i in range(nm)] + first)
        checks = [(m.break_type, f"NOT {_measure_ok(rule, i, 'l', 'r')}", m.label) for i, m in enumerate(rule.measures)]
        checks += [
            (a.break_type, f"NOT {_attribute_ok(rule, i, 'l', 'r')}", a.label) for i, a in enumerate(rule.attributes)
        ]
        if rule.check_order:
            order = {t: n for n, t in enumerate(rule.check_order)}
            checks.sort(key=lambda c: order.get(c[0], len(order)))
        self.value_checks = checks

    def has_key(self, prefix: str) -> str:
        """A line without a key matches nothing; a group is a group, NULL parts and all."""
        return " AND ".join(f"{prefix}{k} IS NOT NULL" for k in self.keys) if self.line else "TRUE"

    def same_key(self, left: str, right: str) -> str:
        equal = "=" if self.line else "IS NOT DISTINCT FROM"
        return " AND ".join(f"{left}.{k} {equal} {right}.{k}" for k in self.keys)

    @property
    def key_text(self) -> str:
        if self.line:
            return f"CASE WHEN {self.has_key('')} THEN concat_ws('|', {', '.join(self.keys)}) END"
        return "concat_ws('|', " + ", ".join(f"coalesce(CAST({k} AS VARCHAR), '(null)')" for k in self.keys) + ")"


class Engine:
    """Runs rules against one DuckDB connection (the warehouse, or any DuckDB with the inputs)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR) -> None:
        self.con = con
        self.sql_dir = sql_dir
        ensure_history(con)

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
        for name in CONTEXT:
            pair = getattr(rule.context, name)
            if pair:
                cols.append(f"CAST({pair[side]} AS VARCHAR) AS ctx_{name}")
        return f"SELECT {', '.join(cols)} FROM {rel} src"

    # ------------------------------------------------------------ run

    def run(self, name: str, rule: Rule, trigger: str = "manual", full: bool = False) -> RunResult:
        """Compare, classify, record. Each input is scanned once for the comparison; only keys of
        duplicated postings and the rows that break are materialised.

        When the inputs are replica tables and the rule ran before, only the keys the CDC changelog
        says changed are compared (`reconcile.incremental`); `full` compares everything."""
        con = self.con
        run_id = new_run_id()
        started_at = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        plan = _Plan(rule)

        # The steps of the last run (a view or a table, by grain) go, whatever kind each was.
        for stale, kind in con.execute(
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_catalog = 'temp' AND table_name IN ('_cx_left', '_cx_right', '_cx_left_agg', '_cx_right_agg')"
        ).fetchall():
            con.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} {stale}")
        sides = [self._side(rule, 0), self._side(rule, 1)]
        scope = incremental.scope(con, name, rule.version(), sides, plan.keys, bool(rule.fallback_keys), full)
        for side, sql in zip(("left", "right"), sides, strict=True):
            if scope.incremental:
                sql = (
                    f"SELECT * FROM ({sql}) s WHERE EXISTS (SELECT 1 FROM _cx_affected a WHERE "
                    f"{plan.same_key('a', 's')}) OR NOT ({plan.has_key('s.')})"
                )
            # An incremental run's rows of changed keys are few: read once, then every step is cheap.
            kind = "TABLE" if scope.incremental else "VIEW"
            con.execute(f"CREATE OR REPLACE TEMP {kind} _cx_{side} AS {sql}")
        self._inputs(plan)
        fallback_matched = self._fallback(plan)
        self._compare(plan, fallback_matched)
        self._breaks(plan, name)

        left_rows: int | None = None
        right_rows: int | None = None
        matched: int | None = None
        if not scope.incremental:
            left, right = (
                con.execute(
                    "SELECT (SELECT sum(_n) FROM _cx_left_agg), (SELECT sum(_n) FROM _cx_right_agg)"
                ).fetchall()[0]
                if not plan.line
                else con.execute("SELECT (SELECT count(*) FROM _cx_left), (SELECT count(*) FROM _cx_right)").fetchall()[
                    0
                ]
            )
            left_rows, right_rows = int(left or 0), int(right or 0)
            breaks_with_left = con.execute("SELECT count(*) FROM _cx_breaks WHERE l_n IS NOT NULL").fetchall()[0][0]
            left_units = left_rows if plan.line else con.execute("SELECT count(*) FROM _cx_left_agg").fetchall()[0][0]
            matched = max(0, int(left_units) - int(breaks_with_left) - int(fallback_matched))
        new, resolved = self._record(name, run_id, started_at, plan if scope.incremental else None)
        counts = dict(
            con.execute(
                "SELECT break_type, count(*) FROM recon.break_state WHERE recon = ? AND status = 'open' "
                "GROUP BY 1 ORDER BY 1",
                [name],
            ).fetchall()
        )
        seconds = time.perf_counter() - t0
        mode = "incremental" if scope.incremental else "full"
        result = RunResult(
            run_id,
            name,
            seconds,
            left_rows,
            right_rows,
            matched,
            int(fallback_matched),
            sum(counts.values()),
            new,
            resolved,
            counts,
            mode,
            scope.full_because,
        )
        con.execute(
            """INSERT INTO recon.runs (run_id, recon, rule_version, started_at, finished_at, seconds, left_rows,
                   right_rows, matched, matched_by_fallback, breaks, new_breaks, resolved_breaks, counts_by_type,
                   trigger, status, error, mode, full_because, watermark)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', NULL, ?, ?, ?)""",
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
                mode,
                scope.full_because,
                scope.watermark,
            ],
        )
        return result

    def _inputs(self, plan: _Plan) -> None:
        """`_cx_left_agg` / `_cx_right_agg`: one row per line (line grain) or per group (aggregate grain),
        with `_n`, the number of source rows behind it.

        At line grain nothing is materialised but `_cx_dups`, the keys posted more than once on the right
        (a key-only aggregate: the one extra read, of the key columns alone, skipped when a primary key
        or unique constraint of the right table already rules duplicates out); the left key is taken as
        unique, as a primary key is. Rows without a key stay in: they match nothing and break as missing.
        """
        con, keys = self.con, plan.keys
        group = ", ".join(keys)
        if not plan.line:
            for side in ("left", "right"):
                con.execute(f"""
                    CREATE OR REPLACE TEMP TABLE _cx_{side}_agg AS
                    SELECT {group}, count(*) AS _n, min(_id) AS _id{_more([plan.aggregates] if plan.aggregates else [])}
                    FROM _cx_{side} GROUP BY {group}""")
            return
        columns = _more(plan.value_cols + plan.ctx_cols)
        for side in ("left", "right"):
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW _cx_{side}_agg AS SELECT {group}, 1 AS _n, _id{columns} FROM _cx_{side}"
            )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _cx_dups AS SELECT {group}, 0::BIGINT AS _n FROM _cx_right WHERE FALSE"
        )
        if plan.rule.duplicates and not self._unique(plan.rule.right, [pair[1] for pair in plan.rule.keys]):
            con.execute(f"INSERT INTO _cx_dups {self._duplicated_keys(plan)}")
        plan.has_dups = bool(con.execute("SELECT count(*) FROM _cx_dups").fetchall()[0][0])

    def _duplicated_keys(self, plan: _Plan) -> str:
        """The keys the right side holds more than once, with how many rows hold each.

        One integer key is found by sorting (a key equal to the one before it is held again): for 10M
        BIGINT keys DuckDB sorts in 0.3 s (stored in order) to 0.75 s (shuffled) where a hash aggregate
        of 10M groups takes 1.0-1.4 s on 2 cores. Any other key is grouped: 10M VARCHAR keys sort in
        2.2 s and group in 1.8 s, and two-column keys cost about the same either way."""
        keys, group = plan.keys, ", ".join(plan.keys)
        types = self.con.execute(f"DESCRIBE SELECT {group} FROM _cx_right").fetchall()
        if len(keys) == 1 and str(types[0][1]) in _INTEGER_TYPES:
            return """
                SELECT k0, count(*) + 1 FROM (
                    SELECT k0, lag(k0) OVER (ORDER BY k0) AS _before FROM _cx_right WHERE k0 IS NOT NULL)
                WHERE k0 = _before GROUP BY k0"""
        return f"SELECT {group}, count(*) FROM _cx_right WHERE {plan.has_key('')} GROUP BY {group} HAVING count(*) > 1"

    def _unique(self, dataset: Dataset, columns: list[str]) -> bool:
        """Whether a table's primary key or a unique constraint is exactly these (plain) columns."""
        if not dataset.table or not all(c.isidentifier() for c in columns):
            return False
        parts = dataset.table.replace('"', "").split(".")
        schema, table = (parts[-2], parts[-1]) if len(parts) >= 2 else ("main", parts[-1])
        wanted = sorted(c.lower() for c in columns)
        for (names,) in self.con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', "
            "'UNIQUE') AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?)",
            [schema, table],
        ).fetchall():
            if sorted(str(n).lower() for n in names) == wanted:
                return True
        return False

    def _fallback(self, plan: _Plan) -> int:
        """Rows whose key is missing on the right may still be the same thing: match them on the
        fallback keys, one-to-one, when every measure agrees. Returns how many matched."""
        con, rule, keys = self.con, plan.rule, plan.keys
        con.execute("CREATE OR REPLACE TEMP TABLE _cx_fallback (l_id VARCHAR, r_id VARCHAR)")
        nf = len(rule.fallback_keys or [])
        if not (nf and plan.line):
            return 0
        fb = " AND ".join(f"l.f{i} = r.f{i}" for i in range(nf))
        oks = " AND ".join(_measure_ok(rule, i, "l", "r") for i in range(len(rule.measures))) or "TRUE"
        part = ", ".join(f"f{i}" for i in range(nf))
        con.execute(f"""
            INSERT INTO _cx_fallback
            WITH lu AS (SELECT * FROM _cx_left a WHERE {plan.has_key("a.")} AND NOT EXISTS (
                            SELECT 1 FROM _cx_right b WHERE {" AND ".join(f"a.{k} = b.{k}" for k in keys)})
                        QUALIFY count(*) OVER (PARTITION BY {part}) = 1),
                 ru AS (SELECT * FROM _cx_right WHERE NOT ({plan.has_key("")})
                        QUALIFY count(*) OVER (PARTITION BY {part}) = 1)
            SELECT CAST(l._id AS VARCHAR), CAST(r._id AS VARCHAR) FROM lu l JOIN ru r ON {fb} WHERE {oks}""")
        return int(con.execute("SELECT count(*) FROM _cx_fallback").fetchall()[0][0])

    def _compare(self, plan: _Plan, fallback_matched: int) -> None:
        """The comparison pass: one full outer join of the two sides; only rows that break are kept."""
        rule, keys = plan.rule, plan.keys
        checks: list[tuple[str, str]] = []
        if plan.line and plan.has_dups:
            dup = " AND ".join(f"d.{k} = r.{k}" for k in keys)
            checks.append((rule.duplicate_type, f"r._n IS NOT NULL AND EXISTS (SELECT 1 FROM _cx_dups d WHERE {dup})"))
        checks.append((rule.missing_right_type, "r._n IS NULL"))
        checks.append((rule.missing_left_type, "l._n IS NULL"))
        case = " ".join(f"WHEN {cond} THEN {literal(bt)}" for bt, cond in checks)
        case += " " + " ".join(f"WHEN {cond} THEN {literal(bt)}" for bt, cond, _ in plan.value_checks)
        where = ""
        if fallback_matched:
            where = (
                "WHERE (l._id IS NULL OR CAST(l._id AS VARCHAR) NOT IN (SELECT l_id FROM _cx_fallback)) "
                "AND (r._id IS NULL OR CAST(r._id AS VARCHAR) NOT IN (SELECT r_id FROM _cx_fallback))"
            )
        carried = plan.value_cols + plan.ctx_cols
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _cx_pairs AS
            SELECT * FROM (
                SELECT {", ".join(f"coalesce(l.{k}, r.{k}) AS {k}" for k in keys)},
                       l._n AS l_n, r._n AS r_n, l._id AS l_id,
                       r._id AS r_id{_more([f"l.{c} AS l_{c}, r.{c} AS r_{c}" for c in carried])},
                       CASE {case} ELSE NULL END AS break_type
                FROM _cx_left_agg l FULL OUTER JOIN _cx_right_agg r ON {plan.same_key("l", "r")}
                {where}
            ) WHERE break_type IS NOT NULL""")
        if plan.line and plan.has_dups:  # the pairs of a duplicated key carry how many rows it has on the right
            on = " AND ".join(f"d.{k} = p.{k}" for k in keys)
            self.con.execute(f"UPDATE _cx_pairs p SET r_n = d._n FROM _cx_dups d WHERE {on} AND p.r_n IS NOT NULL")

    def _breaks(self, plan: _Plan, name: str) -> None:
        """`_cx_breaks`: one row per break with both sides' values, every failing check and its id.

        A duplicated key's rows become one break listing every right row; a row without a key is a
        break of its own, named by its row id."""
        rule, keys = plan.rule, plan.keys

        def side_values(prefix: str, n: str) -> str:
            return (
                f"CASE WHEN {n} IS NULL THEN json_object('rows', 0) ELSE json_object("
                + ", ".join(
                    [f"{literal(m.label)}, {prefix}_m{i}" for i, m in enumerate(rule.measures)]
                    + [f"{literal(a.label)}, {prefix}_a{i}" for i, a in enumerate(rule.attributes)]
                    + [f"'rows', {n}"]
                )
                + ") END"
            )

        details = (
            "nullif(concat_ws('; ', "
            + ", ".join(
                f"CASE WHEN l_n IS NOT NULL AND r_n IS NOT NULL AND {cond.replace('l.', 'l_').replace('r.', 'r_')} "
                f"THEN {literal(label + ': ' + bt)} END"
                for bt, cond, label in plan.value_checks
            )
            + "), '')"
            if plan.value_checks
            else "NULL"
        )
        delta = "coalesce(r_m0, 0) - coalesce(l_m0, 0)" if rule.measures else "NULL"
        partition = ", ".join(keys)
        context = ", ".join(
            f"coalesce(l_ctx_{c}, r_ctx_{c}) AS {c}" if f"ctx_{c}" in plan.ctx_cols else f"NULL::VARCHAR AS {c}"
            for c in CONTEXT
        )

        def select(right_id: str) -> str:
            return (
                f"SELECT {plan.key_text} AS key, CAST(l_id AS VARCHAR) AS left_id, {right_id} AS right_id, "
                f"break_type, {details} AS details, {delta} AS delta, l_n, {side_values('l', 'l_n')} AS left_values, "
                f"{side_values('r', 'r_n')} AS right_values, {context} FROM _cx_pairs p"
            )

        # Windows only where they are needed: a duplicated key's rows become one break listing every
        # right row, and rows without a key that share an id are one break; every other row of
        # `_cx_pairs` is a break of its own (one row per key there).
        if plan.line:
            duplicated = (
                select(f"string_agg(CAST(r_id AS VARCHAR), ',' ORDER BY r_id) OVER (PARTITION BY {partition})")
                + f" WHERE r_n > 1 QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY r_id) = 1"
            )
        else:
            duplicated = (
                select(
                    "(SELECT string_agg(CAST(x._id AS VARCHAR), ',' ORDER BY x._id) FROM _cx_right x "
                    f"WHERE {plan.same_key('x', 'p')})"
                )
                + " WHERE r_n > 1"
            )
        single = select("CAST(r_id AS VARCHAR)") + " WHERE r_n IS NULL OR r_n <= 1"
        con = self.con
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _cx_breaks AS
            SELECT *, md5(concat_ws('|', ?, break_type, coalesce(key, ''),
                CASE WHEN l_n IS NULL THEN coalesce(right_id, '')
                     WHEN key IS NULL THEN 'L' || coalesce(left_id, '') ELSE '' END)) AS break_id
            FROM ({single} UNION ALL {duplicated})""",
            [name],
        )
        # Rows that share a break id (rows without a key and with the same id; a key held twice on the
        # left) are one break; found with a narrow aggregate, collapsed only when there are any.
        if con.execute("SELECT count(*) > count(DISTINCT break_id) FROM _cx_breaks").fetchall()[0][0]:
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _cx_breaks AS
                SELECT * EXCLUDE (details, _same),
                       CASE WHEN _same > 1 THEN concat_ws('; ', nullif(details, ''),
                            _same || CASE WHEN key IS NULL THEN ' rows without a key and with the same id'
                                          ELSE ' rows with this key on the left' END)
                            ELSE details END AS details
                FROM (SELECT *, count(*) OVER (PARTITION BY break_id) AS _same FROM _cx_breaks)
                QUALIFY row_number() OVER (
                    PARTITION BY break_id ORDER BY CAST(left_values AS VARCHAR), CAST(right_values AS VARCHAR)) = 1""")

    def _record(self, name: str, run_id: str, now: dt.datetime, scoped: _Plan | None) -> tuple[int, int]:
        """Lifecycle: new breaks open, seen ones keep their first run, absent ones resolve.

        `scoped` (an incremental run): only breaks of the changed keys (and of rows without a key,
        which every run reads) can resolve or change; every other open break is carried over as it
        was. A break seen again unchanged is not written at all (`changed_run` is the last run that
        found it new, different or gone)."""
        con = self.con

        if scoped:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _cx_scope AS SELECT DISTINCT {scoped.key_text} AS key FROM _cx_affected"
            )
        # The state rows this run writes, whole, and only those that change: new breaks, breaks that
        # differ from what the last run recorded, and resolved ones. DuckDB updates rows slowly once they
        # carry earlier updates, so they are deleted and inserted again (one transaction), never updated.
        # History (`recon.breaks`) gets the same rows as events: new, changed, resolved.
        same = " AND ".join(f"b.{c} IS NOT DISTINCT FROM s.{c}" for c in _COMPARED)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _cx_state AS
            SELECT b.break_id, ? AS recon, b.break_type, b.key, b.left_id, b.right_id, b.project, b.period,
                   b.legal_entity, 'open' AS status,
                   CASE WHEN s.status = 'open' THEN s.first_seen_run ELSE ? END AS first_seen_run,
                   CASE WHEN s.status = 'open' THEN s.first_seen_at ELSE ?::TIMESTAMPTZ END AS first_seen_at,
                   ? AS changed_run, ?::TIMESTAMPTZ AS changed_at, NULL::VARCHAR AS resolved_run,
                   NULL::TIMESTAMPTZ AS resolved_at, b.delta, b.left_values, b.right_values, b.details,
                   b.golden_project, b.customer,
                   CASE WHEN s.status = 'open' THEN 'changed' ELSE 'new' END AS _event
            FROM _cx_breaks b LEFT JOIN recon.break_state s ON s.break_id = b.break_id
            WHERE s.status IS DISTINCT FROM 'open' OR NOT ({same})""",
            [name, run_id, now, run_id, now],
        )
        # The open breaks this run could resolve: all of them, or (incremental) those of the changed keys and of
        # rows without a key, found by a join (an OR of the two would take a mark join over every open break).
        open_ = "SELECT * FROM recon.break_state WHERE recon = ? AND status = 'open'"
        candidates = (
            f"({open_} AND key IN (SELECT key FROM _cx_scope) UNION ALL {open_} AND key IS NULL)"
            if scoped
            else f"({open_})"
        )
        con.execute(
            f"""
            INSERT INTO _cx_state
            SELECT * REPLACE ('resolved' AS status, ? AS changed_run, ?::TIMESTAMPTZ AS changed_at,
                              ? AS resolved_run, ?::TIMESTAMPTZ AS resolved_at), 'resolved'
            FROM {candidates} s
            WHERE NOT EXISTS (SELECT 1 FROM _cx_breaks b WHERE b.break_id = s.break_id)""",
            [run_id, now, run_id, now] + [name] * (2 if scoped else 1),
        )
        with transaction(con):
            new, resolved = con.execute(
                "SELECT count(*) FILTER (WHERE _event = 'new'), count(*) FILTER (WHERE _event = 'resolved') "
                "FROM _cx_state"
            ).fetchall()[0]
            con.execute("DELETE FROM recon.break_state WHERE break_id IN (SELECT break_id FROM _cx_state)")
            con.execute("INSERT INTO recon.break_state SELECT * EXCLUDE (_event) FROM _cx_state")
            con.execute(
                """
                INSERT INTO recon.breaks
                SELECT ?, recon, break_id, break_type, key, left_id, right_id, left_values, right_values, NULL, delta,
                       details, project, period, legal_entity, _event, first_seen_run, first_seen_at,
                       date_diff('second', first_seen_at, ?::TIMESTAMPTZ) / 86400.0, golden_project, customer
                FROM _cx_state""",
                [run_id, now],
            )
        return int(new), int(resolved)

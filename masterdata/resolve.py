"""Entity resolution in DuckDB: standardise, block, compare, link, cluster, keep golden IDs stable.

Every step leaves a table in the `mdm` schema (Splink-style, inspectable):
`mdm.input_<entity>` standardised records, `mdm.match_pairs` scored candidate pairs with their
per-field evidence, `mdm.review_queue`, `mdm.xref`, `mdm.golden_<entity>`, `mdm.lineage`,
`mdm.overrides`, `mdm.runs`. Deterministic rules link first; the rest is a weighted
(log-likelihood) score over comparison levels, with term-frequency discounts for common values.
We build this rather than call Splink for speed (one SQL pass per step, no EM training loop on
the hot path) and so that golden IDs, overrides and incremental runs live in the same tables.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass

import duckdb

from core.errors import ConfigError
from core.warehouse import literal, new_run_id, transaction
from masterdata import train
from masterdata.model import Entity
from masterdata.standardise import install
from masterdata.train import PROBABILITY_FLOOR, Model

DDL = """
CREATE SCHEMA IF NOT EXISTS mdm;
CREATE TABLE IF NOT EXISTS mdm.match_pairs (
    entity VARCHAR, l_rid VARCHAR, r_rid VARCHAR, rule VARCHAR, score DOUBLE, evidence JSON, decision VARCHAR,
    run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS mdm.review_queue (
    entity VARCHAR, l_rid VARCHAR, r_rid VARCHAR, score DOUBLE, evidence JSON, l_golden VARCHAR, r_golden VARCHAR,
    run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS mdm.overrides (
    entity VARCHAR, action VARCHAR, a_rid VARCHAR, b_rid VARCHAR, created_at TIMESTAMPTZ, note VARCHAR
);
CREATE TABLE IF NOT EXISTS mdm.xref (
    entity VARCHAR, source_system VARCHAR, source_id VARCHAR, golden_id VARCHAR, rule VARCHAR, score DOUBLE,
    rid VARCHAR
);
CREATE TABLE IF NOT EXISTS mdm.lineage (
    entity VARCHAR, run_id VARCHAR, event VARCHAR, golden_id VARCHAR, from_golden_id VARCHAR, happened_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS mdm.id_counters (entity VARCHAR PRIMARY KEY, next_id BIGINT);
CREATE TABLE IF NOT EXISTS mdm.runs (
    run_id VARCHAR, entity VARCHAR, mode VARCHAR, records BIGINT, changed_records BIGINT, pairs BIGINT,
    links BIGINT, reviews BIGINT, clusters BIGINT, touched_clusters BIGINT, new_ids BIGINT, seconds DOUBLE,
    run_at TIMESTAMPTZ
);
"""


@dataclass
class ResolveResult:
    entity: str
    run_id: str
    mode: str
    records: int
    changed_records: int
    pairs: int
    links: int
    reviews: int
    clusters: int
    touched_clusters: int
    new_ids: int
    seconds: float


def source_union(entity: Entity) -> str:
    """Every source's records, one relation: source_system, source_id and the source's columns."""
    return " UNION ALL BY NAME ".join(
        f"SELECT {literal(source.system)} AS source_system, CAST(source_id AS VARCHAR) AS source_id, * "
        f"EXCLUDE (source_id) FROM {source.relation()} src"
        for source in entity.sources
    )


def input_select(entity: Entity) -> str:
    """The standardised input: rid, the sources' columns, standardised columns, a row hash, and for each
    term-frequency column its value's frequency `tf_<c>` and `etf_<c>`, how many records a shared value
    usually has: the median frequency of the values held by more than one record (about one record
    per source and duplicate of an entity, whatever a few generic values hold, which dominate any
    mean; and 2, not 1, in a one-source dedupe, whose shared values are its duplicates)."""
    std = ", ".join(f"{expr} AS {col}" for col, expr in entity.standardise.items())
    tf_cols = sorted({lvl.tf for c in entity.comparisons for lvl in c.levels if lvl.tf})
    tf = "".join(f", count(*) OVER (PARTITION BY {c}) AS tf_{c}" for c in tf_cols)
    shared = "".join(
        f", e_{c} AS (SELECT coalesce(median(n), 2) AS etf_{c} FROM "
        f"(SELECT count(*) AS n FROM s WHERE {c} IS NOT NULL GROUP BY {c} HAVING count(*) > 1))"
        for c in tf_cols
    )
    joins = "".join(f" CROSS JOIN e_{c}" for c in tf_cols)
    return f"""
        WITH u AS ({source_union(entity)}), s AS (SELECT *, {std or "1 AS _none"} FROM u),
             h AS (SELECT source_system || ':' || source_id AS rid, *{tf},
                          md5(CAST(struct_pack(*COLUMNS(lambda c: c <> 'updated_at')) AS VARCHAR)) AS row_hash
                   FROM s){shared}
        SELECT * FROM h{joins}"""


def keyed_input(con: duckdb.DuckDBPyConnection, entity: Entity, table: str) -> None:
    """Create `table`: the standardised input with the run's own columns (`internal_columns`): `_rn`,
    numbered in rid order, and each blocking rule's keys `_k<rule>_<n>` and block size `_bs<rule>`
    (NULL where a key is empty). Sizes come from one aggregate per rule and `_rn` from a sort of the
    rids alone: windows over the whole rows took three times as long."""
    keys = "".join(
        f", {expr} AS {n}"
        for j, block in enumerate(entity.blocking)
        for n, expr in zip(_key_names(j, block), block, strict=True)
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _mdm_raw AS SELECT *{keys} FROM ({input_select(entity)})")
    sizes, joins = [], []
    for j, block in enumerate(entity.blocking):
        names = ", ".join(_key_names(j, block))
        nonempty = " AND ".join(f"coalesce(CAST(k.{n} AS VARCHAR), '') <> ''" for n in _key_names(j, block))
        sizes.append(f", CASE WHEN {nonempty} THEN b{j}.n END AS _bs{j}")
        joins.append(f" LEFT JOIN (SELECT {names}, count(*) AS n FROM _mdm_raw GROUP BY ALL) b{j} USING ({names})")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT k.*, o._rn{"".join(sizes)}
        FROM _mdm_raw k JOIN (SELECT rid, row_number() OVER (ORDER BY rid) AS _rn FROM _mdm_raw) o USING (rid)
        {"".join(joins)}""")
    con.execute("DROP TABLE _mdm_raw")


def internal_columns(entity: Entity) -> list[str]:
    """The keyed input's columns that are the run's own, not the records' (left out of `mdm.input_<entity>`)."""
    keys = [n for j, block in enumerate(entity.blocking) for n in _key_names(j, block)]
    return ["_rn", *keys, *(f"_bs{j}" for j in range(len(entity.blocking)))]


def candidates_sql(entity: Entity, table: str, select: str, only: str | None = None) -> str:
    """`select` (over l and r, two rows of the keyed input `table`) for every candidate pair: each rule's
    pairs, the deterministic rules' then the blocking rules', one after the other (no pair twice)."""
    rules = candidate_rules(entity, table, only)
    if not rules:  # no rules: every record alone
        return f"SELECT {select} FROM {table} l, {table} r WHERE false"
    return " UNION ALL ".join(f"SELECT {select} FROM {rule}" for rule in rules)


def rule_bits(entity: Entity) -> str:
    """A candidate pair's rules as SQL: a bit per rule that finds it (`candidate_rules` order)."""
    count = len(entity.deterministic) + len(entity.blocking)
    kind = "BIGINT" if count < 63 else "HUGEINT"
    return " + ".join(f"CASE WHEN {_finds(entity, i)} THEN {1 << i}::{kind} ELSE 0 END" for i in range(count)) or "0"


def _key_names(j: int, block: list[str]) -> list[str]:
    return [f"_k{j}_{i}" for i in range(len(block))]


def _finds(entity: Entity, rule: int) -> str:
    """Whether rule number `rule` (`candidate_rules` order) pairs l and r (rows of the keyed input)."""
    if rule < len(entity.deterministic):
        det = entity.deterministic[rule]
        return "coalesce(" + " AND ".join([f"l.{c} = r.{c}" for c in det.block] + [f"({det.condition})"]) + ", false)"
    j = rule - len(entity.deterministic)
    same = " AND ".join(f"l.{n} = r.{n}" for n in _key_names(j, entity.blocking[j]))
    return f"coalesce({same} AND l._bs{j} <= {entity.max_block_size}, false)"


def train_entity(
    con: duckdb.DuckDBPyConnection, name: str, entity: Entity, table: str, from_labels: bool = False
) -> Model:
    """`train.train` over the candidate pairs of the keyed input `table`."""
    return train.train(
        con,
        name,
        entity,
        table,
        lambda select: candidates_sql(entity, table, select),
        rule_bits(entity),
        pair_bound(con, entity, table),
        from_labels=from_labels,
    )


def pair_bound(con: duckdb.DuckDBPyConnection, entity: Entity, table: str) -> int:
    """At least as many pairs as the rules find (each rule's blocks counted whole, overlaps twice), from
    block sizes alone: no pair is made."""
    terms = [
        f"coalesce(sum(_bs{j} - 1) FILTER (WHERE _bs{j} <= {entity.max_block_size}), 0) / 2"
        for j in range(len(entity.blocking))
    ]
    for det in entity.deterministic:
        keys = ", ".join(det.block)
        present = " AND ".join(f"{c} IS NOT NULL" for c in det.block)
        terms.append(
            f"(SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM (SELECT count(*) AS n FROM {table} "
            f"WHERE {present} GROUP BY {keys}))"
        )
    if not terms:
        return 0
    return int(con.execute(f"SELECT {' + '.join(terms)} FROM {table}").fetchall()[0][0])


def candidate_rules(entity: Entity, table: str, only: str | None = None) -> list[str]:
    """Each rule's candidate pairs as a FROM clause over the keyed input `table`, aliased l and r: the
    deterministic rules', then the blocking rules'. As in Splink, a rule leaves out the pairs an
    earlier rule found, so every pair comes once and no pass removes duplicates.

    `only`: a table of rids; pairs with neither side in it are left out (an incremental run). Blocks
    are cut to those holding a changed record before the self-join, so an incremental run pairs only
    what it needs."""
    changed = f"(SELECT rid FROM {only})" if only else ""
    restrict = f" AND (l.rid IN {changed} OR r.rid IN {changed})" if only else ""
    blocks: list[list[str]] = [d.block for d in entity.deterministic]
    blocks += [_key_names(j, block) for j, block in enumerate(entity.blocking)]
    sizes = [""] * len(entity.deterministic) + [
        f" AND l._bs{j} <= {entity.max_block_size}" for j in range(len(entity.blocking))
    ]
    rules = []
    for i, (columns, size) in enumerate(zip(blocks, sizes, strict=True)):
        side = table
        if only:
            near = f"SELECT DISTINCT {', '.join(columns)} FROM {table} WHERE rid IN {changed}"
            side = f"(SELECT * FROM {table} SEMI JOIN ({near}) USING ({', '.join(columns)}))"
        on = " AND ".join(f"l.{c} = r.{c}" for c in columns)
        earlier = "".join(f" AND NOT {_finds(entity, k)}" for k in range(i))
        condition = f" AND ({entity.deterministic[i].condition})" if i < len(entity.deterministic) else ""
        rules.append(f"{side} l JOIN {side} r ON {on} AND l._rn < r._rn WHERE TRUE{condition}{size}{earlier}{restrict}")
    return rules


def thresholds(entity: Entity, model: Model | None) -> tuple[float, float]:
    """(match, review) score thresholds: a trained model's scores are log2 odds of a match."""
    if model is not None:
        t = entity.training
        return _log_odds(t.match_probability), _log_odds(t.review_probability)
    assert entity.thresholds is not None  # the model validator: configured weights come with thresholds
    return entity.thresholds.match, entity.thresholds.review


def _log_odds(p: float) -> float:
    return math.log2(p / (1 - p))


def level_weight(entity: Entity, comparison: int, level: int, model: Model | None) -> str:
    """A level's weight as SQL: the trained or configured log2 ratio, with a bounded term-frequency
    discount on a positive level: a value shared by more records than shared values usually are
    (`etf`) is weaker evidence, down to none (never evidence against)."""
    spec = entity.comparisons[comparison].levels[level]
    if spec.null:
        return number(0.0)
    if model is not None:
        weight = model.weight(entity.comparisons[comparison].name, level)
    elif spec.weight is not None:
        weight = spec.weight
    else:
        raise ConfigError(
            f"comparison {entity.comparisons[comparison].name!r}, level {spec.label!r}: no weight configured "
            "and no trained model: run `coexist masterdata train`"
        )
    if not spec.tf or weight <= 0 or entity.tf_weight == 0:
        return number(weight)
    if model is not None and (anchor := tf_anchor(entity, comparison, model)) is not None:
        adjust = f"({number(anchor)} - _tfn_{spec.tf})"
    else:
        adjust = f"_tf_{spec.tf}"
    return f"greatest({number(0.0)}, {number(weight)} + {number(entity.tf_weight)} * {adjust})"


def tf_anchor(entity: Entity, comparison: int, model: Model) -> float | None:
    """log2(u_exact * N) for a trained comparison with term frequencies, as Splink adjusts: a pair
    agreeing on a value held by a share p of the records has u = p instead of the level's average u
    (dominated by the common values, which random pairs share most), so its weight moves by
    log2(u / p) = log2(u * N) - log2(frequency): up for a rare value, down for a common one. u is
    the comparison's first term-frequency level's (the exact one), for its fuzzy levels too."""
    c = entity.comparisons[comparison]
    first = next(k for k, lv in enumerate(c.levels) if lv.tf)
    u = model.u[c.name][first]
    if not u or model.records < 2:
        return None
    return math.log2(max(u, PROBABILITY_FLOOR) * model.records)


def number(value: float) -> str:
    """A weight as a DOUBLE literal: DuckDB reads `12.845358980244` as a DECIMAL(14,12), and sums of
    such wide decimals (a trained model's weights) run in 128-bit arithmetic, 1.6x slower to score."""
    return f"CAST({float(value)!r} AS DOUBLE)"


def tf_discount(column: str) -> str:
    """A pair's term-frequency columns on `column`: `_tf_<column>`, the discount of configured weights
    (log2, at most 0), and `_tfn_<column>`, log2 of the pair's frequency (for trained weights)."""
    return (
        f"least(0.0, log2(l.etf_{column} / greatest(l.tf_{column}, r.tf_{column}))) AS _tf_{column}, "
        f"log2(greatest(l.tf_{column}, r.tf_{column})) AS _tfn_{column}"
    )


class Resolver:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        con.execute(DDL)
        install(con)

    def has_run(self, name: str) -> bool:
        """True once `name` has been resolved in this warehouse (an incremental run has a base)."""
        return bool(self.con.execute("SELECT count(*) FROM mdm.runs WHERE entity = ?", [name]).fetchall()[0][0])

    # ------------------------------------------------------------ steps

    def input_table(self, entity: Entity) -> str:
        """Standardised records of every source, with value frequencies and a content hash."""
        # A temp table: `mdm.input_<name>` (the last committed input, what an incremental run compares
        # against) is replaced only inside the run's transaction, so a killed run is redone by the next.
        table = "_mdm_input"
        keyed_input(self.con, entity, table)
        return table

    def _pairs(self, entity: Entity, table: str, only: str | None, model: Model | None) -> None:
        """Candidate pairs scored into `_mdm_pairs` (what can matter: deterministic links and scores from
        the review threshold up), with their per-field evidence, in one pass over the rules' pairs.

        Each level's condition is a column of one projection, so DuckDB computes an expression that
        several levels share (a Jaro-Winkler similarity tested against two thresholds) once per pair;
        the level a pair falls into, its weight and its evidence label then come from that. Unlike a
        CASE, a later level's condition is evaluated even where an earlier one holds: it must not
        fail there (DuckDB's functions give NULL for NULL input)."""
        det_case = " ".join(f"WHEN {rule.condition} THEN {literal(rule.name)}" for rule in entity.deterministic)
        conditions, levels, scores, evidence = [], [], [], []
        for i, comparison in enumerate(entity.comparisons):
            conditions += [f"({level.when}) AS _w{i}_{k}" for k, level in enumerate(comparison.levels)]
            n = len(comparison.levels)
            levels.append("CASE " + " ".join(f"WHEN _w{i}_{k} THEN {k}" for k in range(n)) + f" ELSE {n} END AS _g{i}")
            otherwise = number(model.weight(comparison.name, n) if model is not None else 0.0)
            scores.append(
                f"CASE _g{i} "
                + " ".join(f"WHEN {k} THEN {level_weight(entity, i, k, model)}" for k in range(n))
                + f" ELSE {otherwise} END"
            )
            labels = " ".join(f"WHEN {k} THEN {literal(level.label)}" for k, level in enumerate(comparison.levels))
            evidence.append(f"{literal(comparison.name)}, CASE _g{i} {labels} END")
        tf_cols = sorted({lv.tf for c in entity.comparisons for lv in c.levels if lv.tf})
        discounts = "".join(f", {tf_discount(c)}" for c in tf_cols)
        score = " + ".join(([number(model.prior_weight)] if model is not None else []) + scores) or number(0.0)
        review = thresholds(entity, model)[1]
        pair = (
            f"l.rid AS l_rid, r.rid AS r_rid, {('CASE ' + det_case + ' END') if det_case else 'NULL::VARCHAR'} "
            f"AS det_rule{''.join(', ' + c for c in conditions)}{discounts}"
        )
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _mdm_pairs AS
            WITH v AS ({candidates_sql(entity, table, pair, only)}),
                 g AS (SELECT *{"".join(", " + lv for lv in levels)} FROM v),
                 s AS (SELECT *, {score} AS score FROM g)
            SELECT l_rid, r_rid, det_rule, score,
                   {f"json_object({', '.join(evidence)})" if evidence else "NULL::JSON"} AS evidence
            FROM s WHERE det_rule IS NOT NULL OR score >= {number(review)}""")

    def _components(self, name: str) -> None:
        """Connected components of `_mdm_edges` over `mdm.input_<name>`: label = smallest rid in the cluster."""
        con = self.con
        con.execute(f"CREATE OR REPLACE TEMP TABLE _mdm_labels AS SELECT rid, rid AS label FROM mdm.input_{name}")
        con.execute("""CREATE OR REPLACE TEMP TABLE _mdm_undirected AS
                       SELECT l_rid AS a, r_rid AS b FROM _mdm_edges UNION SELECT r_rid, l_rid FROM _mdm_edges""")
        for _ in range(200):
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _mdm_next AS
                SELECT l.rid, least(l.label, coalesce(min(n.label), l.label)) AS label
                FROM _mdm_labels l LEFT JOIN _mdm_undirected e ON e.a = l.rid LEFT JOIN _mdm_labels n ON n.rid = e.b
                GROUP BY l.rid, l.label""")
            diff = con.execute(
                "SELECT count(*) FROM _mdm_next x JOIN _mdm_labels y USING (rid) WHERE x.label <> y.label"
            ).fetchall()[0][0]
            con.execute("CREATE OR REPLACE TEMP TABLE _mdm_labels AS SELECT * FROM _mdm_next")
            if diff == 0:
                break

    def _assign_ids(self, name: str, entity: Entity, run_id: str, now: dt.datetime) -> int:
        """Stable golden IDs: each cluster inherits the ID most of its members had; the rest are new."""
        con = self.con
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _mdm_votes AS
            SELECT l.label, x.golden_id, count(*) AS votes, min(l.rid) AS first_rid
            FROM _mdm_labels l JOIN mdm.xref x ON x.entity = {literal(name)} AND x.rid = l.rid
            GROUP BY ALL""")
        # An old ID goes to the cluster holding most of its records; a cluster takes its best-supported ID.
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _mdm_claims AS
            WITH per_id AS (SELECT * FROM _mdm_votes
                            QUALIFY row_number() OVER (PARTITION BY golden_id ORDER BY votes DESC, first_rid) = 1)
            SELECT label, golden_id FROM per_id
            QUALIFY row_number() OVER (PARTITION BY label ORDER BY votes DESC, golden_id) = 1""")
        clusters = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT label FROM _mdm_labels WHERE label NOT IN (SELECT label FROM _mdm_claims) ORDER BY 1"
            ).fetchall()
        ]
        row = con.execute("SELECT next_id FROM mdm.id_counters WHERE entity = ?", [name]).fetchall()
        start = row[0][0] if row else 1
        con.execute("CREATE OR REPLACE TEMP TABLE _mdm_new (label VARCHAR, golden_id VARCHAR)")
        if clusters:
            con.execute(
                "INSERT INTO _mdm_new SELECT label, ? || '-' || lpad(CAST(? + row_number() OVER (ORDER BY label) "
                "- 1 AS VARCHAR), 7, '0') FROM (SELECT unnest(?) AS label)",
                [entity.id_prefix, start, clusters],
            )
        con.execute(
            "INSERT INTO mdm.id_counters VALUES (?, ?) ON CONFLICT (entity) DO UPDATE SET next_id = excluded.next_id",
            [name, start + len(clusters)],
        )
        con.execute("""CREATE OR REPLACE TEMP TABLE _mdm_ids AS
                       SELECT label, golden_id FROM _mdm_claims UNION ALL SELECT label, golden_id FROM _mdm_new""")
        # Lineage: new IDs (with the ID they split from, if any), IDs merged into another, IDs retired.
        con.execute(
            f"""
            INSERT INTO mdm.lineage
            SELECT {literal(name)}, ?, CASE WHEN v.golden_id IS NULL THEN 'new' ELSE 'split' END, n.golden_id,
                   v.golden_id, ?
            FROM _mdm_new n LEFT JOIN (SELECT label, any_value(golden_id) AS golden_id FROM _mdm_votes GROUP BY label) v
              USING (label)""",
            [run_id, now],
        )
        con.execute(
            f"""
            INSERT INTO mdm.lineage
            SELECT DISTINCT {literal(name)}, ?, 'merge', i.golden_id, v.golden_id, ?
            FROM _mdm_votes v JOIN _mdm_ids i USING (label)
            WHERE v.golden_id <> i.golden_id AND v.golden_id NOT IN (SELECT golden_id FROM _mdm_ids)""",
            [run_id, now],
        )
        return len(clusters)

    def _golden(self, name: str, entity: Entity, run_id: str) -> None:
        """Golden attributes by survivorship per field, each with the record it came from."""
        base = (
            f"(SELECT i.*, x.golden_id FROM mdm.input_{name} i JOIN mdm.xref x ON x.entity = {literal(name)} "
            f"AND x.rid = i.rid)"
        )
        frequent = [r.field for r in entity.survivorship if r.rule == "most_frequent"]
        if frequent:
            freq = ", ".join(f"count(*) OVER (PARTITION BY golden_id, {c}) AS _freq_{c}" for c in frequent)
            base = f"(SELECT *, {freq} FROM {base})"
        selects, fields = [], []
        for rule in entity.survivorship:
            col = rule.field
            if rule.rule == "source_priority":
                whens = " ".join(f"WHEN {literal(s)} THEN {n}" for n, s in enumerate(rule.order or []))
                order = f"CASE source_system {whens} ELSE 99 END"
            elif rule.rule == "most_recent":
                order = "coalesce(-epoch_us(CAST(updated_at AS TIMESTAMP)), 9e18)"
            elif rule.rule == "most_complete":
                order = f"-length(CAST({col} AS VARCHAR))"
            else:
                order = f"-_freq_{col}"
            present = f"{col} IS NOT NULL AND CAST({col} AS VARCHAR) <> ''"
            # The value and its record in one aggregate (two took half as long again).
            selects.append(
                f"arg_min(struct_pack(v := {col}, s := rid), ({order}, rid)) FILTER (WHERE {present}) AS _{col}"
            )
            fields.append(f"_{col}.v AS {col}, _{col}.s AS {col}_source")
        self.con.execute(f"""
            CREATE OR REPLACE TABLE mdm.golden_{name} AS
            SELECT golden_id, {"".join(f"{c}, " for c in fields)}members, member_records, {literal(run_id)} AS run_id
            FROM (SELECT golden_id, {"".join(f"{c}, " for c in selects)}count(*) AS members,
                         list(rid ORDER BY rid) AS member_records
                  FROM {base} b GROUP BY golden_id)""")

    # ------------------------------------------------------------ the run

    def resolve(self, name: str, entity: Entity, incremental: bool = False) -> ResolveResult:
        con = self.con
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        run_id = new_run_id(now)
        had_previous = (
            con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'mdm' AND table_name = ?",
                [f"input_{name}"],
            ).fetchall()[0][0]
            > 0
        )
        table = self.input_table(entity)
        records = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        mode = "incremental" if incremental and had_previous else "full"
        only = None
        changed = records
        if mode == "incremental":
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _mdm_changed AS
                SELECT rid FROM {table} i WHERE NOT EXISTS (SELECT 1 FROM mdm.input_{name} p WHERE p.rid = i.rid
                                                            AND p.row_hash = i.row_hash)
                UNION SELECT rid FROM mdm.input_{name} p WHERE NOT EXISTS (SELECT 1 FROM {table} i WHERE i.rid = p.rid)
                UNION SELECT unnest([a_rid, b_rid]) FROM mdm.overrides o WHERE o.entity = {literal(name)}
                  AND o.created_at > (SELECT max(run_at) FROM mdm.runs r WHERE r.entity = {literal(name)})""")
            changed = con.execute("SELECT count(*) FROM _mdm_changed").fetchall()[0][0]
            only = "_mdm_changed"
            if changed == 0:
                result = ResolveResult(name, run_id, mode, records, 0, 0, 0, 0, 0, 0, 0, time.perf_counter() - started)
                self._log_run(result, now)
                return result
        model = train.load(con, name, entity)
        if model is None and train.needs_training(entity):  # from every pair, not only the changed ones'
            model = train_entity(con, name, entity, table)
        self._pairs(entity, table, only, model)
        match, review = thresholds(entity, model)
        with transaction(con):
            con.execute(
                f"CREATE OR REPLACE TABLE mdm.input_{name} AS SELECT * EXCLUDE ({', '.join(internal_columns(entity))}) FROM {table}"
            )
            if only:
                con.execute(
                    f"DELETE FROM mdm.match_pairs WHERE entity = ? AND (l_rid IN (SELECT rid FROM {only}) "
                    f"OR r_rid IN (SELECT rid FROM {only}))",
                    [name],
                )
            else:
                con.execute("DELETE FROM mdm.match_pairs WHERE entity = ?", [name])
            con.execute(
                f"""
                INSERT INTO mdm.match_pairs
                SELECT ?, l_rid, r_rid, coalesce(det_rule, 'probabilistic'), score, evidence,
                       CASE WHEN det_rule IS NOT NULL OR score >= {number(match)} THEN 'link'
                            WHEN score >= {number(review)} THEN 'review' ELSE 'reject' END, ?
                FROM _mdm_pairs WHERE det_rule IS NOT NULL OR score >= {number(review)}""",
                [name, run_id],
            )
            # Accepted links, plus manual links, minus manual splits.
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE _mdm_edges AS
                SELECT l_rid, r_rid FROM mdm.match_pairs p WHERE entity = ? AND decision = 'link'
                  AND NOT EXISTS (SELECT 1 FROM mdm.overrides o WHERE o.entity = p.entity AND o.action = 'split'
                                  AND ((o.a_rid = p.l_rid AND o.b_rid = p.r_rid) OR (o.a_rid = p.r_rid AND o.b_rid = p.l_rid)))
                UNION SELECT a_rid, b_rid FROM mdm.overrides WHERE entity = ? AND action = 'link'""",
                [name, name],
            )
            self._components(name)
            self._enforce_splits(name)
            if only:
                touched = con.execute(f"""SELECT count(DISTINCT label) FROM _mdm_labels WHERE label IN (
                    SELECT label FROM _mdm_labels WHERE rid IN (SELECT rid FROM {only}))""").fetchall()[0][0]
            else:
                touched = None
            new_ids = self._assign_ids(name, entity, run_id, now)
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE _mdm_xref AS
                SELECT {literal(name)} AS entity, i.source_system, i.source_id, ids.golden_id,
                       coalesce(best.rule, 'singleton') AS rule, best.score, i.rid
                FROM mdm.input_{name} i JOIN _mdm_labels l USING (rid) JOIN _mdm_ids ids USING (label)
                LEFT JOIN (SELECT rid, arg_max(rule, score) AS rule, max(score) AS score FROM (
                               SELECT l_rid AS rid, rule, score FROM mdm.match_pairs WHERE entity = ? AND decision = 'link'
                               UNION ALL SELECT r_rid, rule, score FROM mdm.match_pairs WHERE entity = ? AND decision = 'link'
                               UNION ALL SELECT a_rid, 'override', NULL FROM mdm.overrides WHERE entity = ? AND action = 'link'
                               UNION ALL SELECT b_rid, 'override', NULL FROM mdm.overrides WHERE entity = ? AND action = 'link')
                           GROUP BY rid) best ON best.rid = i.rid""",
                [name, name, name, name],
            )
            if touched is None:
                touched = con.execute(
                    "SELECT count(DISTINCT golden_id) FROM _mdm_xref x WHERE NOT EXISTS ("
                    "SELECT 1 FROM mdm.xref o WHERE o.entity = x.entity AND o.rid = x.rid "
                    "AND o.golden_id = x.golden_id)"
                ).fetchall()[0][0]
            con.execute("DELETE FROM mdm.xref WHERE entity = ?", [name])
            con.execute("INSERT INTO mdm.xref SELECT * FROM _mdm_xref")
            con.execute("DELETE FROM mdm.review_queue WHERE entity = ?", [name])
            con.execute(
                """
                INSERT INTO mdm.review_queue
                SELECT p.entity, p.l_rid, p.r_rid, p.score, p.evidence, a.golden_id, b.golden_id, p.run_id
                FROM mdm.match_pairs p JOIN mdm.xref a ON a.entity = p.entity AND a.rid = p.l_rid
                JOIN mdm.xref b ON b.entity = p.entity AND b.rid = p.r_rid
                WHERE p.entity = ? AND p.decision = 'review' AND a.golden_id <> b.golden_id
                  AND NOT EXISTS (SELECT 1 FROM mdm.overrides o WHERE o.entity = p.entity
                                  AND ((o.a_rid = p.l_rid AND o.b_rid = p.r_rid) OR (o.a_rid = p.r_rid AND o.b_rid = p.l_rid)))
            """,
                [name],
            )
            self._golden(name, entity, run_id)
        counts = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE decision = 'link'), "
            "count(*) FILTER (WHERE decision = 'review') FROM mdm.match_pairs WHERE entity = ?",
            [name],
        ).fetchall()[0]
        clusters = con.execute("SELECT count(DISTINCT golden_id) FROM mdm.xref WHERE entity = ?", [name]).fetchall()[0][
            0
        ]
        result = ResolveResult(
            name,
            run_id,
            mode,
            records,
            int(changed),
            int(counts[0]),
            int(counts[1]),
            int(counts[2]),
            int(clusters),
            int(touched),
            new_ids,
            time.perf_counter() - started,
        )
        self._log_run(result, now)
        return result

    def _enforce_splits(self, name: str) -> None:
        """A manual split that connected components still join: cut every automatic edge of the second record."""
        con = self.con
        for _ in range(5):
            together = con.execute(
                """
                SELECT o.a_rid, o.b_rid FROM mdm.overrides o JOIN _mdm_labels a ON a.rid = o.a_rid
                JOIN _mdm_labels b ON b.rid = o.b_rid WHERE o.entity = ? AND o.action = 'split' AND a.label = b.label
            """,
                [name],
            ).fetchall()
            if not together:
                return
            for _a, b in together:
                con.execute(
                    """DELETE FROM _mdm_edges WHERE (l_rid = ? OR r_rid = ?) AND NOT EXISTS (
                    SELECT 1 FROM mdm.overrides o WHERE o.entity = ? AND o.action = 'link'
                    AND ((o.a_rid = _mdm_edges.l_rid AND o.b_rid = _mdm_edges.r_rid)
                      OR (o.a_rid = _mdm_edges.r_rid AND o.b_rid = _mdm_edges.l_rid)))""",
                    [b, b, name],
                )
            self._components(name)

    def _log_run(self, r: ResolveResult, now: dt.datetime) -> None:
        self.con.execute(
            "INSERT INTO mdm.runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                r.run_id,
                r.entity,
                r.mode,
                r.records,
                r.changed_records,
                r.pairs,
                r.links,
                r.reviews,
                r.clusters,
                r.touched_clusters,
                r.new_ids,
                r.seconds,
                now,
            ],
        )


def _side(expr: str, alias: str) -> str:
    """Qualify a blocking expression's bare column names with a table alias (l or r)."""
    import re

    keywords = {
        "substr",
        "split_part",
        "lower",
        "upper",
        "left",
        "right",
        "coalesce",
        "cast",
        "as",
        "varchar",
        "and",
        "or",
        "not",
        "null",
        "trim",
        "soundex",
        "strftime",
        "year",
        "month",
    }
    return re.sub(
        r"(?<![.'\w])([a-z_][a-z0-9_]*)(?![\w(])",
        lambda m: m.group(1) if m.group(1) in keywords else f"{alias}.{m.group(1)}",
        expr,
    )

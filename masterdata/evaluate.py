"""How good a resolution is, against a ground truth (source record -> true id): pairwise and cluster
(B-cubed) precision, recall and F1, counted inside DuckDB."""

from __future__ import annotations

import duckdb
import pyarrow as pa

_RESOLVED = """
    WITH t AS (SELECT CAST(source_system AS VARCHAR) || ':' || CAST(source_id AS VARCHAR) AS rid,
                      CAST(true_id AS VARCHAR) AS true_id FROM _mdm_truth),
         x AS (SELECT t.rid, t.true_id, coalesce(x.golden_id, 'unresolved:' || t.rid) AS golden_id
               FROM t LEFT JOIN mdm.xref x ON x.entity = ? AND x.rid = t.rid)"""


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def pairwise_quality(con: duckdb.DuckDBPyConnection, entity: str, truth: pa.Table) -> dict[str, float]:
    """`truth` has columns source_system, source_id, true_id. Pairs are counted inside DuckDB."""
    con.register("_mdm_truth", truth)
    try:
        row = con.execute(
            _RESOLVED
            + """,
                 predicted AS (SELECT a.true_id = b.true_id AS correct FROM x a JOIN x b
                               ON a.golden_id = b.golden_id AND a.rid < b.rid),
                 actual AS (SELECT count(*) AS n FROM x a JOIN x b ON a.true_id = b.true_id AND a.rid < b.rid)
            SELECT (SELECT count(*) FROM predicted), (SELECT count(*) FILTER (WHERE correct) FROM predicted),
                   (SELECT n FROM actual)""",
            [entity],
        ).fetchall()[0]
    finally:
        con.unregister("_mdm_truth")
    predicted, true_positive, actual = (int(v or 0) for v in row)
    precision = true_positive / predicted if predicted else 1.0
    recall = true_positive / actual if actual else 1.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "predicted_pairs": predicted,
        "true_pairs": actual,
    }


def cluster_quality(con: duckdb.DuckDBPyConnection, entity: str, truth: pa.Table) -> dict[str, float]:
    """B-cubed precision and recall (per record: the share of its golden record that is truly it, and
    the share of its true entity that its golden record holds, averaged), and the share of true
    entities resolved exactly."""
    con.register("_mdm_truth", truth)
    try:
        row = con.execute(
            _RESOLVED
            + """,
                 sized AS (SELECT *, count(*) OVER (PARTITION BY golden_id) AS g_size,
                                  count(*) OVER (PARTITION BY true_id) AS t_size,
                                  count(*) OVER (PARTITION BY golden_id, true_id) AS both_size FROM x),
                 exact AS (SELECT true_id, bool_and(both_size = g_size AND both_size = t_size) AS ok
                           FROM sized GROUP BY true_id)
            SELECT avg(both_size / g_size), avg(both_size / t_size), (SELECT avg(ok::INT) FROM exact),
                   count(*), count(DISTINCT true_id), count(DISTINCT golden_id)
            FROM sized""",
            [entity],
        ).fetchall()[0]
    finally:
        con.unregister("_mdm_truth")
    precision, recall, exact = (float(v) if v is not None else 1.0 for v in row[:3])
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "exact_entities": exact,
        "records": int(row[3]),
        "true_entities": int(row[4]),
        "golden_records": int(row[5]),
    }

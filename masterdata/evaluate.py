"""Pairwise precision and recall of the resolved clusters against a ground truth (source record -> true id)."""

from __future__ import annotations

import duckdb
import pyarrow as pa


def pairwise_quality(con: duckdb.DuckDBPyConnection, entity: str, truth: pa.Table) -> dict[str, float]:
    """`truth` has columns source_system, source_id, true_id. Pairs are counted inside DuckDB."""
    con.register("_mdm_truth", truth)
    try:
        row = con.execute(
            """
            WITH t AS (SELECT source_system || ':' || source_id AS rid, true_id FROM _mdm_truth),
                 x AS (SELECT t.rid, t.true_id, coalesce(x.golden_id, 'unresolved:' || t.rid) AS golden_id
                       FROM t LEFT JOIN mdm.xref x ON x.entity = ? AND x.rid = t.rid),
                 predicted AS (SELECT a.rid AS a, b.rid AS b, a.true_id = b.true_id AS correct FROM x a JOIN x b
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
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted_pairs": predicted, "true_pairs": actual}

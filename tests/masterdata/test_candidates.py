"""Candidate pairs: every rule's pairs once each, with the rules that find them, and an incremental
run that pairs only around the changed records yet ends where a full run would."""

from __future__ import annotations

import random

import duckdb
import pytest

from masterdata.model import Entity
from masterdata.resolve import Resolver, candidates_sql, keyed_input, rule_bits

ENTITY = {
    "id_prefix": "P",
    "sources": [{"system": "x", "table": "people"}],
    "standardise": {"name_std": "lower(name)"},
    "deterministic": [{"name": "same_code", "condition": "l.code = r.code AND l.a = r.a", "block": ["code"]}],
    # The second rule's blocks overlap the first's; the third has empty keys and blocks past the cap.
    "blocking": [["a", "substr(name_std, 1, 1)"], ["a"], ["b", "nullif(substr(name_std, 1, 2), 'zz')"]],
    "max_block_size": 12,
    "comparisons": [
        {
            "name": "a",
            "levels": [
                {"when": "l.a = r.a", "weight": 2.0, "label": "same"},
                {"when": "TRUE", "weight": -2.0, "label": "different"},
            ],
        },
        {
            "name": "b",
            "levels": [
                {"when": "l.b = r.b", "weight": 3.0, "label": "same"},
                {"when": "TRUE", "weight": -1.0, "label": "different"},
            ],
        },
        {
            "name": "name",
            "levels": [
                {"when": "l.name_std = r.name_std", "weight": 6.0, "label": "exact"},
                {"when": "jaro_winkler_similarity(l.name_std, r.name_std) >= 0.9", "weight": 4.0, "label": "close"},
                {"when": "jaro_winkler_similarity(l.name_std, r.name_std) >= 0.8", "weight": 1.0, "label": "near"},
                {"when": "TRUE", "weight": -4.0, "label": "different"},
            ],
        },
    ],
    "thresholds": {"match": 6.0, "review": 3.0},
}


def people(con: duckdb.DuckDBPyConnection, seed: int, n: int = 500) -> None:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        base = "".join(rnd.choice("abcdz") for _ in range(6))
        name = base if rnd.random() < 0.7 else base[:-1] + rnd.choice("xyz")
        code = rnd.choice([None, f"c{rnd.randrange(40)}"])
        a = rnd.choice([None, "", f"a{rnd.randrange(6)}"])
        rows.append((f"{i}", name, code, a, rnd.choice([None, f"b{rnd.randrange(30)}"])))
    con.execute("CREATE OR REPLACE TABLE people (source_id VARCHAR, name VARCHAR, code VARCHAR, a VARCHAR, b VARCHAR)")
    con.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?)", rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_rule_pair_comes_once_with_the_rules_that_find_it(seed: int) -> None:
    con = duckdb.connect()
    people(con, seed)
    entity = Entity.model_validate(ENTITY)
    Resolver(con)  # the macros
    keyed_input(con, entity, "keyed")
    got = con.execute(f"SELECT * FROM ({candidates_sql(entity, 'keyed', 'l.rid AS l_rid, r.rid AS r_rid')})").fetchall()
    pairs = [(a, b) for a, b in got]
    assert len(pairs) == len(set(pairs)) > 0
    # By brute force: each rule as written (block keys equal, non-empty, block within the cap).
    expected = {}
    rules = [
        "l.code = r.code AND l.code = r.code AND l.a = r.a",
        "l.a = r.a AND l.a <> '' AND substr(l.name_std, 1, 1) = substr(r.name_std, 1, 1) AND l._bs0 <= 12",
        "l.a = r.a AND l.a <> '' AND l._bs1 <= 12",
        "l.b = r.b AND nullif(substr(l.name_std, 1, 2), 'zz') = nullif(substr(r.name_std, 1, 2), 'zz') "
        "AND l._bs2 <= 12",
    ]
    bits = " + ".join(f"CASE WHEN coalesce({rule}, false) THEN {1 << i} ELSE 0 END" for i, rule in enumerate(rules))
    for l_rid, r_rid, found in con.execute(
        f"SELECT * FROM (SELECT l.rid, r.rid, {bits} AS found FROM keyed l, keyed r WHERE l.rid < r.rid) WHERE found > 0"
    ).fetchall():
        expected[(l_rid, r_rid)] = found
    assert set(pairs) == set(expected)
    with_bits = con.execute(
        f"SELECT l_rid, r_rid, rules FROM ({candidates_sql(entity, 'keyed', f'l.rid AS l_rid, r.rid AS r_rid, {rule_bits(entity)} AS rules')})"
    ).fetchall()
    assert {(a, b): int(bits) for a, b, bits in with_bits} == expected
    assert any(bin(b).count("1") > 1 for b in expected.values())  # overlapping rules are exercised


@pytest.mark.parametrize("seed", [1, 2])
def test_an_incremental_run_ends_where_a_full_run_would(seed: int) -> None:
    # Without the block cap: a block that grows past it after a change would drop pairs of unchanged
    # records in a full run, which an incremental run does not revisit (nor term frequencies that move).
    entity = Entity.model_validate(ENTITY | {"max_block_size": 100_000})
    incremental, full = duckdb.connect(), duckdb.connect()
    people(incremental, seed)
    Resolver(incremental).resolve("people", entity)
    rnd = random.Random(seed)
    changes = [
        "UPDATE people SET name = name || 'q' WHERE hash(source_id) % 17 = 0",
        "UPDATE people SET a = 'a1' WHERE hash(source_id) % 23 = 1",
        "DELETE FROM people WHERE hash(source_id) % 29 = 2",
        f"INSERT INTO people SELECT source_id || 'n', name, code, a, b FROM people WHERE hash(source_id) % 31 = {rnd.randrange(3)}",
    ]
    for sql in changes:
        incremental.execute(sql)
    result = Resolver(incremental).resolve("people", entity, incremental=True)
    assert result.mode == "incremental" and 0 < result.changed_records < result.records
    rows = incremental.execute("SELECT * FROM people").fetchall()
    full.execute("CREATE TABLE people (source_id VARCHAR, name VARCHAR, code VARCHAR, a VARCHAR, b VARCHAR)")
    full.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?)", rows)
    Resolver(full).resolve("people", entity)

    def state(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        pairs = con.execute(
            "SELECT l_rid, r_rid, rule, round(score, 9), evidence::VARCHAR, decision FROM mdm.match_pairs ORDER BY ALL"
        ).fetchall()
        clusters = con.execute(
            "SELECT list(rid ORDER BY rid) AS members FROM mdm.xref GROUP BY golden_id ORDER BY members"
        ).fetchall()
        return pairs, clusters

    assert state(incremental) == state(full)

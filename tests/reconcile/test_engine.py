"""The engine on small in-memory inputs: rules reduced to their keys, rows without keys, NULL groups."""

from __future__ import annotations

import duckdb

from reconcile.engine import Engine
from reconcile.rules import Rule


def test_a_rule_of_keys_alone_at_both_grains() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE a AS SELECT * FROM (VALUES (1), (2), (3), (NULL)) t(id)")
    con.execute("CREATE TABLE b AS SELECT * FROM (VALUES (1), (1), (4), (NULL)) t(id)")
    engine = Engine(con)
    line = engine.run(
        "line", Rule.model_validate({"left": {"table": "a"}, "right": {"table": "b"}, "keys": [["id", "id"]]})
    )
    # A key posted twice, two left rows with no partner (one without a key), two right rows likewise.
    assert line.counts_by_type == {"duplicate_posting": 1, "missing_in_left": 2, "missing_in_right": 3}
    groups = engine.run(
        "groups",
        Rule.model_validate(
            {"left": {"table": "a"}, "right": {"table": "b"}, "keys": [["id", "id"]], "grain": [["id", "id"]]}
        ),
    )
    # At a group grain the NULL group is a group: it is on both sides and compares equal.
    assert groups.counts_by_type == {"missing_in_left": 1, "missing_in_right": 2}
    keys = {k for (k,) in con.execute("SELECT key FROM recon.break_state WHERE recon = 'groups'").fetchall()}
    assert keys == {"2", "3", "4"}

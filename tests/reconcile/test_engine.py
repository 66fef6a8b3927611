"""The engine on small in-memory inputs: rules reduced to their keys, rows without keys, NULL groups."""

from __future__ import annotations

import duckdb

from reconcile import history
from reconcile.engine import Engine
from reconcile.rules import Dataset, Rule


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


def test_history_records_what_changed_and_state_keeps_first_seen() -> None:
    """A run writes history only for breaks that are new, different from the last run, or gone."""
    con = duckdb.connect()
    con.execute("CREATE TABLE a AS SELECT * FROM (VALUES (1, 10.0), (2, 20.0), (3, 30.0), (5, 1.0)) t(id, amount)")
    con.execute("CREATE TABLE b AS SELECT * FROM (VALUES (1, 10.0), (2, 21.0), (3, 33.0), (4, 4.0)) t(id, amount)")
    con.execute("CREATE TABLE c AS SELECT * FROM (VALUES (7, 1.0), (7, 2.0), (NULL, 1.0), (NULL, 1.0)) t(id, amount)")
    rule = Rule.model_validate(
        {
            "left": {"table": "a"},
            "right": {"table": "b"},
            "keys": [["id", "id"]],
            "measures": [{"left": "amount", "right": "amount", "abs_tol": 0.01}],
        }
    )
    engine = Engine(con)
    first = engine.run("r", rule)
    assert (first.new_breaks, first.resolved_breaks) == (4, 0)
    con.execute("UPDATE b SET amount = 34.0 WHERE id = 3")  # still a break, a different one
    con.execute("UPDATE b SET amount = 20.0 WHERE id = 2")  # fixed
    second = engine.run("r", rule)
    assert (second.new_breaks, second.resolved_breaks, second.breaks) == (0, 1, 3)
    events = con.execute(
        "SELECT key, status FROM recon.breaks WHERE run_id = ? ORDER BY key", [second.run_id]
    ).fetchall()
    assert events == [("2", "resolved"), ("3", "changed")]
    state = con.execute(
        "SELECT key, status, first_seen_run, changed_run, delta FROM recon.break_state ORDER BY key"
    ).fetchall()
    assert state == [
        ("2", "resolved", first.run_id, second.run_id, 1.0),
        ("3", "open", first.run_id, second.run_id, 4.0),
        ("4", "open", first.run_id, first.run_id, 4.0),
        ("5", "open", first.run_id, first.run_id, -1.0),
    ]
    third = engine.run("r", rule)  # nothing changed: nothing written
    assert [r["mode"] for r in history.runs(con)] == ["full", "full", "full"]
    assert con.execute("SELECT count(*) FROM recon.breaks WHERE run_id = ?", [third.run_id]).fetchall()[0][0] == 0
    # Rows sharing a break id (a key twice on the left, rows without a key with the same id) stay one break.
    dup = engine.run(
        "dup", Rule.model_validate({"left": {"table": "c"}, "right": {"table": "a"}, "keys": [["id", "id"]]})
    )
    assert dup.counts_by_type == {"missing_in_right": 2, "missing_in_left": 4}


def test_only_a_constraint_on_exactly_the_key_rules_duplicates_out() -> None:
    """A right table whose primary key is the rule's key cannot hold a key twice, so its duplicate check is
    skipped; a key on other columns, or the same table name in another schema, does not skip it."""
    con = duckdb.connect()
    con.execute("CREATE TABLE a AS SELECT * FROM (VALUES (1), (2), (3)) t(id)")
    con.execute("CREATE TABLE posted (posting_id INTEGER PRIMARY KEY, entry_id INTEGER)")
    con.execute("INSERT INTO posted VALUES (10, 1), (11, 1), (12, 2)")
    con.execute("CREATE SCHEMA other")
    con.execute("CREATE TABLE other.posted (entry_id INTEGER PRIMARY KEY)")
    con.execute("CREATE TABLE keyed (entry_id INTEGER PRIMARY KEY, hours INTEGER)")
    con.execute("INSERT INTO keyed VALUES (1, 8), (2, 8), (4, 8)")
    engine = Engine(con)

    def run(right: str, key: str) -> dict[str, int]:
        rule = Rule.model_validate({"left": {"table": "a"}, "right": {"table": right}, "keys": [["id", key]]})
        return engine.run(right, rule).counts_by_type

    def right(table: str) -> Dataset:
        return Dataset.model_validate({"table": table})

    assert engine._unique(right("keyed"), ["entry_id"]) and engine._unique(right("other.posted"), ["entry_id"])
    assert not engine._unique(right("posted"), ["entry_id"]) and not engine._unique(right("keyed"), ["hours"])
    assert run("posted", "entry_id") == {"duplicate_posting": 1, "missing_in_right": 1}
    assert run("keyed", "entry_id") == {"missing_in_left": 1, "missing_in_right": 1}


def test_duplicates_are_the_same_whether_the_key_sorts_or_groups() -> None:
    """An integer key's duplicates are found by sorting, any other key's by grouping: the same rows,
    the same key held once, twice or three times, NULL keys and all, give the same breaks either way."""
    con = duckdb.connect()
    con.execute("SELECT setseed(0.42)")
    con.execute("""CREATE TABLE a AS SELECT CASE WHEN i % 97 = 0 THEN NULL ELSE i END AS id, i % 5 AS amount
                   FROM range(2000) t(i)""")
    con.execute("""CREATE TABLE b AS SELECT CASE WHEN random() < 0.01 THEN NULL ELSE (random() * 2100)::BIGINT END
                   AS id, (random() * 5)::INTEGER AS amount, i AS posting FROM range(2000) t(i)""")
    con.execute("CREATE VIEW a_text AS SELECT CAST(id AS VARCHAR) AS id, amount FROM a")
    con.execute("CREATE VIEW b_text AS SELECT CAST(id AS VARCHAR) AS id, amount, posting FROM b")
    engine = Engine(con)
    found = {}
    for name, (left, right) in {"sorted": ("a", "b"), "grouped": ("a_text", "b_text")}.items():
        rule = {"left": {"table": left}, "right": {"table": right}, "keys": [["id", "id"]], "row_id": ["id", "posting"]}
        measures = [{"left": "amount", "right": "amount", "abs_tol": 0}]
        engine.run(name, Rule.model_validate(rule | {"measures": measures}))
        found[name] = con.execute(
            "SELECT break_type, key, left_id, right_id, CAST(right_values AS VARCHAR) FROM recon.break_state "
            "WHERE recon = ? ORDER BY ALL",
            [name],
        ).fetchall()
    held = dict(con.execute("SELECT id, count(*) FROM b WHERE id IS NOT NULL GROUP BY id").fetchall())
    duplicated = {row[1] for row in found["sorted"] if row[0] == "duplicate_posting"}
    assert duplicated == {str(k) for k, n in held.items() if n > 1} and max(held.values()) >= 3
    assert found["sorted"] == found["grouped"]

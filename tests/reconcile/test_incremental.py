"""Continuous reconciliation: an incremental run leaves `recon.break_state` exactly as a full run would.

The replica and its changelog are written by the real sink (`DuckDBSink`) from Debezium-shaped
events, as capture writes them: inserts, updates with and without a before image (PostgreSQL's
default replica identity has none), deletes with only the key, key changes, duplicate postings
appearing and disappearing, and a dimension (project code) renamed under many lines.
"""

from __future__ import annotations

import decimal
import random
from pathlib import Path
from typing import Any

import pytest

from cdc.events import ChangeEvent, position_key
from cdc.sink import Batch, DuckDBSink, Offset
from reconcile.engine import Engine
from reconcile.rules import Rule

TYPES = {
    "time": {"id": "INTEGER", "pid": "INTEGER", "hours": "DECIMAL(8,2)", "period": "VARCHAR", "status": "VARCHAR"},
    "proj": {"pid": "INTEGER", "code": "VARCHAR"},
    "post": {
        "post_id": "BIGINT",
        "ref": "INTEGER",
        "hours": "DECIMAL(8,2)",
        "period": "VARCHAR",
        "proj_code": "VARCHAR",
    },
}
SOURCE = {"time": "psa", "proj": "psa", "post": "erp"}
KEY = {"time": "id", "proj": "pid", "post": "post_id"}

LEFT = """SELECT t.id, t.hours, t.period, p.code FROM replica_psa.time t
          JOIN replica_psa.proj p ON p.pid = t.pid WHERE t.status = 'approved'"""
LINE = {
    "left": {"sql": LEFT},
    "right": {"table": "replica_erp.post"},
    "keys": [["id", "ref"]],
    "row_id": ["id", "post_id"],
    "measures": [{"left": "hours", "right": "hours", "abs_tol": 0.01, "break_type": "hours_mismatch"}],
    "attributes": [{"left": "code", "right": "proj_code", "break_type": "project_mismatch"}],
    "context": {"project": ["code", "proj_code"], "period": ["period", "period"]},
}
GROUPS = {
    "left": {"sql": LEFT},
    "right": {"sql": "SELECT * FROM replica_erp.post WHERE ref IS NOT NULL"},
    "keys": [["code", "proj_code"], ["period", "period"]],
    "grain": [["code", "proj_code"], ["period", "period"]],
    "duplicates": False,
    "measures": [{"left": "hours", "right": "hours", "abs_tol": 0.01, "break_type": "hours_mismatch"}],
}
STATE = """SELECT break_type, key, left_id, right_id, project, period, status, delta,
                  CAST(left_values AS VARCHAR), CAST(right_values AS VARCHAR), details
           FROM recon.break_state WHERE recon = ? AND status = 'open' ORDER BY ALL"""


class World:
    """The source rows as Python dicts, and the events that bring the replica to them."""

    def __init__(self, sink: DuckDBSink, seed: int) -> None:
        self.sink, self.rnd, self.pos = sink, random.Random(seed), 0
        self.rows: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in TYPES}
        self.pending: list[ChangeEvent] = []

    def emit(self, table: str, op: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        self.pos += 1
        key = (after or before or {})[KEY[table]]
        if op in ("u", "d") and before is not None and self.rnd.random() < 0.5:
            before = None if op == "u" else {c: (v if c == KEY[table] else None) for c, v in before.items()}
        self.pending.append(
            ChangeEvent(SOURCE[table], table, op, {KEY[table]: key}, before, after, position_key(1, self.pos),
                        self.pos, columns=TYPES[table])
        )  # fmt: skip

    def put(self, table: str, row: dict[str, Any]) -> None:
        old = self.rows[table].get(row[KEY[table]])
        self.rows[table][row[KEY[table]]] = row
        self.emit(table, "u" if old else "c", dict(old) if old else None, dict(row))

    def delete(self, table: str, key: int) -> None:
        old = self.rows[table].pop(key)
        self.emit(table, "d", dict(old), None)

    def commit(self) -> None:
        for source in ("psa", "erp"):
            events = [e for e in self.pending if e.source == source]
            if events:
                self.sink.apply(Batch(events=events, offsets=[Offset(source, "", max(e.position for e in events))]))
        self.pending = []

    def hours(self) -> decimal.Decimal:
        return decimal.Decimal(self.rnd.choice(["1.00", "2.50", "8.00"]))

    def seed(self, entries: int) -> None:
        for pid in range(1, 9):
            self.put("proj", {"pid": pid, "code": f"P{pid}"})
        for i in range(1, entries + 1):
            self.put("time", {"id": i, "pid": self.rnd.randint(1, 8), "hours": self.hours(),
                              "period": self.rnd.choice(["2026-01", "2026-02"]),
                              "status": "approved" if self.rnd.random() < 0.9 else "draft"})  # fmt: skip
            if self.rnd.random() < 0.9:
                self.post(i)
        self.commit()

    def post(self, ref: int | None) -> None:
        entry = self.rows["time"].get(ref) if ref is not None else None
        post_id = max(self.rows["post"], default=1000) + 1
        code = self.rows["proj"][entry["pid"]]["code"] if entry else "P1"
        self.put("post", {"post_id": post_id, "ref": ref, "hours": entry["hours"] if entry else self.hours(),
                          "period": entry["period"] if entry else "2026-01", "proj_code": code})  # fmt: skip

    def change(self, n: int) -> None:
        """`n` random changes of every kind the rules can see."""
        rnd = self.rnd
        for _ in range(n):
            kind = rnd.choice(["entry", "hours", "status", "drop", "post", "repost", "rekey", "unpost", "rename"])
            entries, posts = list(self.rows["time"]), list(self.rows["post"])
            if kind == "entry":
                i = max(entries) + 1
                self.put("time", {"id": i, "pid": rnd.randint(1, 8), "hours": self.hours(), "period": "2026-02",
                                  "status": "approved"})  # fmt: skip
            elif kind == "hours" and entries:
                self.put("time", {**self.rows["time"][rnd.choice(entries)], "hours": self.hours()})
            elif kind == "status" and entries:
                row = self.rows["time"][rnd.choice(entries)]
                self.put("time", {**row, "status": "draft" if row["status"] == "approved" else "approved"})
            elif kind == "drop" and entries:
                self.delete("time", rnd.choice(entries))
            elif kind == "post":
                self.post(rnd.choice(entries + [None]))  # a duplicate when already posted; a posting with no key
            elif kind == "repost" and posts:
                self.put("post", {**self.rows["post"][rnd.choice(posts)], "hours": self.hours()})
            elif kind == "rekey" and posts:
                self.put("post", {**self.rows["post"][rnd.choice(posts)], "ref": rnd.choice(entries + [None])})
            elif kind == "unpost" and posts:
                self.delete("post", rnd.choice(posts))
            elif kind == "rename":
                pid = rnd.randint(1, 8)
                self.put("proj", {"pid": pid, "code": f"P{pid}-{rnd.randint(0, 99)}"})
            if rnd.random() < 0.3:
                self.commit()
        self.commit()


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_runs_equal_full_runs_under_random_changes(tmp_path: Path, seed: int) -> None:
    with DuckDBSink(tmp_path / "w.duckdb") as sink:
        world = World(sink, seed)
        world.seed(400)
        engine = Engine(sink.con)
        rules = {"line": Rule.model_validate(LINE), "groups": Rule.model_validate(GROUPS)}
        for name, rule in rules.items():
            assert engine.run(f"{name}_inc", rule).mode == "full"
            engine.run(f"{name}_full", rule, full=True)
        for round_ in range(6):
            world.change(world.rnd.choice([1, 5, 40]))
            for name, rule in rules.items():
                inc = engine.run(f"{name}_inc", rule)
                full = engine.run(f"{name}_full", rule, full=True)
                assert inc.mode == "incremental", inc.full_because
                got = sink.con.execute(STATE, [f"{name}_inc"]).fetchall()
                want = sink.con.execute(STATE, [f"{name}_full"]).fetchall()
                assert got == want, (seed, round_, name, set(got) ^ set(want))
                assert inc.counts_by_type == full.counts_by_type
                assert (inc.new_breaks, inc.resolved_breaks) == (full.new_breaks, full.resolved_breaks)
        assert sum(len(sink.con.execute(STATE, [f"{n}_full"]).fetchall()) for n in rules) > 20  # something to find


def test_a_full_run_is_forced_when_the_changelog_cannot_say_what_changed(tmp_path: Path) -> None:
    with DuckDBSink(tmp_path / "w.duckdb") as sink:
        world = World(sink, 7)
        world.seed(50)
        engine = Engine(sink.con)
        rule = Rule.model_validate(LINE)
        assert engine.run("r", rule).full_because == "no earlier run to continue from"
        assert engine.run("r", rule).mode == "incremental"
        changed = Rule.model_validate({**LINE, "measures": [{**LINE["measures"][0], "abs_tol": 0.5}]})  # type: ignore[dict-item]
        assert engine.run("r", changed).full_because == "the rule changed since its last run"
        assert engine.run("r", changed, full=True).full_because == "asked for (--full)"
        sink.con.execute("CREATE TABLE main.other AS FROM replica_erp.post")
        on_other = Rule.model_validate({**LINE, "right": {"table": "main.other"}})
        engine.run("o", on_other)
        assert engine.run("o", on_other).full_because == "input main.other is not a replica table"
        # A re-snapshot replaces the table's history: the next run compares everything.
        sink.con.execute(
            "INSERT INTO cdc.changelog (source, table_name, op, key, after, applied_at) "
            "VALUES ('erp', 'post', 'r', '{\"post_id\": 1}', NULL, now())"
        )
        assert engine.run("r", changed).full_because == "replica_erp.post was re-snapshotted since the last run"

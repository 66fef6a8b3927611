"""The DuckDB sink on a real DuckDB file: replays, last write wins, dead letters, TOAST, evolution."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cdc.events import UNAVAILABLE, ChangeEvent, position_key
from cdc.sink import Batch, DataConflict, DuckDBSink, Offset

COLS = {"id": "INTEGER", "name": "VARCHAR", "amount": "DECIMAL(10,2)"}


def ev(op: str, id_: int, pos: int, name: str | None = "x", amount: str = "1.00", **extra: object) -> ChangeEvent:
    row = {"id": id_, "name": name, "amount": decimal.Decimal(amount), **extra}
    return ChangeEvent(
        source="s",
        table="t",
        op=op,
        key={"id": id_},
        before=row if op in ("u", "d") else None,
        after=None if op == "d" else row,
        position=position_key(1, pos),
        ts_ms=pos,
        columns=COLS,
    )


def batch(*events: ChangeEvent) -> Batch:
    return Batch(events=list(events), offsets=[Offset("s", "", max(e.position for e in events))])


def rows(target: Path | DuckDBSink) -> list[tuple]:
    sql = "SELECT id, name, amount FROM replica_s.t ORDER BY id"
    if isinstance(target, DuckDBSink):
        return target.con.execute(sql).fetchall()
    con = duckdb.connect(str(target), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_last_write_wins_and_replays_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with DuckDBSink(path) as sink:
        first = batch(ev("c", 1, 1, "a"), ev("c", 2, 2, "b"), ev("u", 1, 3, "a2"), ev("d", 2, 4), ev("c", 3, 5, "c"))
        stats = sink.apply(first)
        assert stats.applied == 5 and stats.duplicates == 0
        assert rows(sink) == [(1, "a2", decimal.Decimal("1.00")), (3, "c", decimal.Decimal("1.00"))]
        again = sink.apply(first)
        assert again.applied == 0 and again.duplicates == 5
        second = batch(ev("u", 3, 5, "stale"), ev("u", 3, 6, "c2"))
        partly = sink.apply(second)
        assert partly.duplicates == 1 and partly.applied == 1
        # A source resuming two batches back replays both: the older one must not move the position back.
        assert sink.apply(first).duplicates == 5
        assert sink.apply(second).duplicates == 2
    # Positions survive a reopen: a replay after restart is still recognised.
    with DuckDBSink(path) as sink:
        assert sink.apply(first).duplicates == 5
        assert sink.apply(second).duplicates == 2
        log = sink.con.execute("SELECT count(*), count(DISTINCT position) FROM cdc.changelog").fetchall()[0]
        assert log == (6, 6)
    assert rows(path) == [(1, "a2", decimal.Decimal("1.00")), (3, "c2", decimal.Decimal("1.00"))]


def test_the_changelog_holds_a_before_image_only_where_the_event_had_one(tmp_path: Path) -> None:
    """An update without a before image (PostgreSQL's default replica identity) logs none: not an image
    of NULLs, which would claim every column was NULL before."""
    without = ChangeEvent("s", "t", "u", {"id": 1}, None, {"id": 1, "name": "b", "amount": decimal.Decimal("2")},
                          position_key(1, 2), 2, columns=COLS)  # fmt: skip
    with DuckDBSink(tmp_path / "w.duckdb") as sink:
        sink.apply(batch(ev("c", 1, 1, "a"), without, ev("u", 1, 3, "c"), ev("d", 1, 4)))
        logged = sink.con.execute(
            "SELECT op, before->>'name', after->>'name' FROM cdc.changelog ORDER BY position"
        ).fetchall()
        assert logged == [("c", None, "a"), ("u", None, "b"), ("u", "c", "c"), ("d", "x", None)]
        assert sink.con.execute("SELECT count(*) FROM cdc.changelog WHERE op = 'u' AND before IS NULL").fetchall() == [
            (1,)
        ]


def test_bad_values_go_to_dead_letter_and_the_rest_applies(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with DuckDBSink(path) as sink:
        sink.apply(batch(ev("c", 1, 1)))
        bad = ChangeEvent(
            source="s",
            table="t",
            op="c",
            key={"id": 2},
            before=None,
            after={"id": 2, "name": "n", "amount": "not a number"},
            position=position_key(1, 2),
            ts_ms=2,
            columns=COLS,
        )
        stats = sink.apply(batch(bad, ev("c", 3, 3, "ok")))
        assert stats.dead_letters == 1 and stats.applied == 1
        reason, raw = sink.con.execute("SELECT reason, raw FROM cdc.dead_letter").fetchall()[0]
        assert "does not fit" in reason and "not a number" in raw
    assert [r[0] for r in rows(path)] == [1, 3]


def test_unavailable_toast_value_keeps_previous(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with DuckDBSink(path) as sink:
        sink.apply(batch(ev("c", 1, 1, "long text")))
        toast = ChangeEvent(
            source="s",
            table="t",
            op="u",
            key={"id": 1},
            before=None,
            after={"id": 1, "name": UNAVAILABLE, "amount": decimal.Decimal("9.00")},
            position=position_key(1, 2),
            ts_ms=2,
            columns=COLS,
        )
        sink.apply(batch(toast))
    assert rows(path) == [(1, "long text", decimal.Decimal("9.00"))]


def test_unchanged_toast_in_every_encoding_keeps_the_value_from_the_replica_or_the_batch(tmp_path: Path) -> None:
    """The placeholder as text, as base64 in a bytes column, as byte codes in a number array and inside a
    text array: filled from the replica's row, or from an earlier change of the same key in the batch."""
    from cdc.types import UNAVAILABLE_B64, UNAVAILABLE_CODES

    cols: dict[str, Any] = {
        "id": "INTEGER",
        "doc": "BLOB",
        "codes": "INTEGER[]",
        "tags": "VARCHAR[]",
        "note": "VARCHAR",
    }

    def change(op: str, id_: int, pos: int, **values: Any) -> ChangeEvent:
        return ChangeEvent(
            "s", "t", op, {"id": id_}, None, {"id": id_, **values}, position_key(1, pos), pos, columns=cols
        )

    full = {"doc": b"\x00\xffdata", "codes": [1, 2, 3], "tags": ["a", UNAVAILABLE + "?"], "note": "kept"}
    placeholders = {"doc": UNAVAILABLE_B64, "codes": UNAVAILABLE_CODES, "tags": [UNAVAILABLE], "note": UNAVAILABLE}
    with DuckDBSink(tmp_path / "w.duckdb") as sink:
        sink.apply(batch(change("c", 1, 1, **full)))
        sink.apply(
            batch(change("u", 1, 2, **placeholders), change("c", 2, 3, **full), change("u", 2, 4, **placeholders))
        )
        got = sink.con.execute("SELECT id, doc, codes, tags, note FROM replica_s.t ORDER BY id").fetchall()
    expected = (b"\x00\xffdata", [1, 2, 3], ["a", UNAVAILABLE + "?"], "kept")
    assert got == [(1, *expected), (2, *expected)]


@pytest.mark.parametrize("as_frames", [False, True])
def test_a_column_the_stream_adds_is_flagged_for_backfill_in_the_committed_position(
    tmp_path: Path, as_frames: bool
) -> None:
    """Rows written before a column appeared lack its values, and the log will not carry them: the
    position committed with the batch says which tables may need a re-snapshot, so a crash before
    the reader has looked resumes with it. The same for changes that came as frames."""
    from cdc.frame import EventFrame

    with DuckDBSink(tmp_path / "w.duckdb") as sink:
        sink.apply(batch(ev("c", 1, 1)))
        wider = ev("u", 1, 2, "y", extra="new")
        wider.columns = COLS | {"extra": "VARCHAR"}
        second = batch(wider)
        if as_frames:
            second.frames, second.events = [EventFrame.from_events(second.events)], []
        stats = sink.apply(second)
        assert stats.applied == 1 and stats.reshaped["t"].added == ["extra"]
        stored = sink.offset("s")
    assert stored is not None and stored["resume"] == {"resnapshot": ["t"]}


def test_new_column_evolves_table_and_reset_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with DuckDBSink(path) as sink:
        sink.apply(batch(ev("c", 1, 1)))
        wider = ev("c", 2, 2, segment="enterprise")
        wider.columns = COLS | {"segment": "VARCHAR"}
        sink.apply(batch(wider))
        got = sink.con.execute("SELECT id, segment FROM replica_s.t ORDER BY id").fetchall()
        assert got == [(1, None), (2, "enterprise")]
        snap = ChangeEvent(
            source="s",
            table="t",
            op="r",
            key={"id": 9},
            before=None,
            after={"id": 9, "name": "snap", "amount": decimal.Decimal("2.00")},
            position=position_key(0, 1),
            ts_ms=3,
            snapshot="true",
            columns=COLS,
        )
        sink.apply(Batch(events=[snap], reset_sources=["s"]))
        assert sink.con.execute("SELECT id FROM replica_s.t").fetchall() == [(9,)]


def test_failed_batch_rolls_back_everything(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with DuckDBSink(path) as sink:
        sink.apply(batch(ev("c", 1, 1)))
        broken = batch(ev("c", 2, 2))
        broken.offsets.append(Offset("s", "", None))  # type: ignore[arg-type]
        broken.offsets[0] = Offset("s", "", position_key(1, 2), resume={"bad": object()})
        with pytest.raises(TypeError):
            sink.apply(broken)
        assert sink.con.execute("SELECT count(*) FROM replica_s.t").fetchall() == [(1,)]
        assert sink.con.execute("SELECT count(*) FROM cdc.changelog").fetchall() == [(1,)]
        assert sink.apply(batch(ev("c", 2, 2))).applied == 1


def test_a_batch_the_replica_cannot_take_names_table_key_and_command_and_applies_nothing(tmp_path: Path) -> None:
    """A data conflict is told apart from a warehouse fault: it names the table, the key and the cause,
    says which command repairs it, and leaves the warehouse as it was (and usable)."""
    with DuckDBSink(tmp_path / "w.duckdb") as sink:
        sink.apply(batch(ev("c", 1, 1, name="a"), ev("c", 2, 2, name="b")))
        sink.con.execute("CREATE UNIQUE INDEX only_here ON replica_s.t (name)")  # a rule the source lacks
        with pytest.raises(DataConflict) as caught:
            sink.apply(batch(ev("u", 1, 3, name="z"), ev("c", 3, 4, name="b")))
        message = str(caught.value)
        assert "table s.t" in message and '"name: b"' in message and "unique" in message, message
        assert "coexist cdc resnapshot t --source s" in message and "disk" not in message, message
        assert rows(sink) == [(1, "a", decimal.Decimal("1.00")), (2, "b", decimal.Decimal("1.00"))]
        assert sink.offset("s")["position"] == position_key(1, 2)  # type: ignore[index]
        assert sink.apply(batch(ev("c", 3, 5, name="c"))).applied == 1


def test_status_is_published_for_readers_while_the_sink_holds_the_warehouse(tmp_path: Path) -> None:
    from cdc.sink import status_path

    path = tmp_path / "w.duckdb"
    with DuckDBSink(path) as sink:
        sink.apply(batch(ev("c", 1, 1, "a"), ev("c", 2, 2, "b")))
        sink.publish_status(force=True)
        status = duckdb.connect(str(status_path(path)), read_only=True)
        try:
            assert status.execute("SELECT events FROM cdc.table_stats").fetchall() == [(2,)]
            assert status.execute("SELECT position FROM cdc.offsets").fetchall() == [(position_key(1, 2),)]
        finally:
            status.close()


def test_a_held_transaction_applies_as_if_it_had_come_in_one_batch(tmp_path: Path) -> None:
    """Changes held across batches (`cdc.held`) and released set-based leave the same replica, changelog,
    dead letters and counts as the same changes applied at once: several tables, a schema change in
    the middle of the transaction, a column decoded in Python, a keyless table, an unchanged-TOAST
    value, a value that does not fit."""
    import base64
    import json

    from cdc.events import field_type

    money = field_type(
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "parameters": {"scale": "2", "connect.decimal.precision": "10"},
            "field": "price",
        }
    )
    t_cols: dict[str, object] = dict(COLS)
    t_cols_wider: dict[str, object] = {**COLS, "note": "VARCHAR"}
    p_cols: dict[str, object] = {"sku": "VARCHAR", "price": money}
    k_cols: dict[str, object] = {"a": "INTEGER", "b": "VARCHAR"}

    def change(
        table: str, cols: dict, op: str, key: dict, before: dict | None, after: dict | None, pos: int
    ) -> ChangeEvent:
        return ChangeEvent(
            "s",
            table,
            op,
            key,
            before,
            after,
            position_key(1, pos),
            pos,
            transaction={"id": "771:12345"},
            columns=cols,  # type: ignore[arg-type]
        )

    def cents(n: int) -> str:
        return base64.b64encode(n.to_bytes(4, "big", signed=True)).decode()

    events = [
        change("t", t_cols, "c", {"id": 1}, None, {"id": 1, "name": "a", "amount": "1.50"}, 1),
        change("p", p_cols, "c", {"sku": "X"}, None, {"sku": "X", "price": cents(1999)}, 2),
        change("k", k_cols, "c", {}, None, {"a": 1, "b": "one"}, 3),
        change("t", t_cols, "c", {"id": 2}, None, {"id": 2, "name": "b", "amount": "2.00"}, 4),
        change("t", t_cols, "c", {"id": 3}, None, {"id": 3, "name": "c", "amount": "not a number"}, 5),
        change("k", k_cols, "c", {}, None, {"a": 2, "b": "two"}, 6),
        change(
            "t",
            t_cols,
            "u",
            {"id": 1},
            {"id": 1, "name": "a", "amount": "1.50"},
            {"id": 1, "name": UNAVAILABLE, "amount": "1.75"},
            7,
        ),
        change("p", p_cols, "u", {"sku": "X"}, None, {"sku": "X", "price": cents(-5)}, 8),
        change("t", t_cols_wider, "c", {"id": 4}, None, {"id": 4, "name": "d", "amount": "4.00", "note": "n"}, 9),
        change("k", k_cols, "d", {}, {"a": 1, "b": "one"}, None, 10),
        change("t", t_cols_wider, "d", {"id": 2}, {"id": 2, "name": "b", "amount": "2.00", "note": None}, None, 11),
        change("t", t_cols_wider, "u", {"id": 1}, None, {"id": 1, "name": "a3", "amount": "1.80", "note": "m"}, 12),
    ]

    def image(text: str | None) -> dict | None:
        """A logged image without its null columns: applied at once, the changes before the schema
        change are logged under the wider schema (`"note": null`); released in order, under their own."""
        return None if text is None else {k: v for k, v in json.loads(text).items() if v is not None}

    def state(sink: DuckDBSink) -> dict[str, list[tuple]]:
        con = sink.con
        log = con.execute(
            "SELECT table_name, op, key, CAST(before AS VARCHAR), CAST(after AS VARCHAR), position "
            "FROM cdc.changelog ORDER BY position"
        ).fetchall()
        return {
            "t": con.execute("SELECT id, name, amount, note FROM replica_s.t ORDER BY id").fetchall(),
            "p": con.execute("SELECT sku, price FROM replica_s.p ORDER BY sku").fetchall(),
            "k": con.execute("SELECT a, b FROM replica_s.k ORDER BY a").fetchall(),
            "log": [(t, op, key, image(b), image(a), pos) for t, op, key, b, a, pos in log],
            "dead": con.execute("SELECT table_name, position FROM cdc.dead_letter ORDER BY position").fetchall(),
            "stats": con.execute("SELECT table_name, events, dead_letters FROM cdc.table_stats ORDER BY 1").fetchall(),
            "held": con.execute("SELECT count(*) FROM cdc.held").fetchall(),
        }

    with DuckDBSink(tmp_path / "at_once.duckdb") as sink:
        sink.apply(Batch(events=events, offsets=[Offset("s", "", events[-1].position)]))
        at_once = state(sink)
    with DuckDBSink(tmp_path / "held.duckdb") as sink:
        sink.apply(Batch(held=events[:5], offsets=[Offset("s", "", events[4].position)]))
        sink.apply(Batch(held=events[5:10], offsets=[Offset("s", "", events[9].position)]))
        assert sink.con.execute("SELECT count(*) FROM cdc.changelog").fetchall() == [(0,)]  # nothing visible yet
        stats = sink.apply(Batch(events=events[10:], release=["771"], offsets=[Offset("s", "", events[-1].position)]))
        held = state(sink)
    assert stats.applied == len(events) - 1 and stats.dead_letters == 1
    assert held == at_once
    assert at_once["t"] == [
        (1, "a3", decimal.Decimal("1.80"), "m"),
        (4, "d", decimal.Decimal("4.00"), "n"),
    ]
    assert at_once["p"] == [("X", decimal.Decimal("-0.05"))]
    assert at_once["k"] == [(2, "two")]
    assert at_once["dead"] == [("t", position_key(1, 5))] and at_once["held"] == [(0,)]

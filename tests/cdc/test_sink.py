"""The DuckDB sink on a real DuckDB file: replays, last write wins, dead letters, TOAST, evolution."""

from __future__ import annotations

import decimal
from pathlib import Path

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

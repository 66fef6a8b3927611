"""Alert thresholds: levels raise once and clear once; events raise every time; 0 switches off."""

from __future__ import annotations

import duckdb

from coexist.config import AlertSettings
from coexist.service.alerts import Alerts, record


def test_levels_raise_once_and_clear_events_raise_each_time() -> None:
    alerts = Alerts(AlertSettings(lag_seconds=5, new_breaks=3, dead_letters=0))
    seen = [alerts.observe("lag_seconds", "psa", v, "lag") for v in (1, 6, 9, 4, 7)]
    assert [a.state if a else None for a in seen] == [None, "raised", None, "cleared", "raised"]
    events = [alerts.observe("new_breaks", "time", v, "new") for v in (2, 3, 5, 0)]
    assert [a.state if a else None for a in events] == [None, "raised", "raised", None]
    assert alerts.observe("dead_letters", "erp", 1000, "dead") is None
    assert alerts.raised_total == {"lag_seconds": 2, "new_breaks": 2}


def test_alerts_are_recorded_in_ops_alerts() -> None:
    alerts = Alerts(AlertSettings(failed_postings=2))
    found = [
        alerts.observe("failed_postings", "time", 4, "unposted"),
        alerts.observe("failed_postings", "time", 0, "x"),
    ]
    con = duckdb.connect()
    record(con, [a for a in found if a is not None])
    rows = con.execute("SELECT kind, subject, state, value, threshold FROM ops.alerts ORDER BY state DESC").fetchall()
    assert rows == [("failed_postings", "time", "raised", 4.0, 2.0), ("failed_postings", "time", "cleared", 0.0, 2.0)]

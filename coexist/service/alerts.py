"""Alerts: a threshold from the configuration crossed, written to the log and to `ops.alerts`.

Two kinds of signal. Levels (capture lag, unposted time) raise once when they cross the
threshold and clear once when they fall back; events (new dead letters, new breaks in a run)
raise every time they reach it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import duckdb

from coexist.config import AlertSettings

log = logging.getLogger("coexist.alerts")

ALERTS_DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.alerts (
    raised_at TIMESTAMPTZ, kind VARCHAR, subject VARCHAR, state VARCHAR, value DOUBLE, threshold DOUBLE,
    message VARCHAR
);
"""

LEVELS = {"lag_seconds", "failed_postings"}


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str
    state: str  # raised | cleared
    value: float
    threshold: float
    message: str


class Alerts:
    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self.active: set[tuple[str, str]] = set()
        self.raised_total: dict[str, int] = {}

    def threshold(self, kind: str) -> float:
        return float(getattr(self.settings, kind))

    def observe(self, kind: str, subject: str, value: float, what: str) -> Alert | None:
        """Compare one observation with its threshold; returns the alert to record, if any."""
        limit = self.threshold(kind)
        if limit <= 0:
            return None
        crossed = value > limit if kind == "lag_seconds" else value >= limit
        key = (kind, subject)
        if kind in LEVELS:
            if crossed and key not in self.active:
                self.active.add(key)
                return self._alert(kind, subject, "raised", value, limit, f"{what}: {value:g} (threshold {limit:g})")
            if not crossed and key in self.active:
                self.active.discard(key)
                return Alert(kind, subject, "cleared", value, limit, f"{what} back to {value:g}")
            return None
        if crossed:
            return self._alert(kind, subject, "raised", value, limit, f"{what}: {value:g} (threshold {limit:g})")
        return None

    def _alert(self, kind: str, subject: str, state: str, value: float, limit: float, message: str) -> Alert:
        self.raised_total[kind] = self.raised_total.get(kind, 0) + 1
        return Alert(kind, subject, state, value, limit, message)


def record(con: duckdb.DuckDBPyConnection, alerts: list[Alert]) -> None:
    """Log each alert and append it to ops.alerts (one statement)."""
    if not alerts:
        return
    now = dt.datetime.now(dt.UTC)
    for a in alerts:
        level = logging.WARNING if a.state == "raised" else logging.INFO
        log.log(
            level,
            "alert %s %s: %s",
            a.state,
            a.kind,
            a.message,
            extra={"alert": a.kind, "subject": a.subject, "state": a.state, "value": a.value, "threshold": a.threshold},
        )
    con.execute(ALERTS_DDL)
    con.executemany(
        "INSERT INTO ops.alerts VALUES (?, ?, ?, ?, ?, ?, ?)",
        [[now, a.kind, a.subject, a.state, a.value, a.threshold, a.message] for a in alerts],
    )

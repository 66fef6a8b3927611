"""Notifications: new breaks above a threshold, breaks assigned to someone, and alerts, sent through
apprise to the routes of `[[web.notify]]` and listed in `work.notifications` (sent or not, and why)."""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import apprise

from coexist.config import NotifyRoute
from core.warehouse import Connection, records

log = logging.getLogger("coexist.notify")

NOTIFY_DDL = """
CREATE SCHEMA IF NOT EXISTS work;
CREATE TABLE IF NOT EXISTS work.notifications (
    sent_at TIMESTAMPTZ, event VARCHAR, subject VARCHAR, title VARCHAR, body VARCHAR, route VARCHAR,
    delivered BOOLEAN, error VARCHAR
);
"""


def ensure(con: Connection) -> None:
    con.execute(NOTIFY_DDL)


def _deliver(route: NotifyRoute, title: str, body: str) -> str | None:
    """None when apprise delivered it; else why not (never the URL: it holds credentials)."""
    urls = os.environ.get(route.url_env, "").split()
    if not urls:
        return f"environment variable {route.url_env} is not set"
    sender = apprise.Apprise()
    if not all(sender.add(url) for url in urls):
        return f"{route.url_env} holds a URL apprise does not understand"
    return None if sender.notify(title=title, body=body) else "delivery failed (see the service log)"


def send(
    con: Connection,
    routes: list[NotifyRoute],
    event: str,
    subject: str,
    title: str,
    body: str,
    amount: float | None = None,
) -> int:
    """Send to every route that takes `event` (and, for new breaks, `amount` at least its minimum);
    returns how many routes it went to. A failed delivery is recorded, never raised."""
    chosen = [
        r for r in routes if event in r.events and (event != "new_break" or amount is None or amount >= r.min_amount)
    ]
    if not chosen:
        return 0
    ensure(con)
    rows: list[list[Any]] = []
    for route in chosen:
        error = _deliver(route, title, body)
        if error:
            log.warning("notification %s to %s not sent: %s", event, route.url_env, error)
        rows.append([dt.datetime.now(dt.UTC), event, subject, title, body, route.url_env, error is None, error])
    con.executemany("INSERT INTO work.notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(chosen)


def new_breaks(con: Connection, routes: list[NotifyRoute], recon: str, run_id: str) -> int:
    """One message per route for the breaks a run found first, those at or above the route's amount."""
    sent = 0
    for route in routes:
        if "new_break" not in route.events:
            continue
        found = con.execute(
            "SELECT break_type, key, project, delta FROM recon.break_state WHERE recon = ? AND first_seen_run = ? "
            "AND status = 'open' AND (? = 0 OR abs(coalesce(delta, 0)) >= ?) ORDER BY abs(delta) DESC NULLS LAST",
            [recon, run_id, route.min_amount, route.min_amount],
        ).fetchall()
        if not found:
            continue
        lines = [f"{t} {k} ({p or '-'}): {d if d is not None else '-'}" for t, k, p, d in found[:20]]
        more = f"\n... and {len(found) - 20:,} more" if len(found) > 20 else ""
        sent += send(
            con,
            [route],
            "new_break",
            f"{recon}:{run_id}",
            f"coexist: {len(found):,} new {recon} breaks",
            "\n".join(lines) + more,
        )
    return sent


def recent(con: Connection, limit: int = 50) -> list[dict[str, Any]]:
    ensure(con)
    cur = con.execute(
        "SELECT sent_at, event, subject, title, route, delivered, error FROM work.notifications "
        "ORDER BY sent_at DESC LIMIT ?",
        [limit],
    )
    return records(cur)

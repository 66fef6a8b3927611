"""A random live workload on both sandbox databases: what the firm does all day.

Each step is one source transaction: inserts, updates and deletes across several tables,
multi-row transactions, rollbacks, and (once, when asked) an added column. Used by the CDC
crash tests, the benchmarks and the demo.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pymysql

from coexist.sandbox.servers import SandboxState, my_app_connect, pg_app_connect


@dataclass
class WorkloadStats:
    transactions: int = 0
    rollbacks: int = 0
    rows: int = 0
    ddl: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PsaWorkload:
    def __init__(self, state: SandboxState, seed: int) -> None:
        self.conn = pg_app_connect(state, autocommit=False)
        self.rng = random.Random(seed)
        row = self.conn.execute("SELECT coalesce(max(entry_id), 0) FROM time_entries").fetchone()
        self.next_id = int(row[0] if row else 0) + 1_000_000 + seed * 10_000_000
        self.projects = [r[0] for r in self.conn.execute("SELECT project_id FROM projects").fetchall()]
        self.resources = [r[0] for r in self.conn.execute("SELECT resource_id FROM resources").fetchall()]
        self.clients = [r[0] for r in self.conn.execute("SELECT client_id FROM clients").fetchall()]
        self.conn.commit()
        self.added_column = False

    def step(self, stats: WorkloadStats, allow_ddl: bool = False) -> None:
        rng, conn = self.rng, self.conn
        roll = rng.random()
        try:
            if allow_ddl and not self.added_column:
                conn.execute("ALTER TABLE clients ADD COLUMN IF NOT EXISTS segment text")
                conn.execute("UPDATE clients SET segment = 'enterprise' WHERE client_id % 3 = 0")
                conn.commit()
                self.added_column = True
                stats.ddl.append("psa.clients.segment")
                return
            n = rng.randint(1, 6)
            for _ in range(n):
                kind = rng.random()
                if kind < 0.45:
                    self.next_id += 1
                    hours = rng.choice([1, 2, 4, 7.5, 8])
                    conn.execute(
                        "INSERT INTO time_entries (entry_id, resource_id, project_id, work_date, hours, bill_rate, "
                        "cost_rate, amount, cost_amount, currency, billable, status) VALUES "
                        "(%s, %s, %s, current_date - %s, %s, 150, 80, %s, %s, 'USD', true, 'submitted')",
                        (
                            self.next_id,
                            rng.choice(self.resources),
                            rng.choice(self.projects),
                            rng.randint(0, 20),
                            hours,
                            hours * 150,
                            hours * 80,
                        ),
                    )
                elif kind < 0.75:
                    conn.execute(
                        "UPDATE time_entries SET status = 'approved', approved_at = now(), hours = hours + %s, "
                        "updated_at = now() WHERE entry_id = (SELECT entry_id FROM time_entries "
                        "WHERE status <> 'approved' ORDER BY random() LIMIT 1)",
                        (rng.choice([0, 0.5]),),
                    )
                elif kind < 0.85:
                    conn.execute(
                        "DELETE FROM time_entries WHERE entry_id = (SELECT entry_id FROM time_entries "
                        "WHERE invoice_id IS NULL ORDER BY random() LIMIT 1)"
                    )
                elif kind < 0.95:
                    conn.execute(
                        "UPDATE clients SET client_name = client_name || %s, updated_at = now() WHERE client_id = %s",
                        (rng.choice([" ", ".", " Ltd"]), rng.choice(self.clients)),
                    )
                else:
                    conn.execute(
                        "UPDATE invoices SET status = 'paid', updated_at = now() WHERE invoice_id IN "
                        "(SELECT invoice_id FROM invoices WHERE status = 'sent' ORDER BY random() LIMIT 3)"
                    )
                stats.rows += 1
            if roll < 0.08:
                conn.rollback()
                stats.rollbacks += 1
            else:
                conn.commit()
                stats.transactions += 1
        except psycopg.Error as exc:
            conn.rollback()
            stats.errors.append(str(exc).splitlines()[0])

    def close(self) -> None:
        self.conn.close()


class ErpWorkload:
    def __init__(self, state: SandboxState, seed: int) -> None:
        self.conn = my_app_connect(state, autocommit=False)
        self.rng = random.Random(seed + 1)
        with self.conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(posting_id), 0) FROM labor_postings")
            row = cur.fetchone()
            self.next_id = int(row[0] if row else 0) + 1_000_000 + seed * 10_000_000
            cur.execute("SELECT proj_no FROM projects")
            self.projects = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT emp_no FROM employees")
            self.employees = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT cust_no FROM customers")
            self.customers = [r[0] for r in cur.fetchall()]
        self.conn.commit()
        self.added_column = False

    def step(self, stats: WorkloadStats, allow_ddl: bool = False) -> None:
        rng, conn = self.rng, self.conn
        try:
            with conn.cursor() as cur:
                if allow_ddl and not self.added_column:
                    cur.execute("ALTER TABLE customers ADD COLUMN credit_limit DECIMAL(12,2) NULL")
                    cur.execute("UPDATE customers SET credit_limit = 50000 WHERE cust_no LIKE '%1'")
                    conn.commit()
                    self.added_column = True
                    stats.ddl.append("erp.customers.credit_limit")
                    return
                for _ in range(rng.randint(1, 6)):
                    kind = rng.random()
                    if kind < 0.45:
                        self.next_id += 1
                        hours = rng.choice([1, 2, 4, 8])
                        cur.execute(
                            "INSERT INTO labor_postings (posting_id, psa_entry_ref, proj_no, emp_no, company_code, "
                            "work_date, fiscal_period, hours, rate, amount, cost_amount, currency, posted_at) VALUES "
                            "(%s, NULL, %s, %s, '1000', CURDATE(), DATE_FORMAT(CURDATE(), '%%Y-%%m'), %s, 150, %s, "
                            "%s, 'USD', NOW(6))",
                            (
                                self.next_id,
                                rng.choice(self.projects),
                                rng.choice(self.employees),
                                hours,
                                hours * 150,
                                hours * 80,
                            ),
                        )
                    elif kind < 0.7:
                        cur.execute(
                            "UPDATE labor_postings SET hours = hours + 1, amount = amount + 150 "
                            "WHERE posting_id = (SELECT posting_id FROM (SELECT posting_id FROM labor_postings "
                            "ORDER BY RAND() LIMIT 1) AS x)"
                        )
                    elif kind < 0.82:
                        cur.execute(
                            "DELETE FROM labor_postings WHERE posting_id = (SELECT posting_id FROM "
                            "(SELECT posting_id FROM labor_postings ORDER BY RAND() LIMIT 1) AS x)"
                        )
                    elif kind < 0.95:
                        cur.execute(
                            "UPDATE customers SET name = CONCAT(name, %s) WHERE cust_no = %s",
                            (rng.choice([" ", "."]), rng.choice(self.customers)),
                        )
                    else:
                        cur.execute(
                            "UPDATE ar_invoices SET status = 'paid' WHERE invoice_no IN (SELECT invoice_no "
                            "FROM (SELECT invoice_no FROM ar_invoices WHERE status = 'open' ORDER BY RAND() "
                            "LIMIT 2) AS x)"
                        )
                    stats.rows += 1
            if rng.random() < 0.08:
                conn.rollback()
                stats.rollbacks += 1
            else:
                conn.commit()
                stats.transactions += 1
        except pymysql.Error as exc:
            conn.rollback()
            stats.errors.append(str(exc))

    def close(self) -> None:
        self.conn.close()


def run(
    state: SandboxState,
    stop: threading.Event,
    tx_per_second: float = 20.0,
    seed: int = 1,
    ddl_after: float | None = None,
) -> dict[str, WorkloadStats]:
    """Both workloads until `stop`; returns their stats. `ddl_after` seconds in, each adds a column."""
    stats = {"psa": WorkloadStats(), "erp": WorkloadStats()}
    workers: list[Any] = [PsaWorkload(state, seed), ErpWorkload(state, seed)]
    started = time.monotonic()
    try:
        while not stop.is_set():
            ddl = ddl_after is not None and time.monotonic() - started >= ddl_after
            for name, worker in zip(("psa", "erp"), workers, strict=True):
                worker.step(stats[name], allow_ddl=ddl)
            stop.wait(2.0 / tx_per_second)
    finally:
        for worker in workers:
            worker.close()
    return stats

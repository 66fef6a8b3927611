"""Local users of the workbench: a name, a role and an argon2 password hash.

Users live in their own small SQLite file (`<data_dir>/users.sqlite`, readable by its owner
only), not in the warehouse: an administrator can add one while the service holds the warehouse,
and the hashes are never in the analyst snapshot or an export. Changes to users are logged in
the same file (`user_changes`, append-only). Roles are ordered: each can do what those before it can.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import UsageError

ROLES = ("viewer", "operator", "approver", "admin")
"""viewer reads; operator works breaks and reviews; approver also accepts large breaks; admin also sees users."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS user_changes (at TEXT, actor TEXT, action TEXT, name TEXT, before TEXT, after TEXT);
"""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 10
_hasher = PasswordHasher()
_dummy_hash = _hasher.hash("not the password of anyone")


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


class Users:
    """The user file; every call opens it briefly, so several processes can share it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        con = sqlite3.connect(self.path, timeout=10)
        try:
            if fresh:
                os.chmod(self.path, 0o600)
            con.executescript(SCHEMA)
            with con:
                yield con
        finally:
            con.close()

    def _log(self, con: sqlite3.Connection, actor: str, action: str, name: str, before: str, after: str) -> None:
        con.execute(
            "INSERT INTO user_changes VALUES (?, ?, ?, ?, ?, ?)",
            [dt.datetime.now(dt.UTC).isoformat(), actor, action, name, before, after],
        )

    def add(self, name: str, role: str, password: str, actor: str) -> None:
        if not NAME.fullmatch(name):
            raise UsageError(f"user name {name!r}: letters, digits and . _ @ - only, at most 64")
        _check_role(role)
        _check_password(password)
        with self._db() as con:
            if con.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
                raise UsageError(f"user {name!r} exists (`coexist users set-role` or `set-password`)")
            con.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, 0)",
                [name, role, _hasher.hash(password), dt.datetime.now(dt.UTC).isoformat()],
            )
            self._log(con, actor, "add", name, "", f"role={role}")

    def _update(self, name: str, actor: str, action: str, column: str, value: object, shown: str) -> None:
        with self._db() as con:
            row = con.execute("SELECT role, disabled FROM users WHERE name = ?", [name]).fetchone()
            if row is None:
                raise UsageError(f"no user {name!r} (`coexist users list`)")
            con.execute(f"UPDATE users SET {column} = ? WHERE name = ?", [value, name])
            self._log(con, actor, action, name, f"role={row[0]} disabled={bool(row[1])}", shown)

    def set_role(self, name: str, role: str, actor: str) -> None:
        _check_role(role)
        self._update(name, actor, "set-role", "role", role, f"role={role}")

    def set_password(self, name: str, password: str, actor: str) -> None:
        _check_password(password)
        self._update(name, actor, "set-password", "password_hash", _hasher.hash(password), "password changed")

    def disable(self, name: str, actor: str, disabled: bool = True) -> None:
        self._update(
            name, actor, "disable" if disabled else "enable", "disabled", int(disabled), f"disabled={disabled}"
        )

    def listing(self) -> list[dict[str, object]]:
        with self._db() as con:
            rows = con.execute("SELECT name, role, created_at, disabled FROM users ORDER BY name").fetchall()
        return [{"name": n, "role": r, "created_at": c, "disabled": bool(d)} for n, r, c, d in rows]

    def changes(self, limit: int = 200) -> list[dict[str, object]]:
        with self._db() as con:
            rows = con.execute(
                "SELECT at, actor, action, name, before, after FROM user_changes ORDER BY at DESC LIMIT ?", [limit]
            ).fetchall()
        return [dict(zip(("at", "actor", "action", "name", "before", "after"), r, strict=True)) for r in rows]

    def verify(self, name: str, password: str) -> User | None:
        """The user when the password is theirs and they are enabled; as much work is done either way."""
        with self._db() as con:
            row = con.execute(
                "SELECT role, password_hash FROM users WHERE name = ? AND disabled = 0", [name]
            ).fetchone()
        try:
            _hasher.verify(row[1] if row else _dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return User(name, row[0]) if row else None

    def role_of(self, name: str) -> str | None:
        """The current role of an enabled user: a session re-reads it, so a demotion applies at once."""
        with self._db() as con:
            row = con.execute("SELECT role FROM users WHERE name = ? AND disabled = 0", [name]).fetchone()
        return str(row[0]) if row else None


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password needs at least {MIN_PASSWORD} characters")

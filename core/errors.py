"""One error root for the project, in two kinds: transient (trying again may help) and terminal.

The CLI prints any `CoexistError` as one line and exits with its `exit_code`; everything the
user can cause (configuration, input, a busy or damaged warehouse, an unreachable source)
is raised as one of these, never as a bare library exception.
"""

from __future__ import annotations


class CoexistError(Exception):
    """Something the user can act on; the message says what happened and what to do."""

    exit_code = 2


class TransientError(CoexistError):
    """Trying again later may succeed: a source restarting, a warehouse held by another process."""


class TerminalError(CoexistError):
    """Trying again will fail the same way until someone acts."""


class ConfigError(TerminalError):
    """A configuration problem, phrased for the person who wrote the file, naming the key."""


class UsageError(TerminalError):
    """A command was asked for something that cannot be done (unknown name, bad argument)."""


class NotReady(TerminalError):
    """What the command reads does not exist yet (no warehouse, no run); the message says what creates it."""


class WarehouseBusy(TransientError):
    """Another process holds the warehouse (DuckDB has one writer per file)."""


class WarehouseError(TerminalError):
    """The warehouse could not be read or written (disk full, damaged file); nothing was half-applied."""


class SourceUnavailable(TransientError):
    """A source database or broker cannot be reached right now."""


class SourceRefused(TerminalError):
    """A source answered but refused us (authentication, permissions): retrying will not help."""


class CompareFailed(TerminalError):
    """A comparison could not be made (as opposed to: it was made and found differences)."""

    exit_code = 3


class Incomplete(TerminalError):
    """The work ran, but part of it could not be done (rows dead-lettered); nothing was half-applied."""

    exit_code = 1


class GateFailed(TerminalError):
    """The work ran and found what the caller asked to be stopped by (`reconcile run --fail-on`)."""

    exit_code = 1


class Forbidden(TerminalError):
    """The person acting may not do this (their role is too low for it)."""

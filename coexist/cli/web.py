"""`coexist web` (the workbench without the service) and `coexist users` (who may sign in to it)."""

from __future__ import annotations

import os
import signal
import threading
from typing import Annotated

import typer

from coexist.cli.common import cli_actor, settings, write_warehouse
from coexist.cli.output import JsonOpt, Output, err_console
from coexist.web.users import Users
from core.errors import UsageError

users_app = typer.Typer(help="Users of the workbench: names, roles, passwords.", no_args_is_help=True)


def web(
    host: Annotated[str | None, typer.Option(help="address to listen on (loopback unless TLS is set)")] = None,
    port: Annotated[int | None, typer.Option(help="port (0 = any free port)")] = None,
) -> None:
    """Serve the exception workbench on the warehouse, without capture or jobs (`coexist run` serves it too).

    Holds the warehouse as its writer while it runs. Stops on Ctrl-C or SIGTERM.

    Example: coexist users add alice --role operator && coexist web --port 8470
    """
    from coexist.web.app import Database, create_app
    from coexist.web.server import WebServer

    cfg = settings()
    if host is not None or port is not None:
        cfg.web = cfg.web.model_validate(
            cfg.web.model_dump() | ({"host": host} if host else {}) | ({"port": port} if port is not None else {})
        )
    if not cfg.users_path.exists():
        err_console.print(f"no users yet: add one first with `coexist users add NAME --role admin` ({cfg.users_path})")
    con = write_warehouse()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = WebServer(create_app(cfg, Database(con)), cfg.web)
        server.start()
        err_console.print(f"the workbench is at {server.url}/ (Ctrl-C stops it)")
        stop.wait()
        server.stop()
    finally:
        con.close()


def _password(env: str | None) -> str:
    if env:
        value = os.environ.get(env)
        if not value:
            raise UsageError(f"--password-env {env}: the variable is not set")
        return value
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


def _users() -> Users:
    return Users(settings().users_path)


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="sign-in name")],
    role: Annotated[str, typer.Option(help="viewer | operator | approver | admin")] = "viewer",
    password_env: Annotated[str | None, typer.Option(help="read the password from this variable (else prompt)")] = None,
) -> None:
    """Add a user who may sign in to the workbench (password hashed with argon2).

    Example: coexist users add alice --role approver
    """
    _users().add(name, role, _password(password_env), cli_actor())
    err_console.print(f"added {name} ({role})")


@users_app.command("set-role")
def set_role(
    name: Annotated[str, typer.Argument(help="sign-in name")],
    role: Annotated[str, typer.Argument(help="viewer | operator | approver | admin")],
) -> None:
    """Change a user's role (open sessions take it at their next request).

    Example: coexist users set-role alice operator
    """
    _users().set_role(name, role, cli_actor())


@users_app.command("set-password")
def set_password(
    name: Annotated[str, typer.Argument(help="sign-in name")],
    password_env: Annotated[str | None, typer.Option(help="read the password from this variable (else prompt)")] = None,
) -> None:
    """Set a new password for a user.

    Example: coexist users set-password alice
    """
    _users().set_password(name, _password(password_env), cli_actor())


@users_app.command("disable")
def disable(
    name: Annotated[str, typer.Argument(help="sign-in name")],
    enable: Annotated[bool, typer.Option("--enable", help="enable the user again")] = False,
) -> None:
    """Stop a user from signing in (their open sessions end at the next request); `--enable` undoes it.

    Example: coexist users disable bob
    """
    _users().disable(name, cli_actor(), disabled=not enable)


@users_app.command("list")
def listing(as_json: JsonOpt = False) -> None:
    """The users and their roles (never their password hashes).

    Example: coexist users list --json
    """
    Output(as_json).rows(_users().listing(), ["name", "role", "created_at", "disabled"], title="users")

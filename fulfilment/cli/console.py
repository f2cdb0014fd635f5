"""`fulfil console` (the operators' web console) and `fulfil console hash-password`.

The console needs DATABASE_URL, BROKER_URL and its own CONSOLE_* variables (a session secret
and at least one user); the partner's variables are optional (without them it cannot record an
order found at the partner).  It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Annotated, Optional

import typer

from fulfilment.cli.common import EXIT_USAGE, app, fail

console = typer.Typer(help="The operators' web console: `fulfil console` serves it; `fulfil console hash-password` "
                           "makes a password hash for CONSOLE_USERS.", invoke_without_command=True)
app.add_typer(console, name="console")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@console.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default CONSOLE_HOST, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535,
                                                help="Port (default CONSOLE_PORT, 8090).")] = None,
) -> None:
    """Serve the web console until SIGTERM/SIGINT.  Refuses to start without users (exit 2)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from fulfilment import logging_setup
    from fulfilment.console.app import create_app
    from fulfilment.console.auth import describe_users
    from fulfilment.console.config import config_from_environment

    config = config_from_environment()  # SettingsError: one line per bad variable, exit 2 (FulfilGroup)
    logging_setup.configure(config.policy.log_level)
    bind_host = host or config.settings.console_host
    bind_port = port or config.settings.console_port
    if not _loopback(bind_host):
        typer.secho(f"console: listening on {bind_host}, not loopback: serve it behind TLS (and set "
                    "CONSOLE_SECURE_COOKIES=true)", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"console: http://{bind_host}:{bind_port}/ for {describe_users(config.users.values())}"
               + ("" if config.partner else "; no partner settings: recording a found order is off"), err=True)
    uvicorn.run(create_app(config), host=bind_host, port=bind_port, log_config=None, access_log=False,
                proxy_headers=False, server_header=False, date_header=True, lifespan="off")


@console.command("hash-password")
def hash_password(
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the password from the first line of stdin.")] = False,
    user: Annotated[Optional[str], typer.Option(help="Print a whole CONSOLE_USERS entry for this user name.")] = None,
    role: Annotated[str, typer.Option(help="With --user: viewer or operator.")] = "viewer",
) -> None:
    """Print a scrypt hash of a password (asked twice, not echoed), for CONSOLE_USERS or CONSOLE_USERS_FILE."""
    from fulfilment.console.auth import USER_NAME, Role
    from fulfilment.console.auth import hash_password as make_hash

    if user is not None and not USER_NAME.match(user):
        fail("--user: a user name is 1-64 letters, digits, . _ @ -", EXIT_USAGE)
    if role not in {r.value for r in Role}:
        fail("--role: viewer or operator", EXIT_USAGE)
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        fail("the password must have at least 8 characters", EXIT_USAGE)
    hashed = make_hash(password)
    typer.echo(f"{user}:{role}:{hashed}" if user else hashed)

"""What every `fulfil` command shares: the app, exit codes, settings loading, error exits, formatting.

Failing politely: an expected failure (a setting missing or malformed, the database or the
broker unreachable, the partner unreachable) ends the command with one line on stderr that
names the variable, or the dependency and its host:port (never a password), and an exit code
that tells the cases apart.  Only a bug prints a traceback.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from typer.core import TyperGroup

from fulfilment.dependencies import DependencyUnavailable, broker_unavailable, database_unavailable, location
from fulfilment.settings import (
    BrokerSettings,
    ConsoleSettings,
    DatabaseSettings,
    PartnerSettings,
    PolicySettings,
    Settings,
    SettingsError,
    get_broker_settings,
    get_console_settings,
    get_database_settings,
    get_partner_settings,
    get_policy_settings,
    get_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Exit codes, the same for every command (`fulfil --help` lists them).
EXIT_OK = 0
EXIT_NOT_FOUND = 1  # no such purchase / dead message / rejection, or nothing to do (e.g. already finished)
EXIT_USAGE = 2  # bad option or argument, or a setting missing or malformed (click uses 2 for usage errors too)
EXIT_UNAVAILABLE = 3  # the database, the broker or the partner API could not be reached; `health`: a check failed
EXIT_REFUSED = 4  # the purchase's state does not allow the action (e.g. cancel while an order may be in flight)

EXIT_CODES_HELP = (
    "Exit codes: 0 done; "
    "1 not found, or nothing to do; "
    "2 usage or configuration error (the message names each bad variable); "
    "3 a dependency is unreachable (database, broker or partner API, named with its host:port), "
    "or a `health` check failed; "
    "4 refused: the purchase's state does not allow the action."
)


class FulfilGroup(TyperGroup):
    """The root command: turns expected failures into one line on stderr and their exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer._click.Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, and usage errors (TyperException)
            raise
        except SettingsError as error:
            fail(str(error), EXIT_USAGE)
        except DependencyUnavailable as error:
            fail(str(error), EXIT_UNAVAILABLE)
        except Exception as error:
            if type(error).__name__ == "CommandError" and type(error).__module__.startswith("alembic"):
                fail(f"migrations: {error}", EXIT_USAGE)  # e.g. an unknown revision
            if type(error).__name__ == "QueueMismatch":  # fulfilment/rabbitmq/broker.py: names the command
                fail(str(error), EXIT_USAGE)
            known = _unavailable(error)
            if known is None:
                raise  # a bug: the traceback is wanted
            fail(str(known), EXIT_UNAVAILABLE)


def _unavailable(error: BaseException) -> DependencyUnavailable | None:
    """An outage of the database or the broker this command was using, else None."""
    from sqlalchemy import exc

    database_url = _url(get_database_settings, "database_url")
    if database_url is not None:
        if isinstance(error, exc.ProgrammingError) and type(error.orig).__name__ == "UndefinedTable":
            return DependencyUnavailable("database", location(database_url),
                                         "it has no fulfilment schema: run `fulfil migrate`", problem="not migrated")
        found = database_unavailable(error, database_url)
        if found is not None:
            return found
    broker_url = _url(get_broker_settings, "broker_url")
    if broker_url is not None:
        return broker_unavailable(error, broker_url)
    return None


def _url(loader: Callable[[], Any], name: str) -> str | None:
    try:
        return str(getattr(loader(), name))
    except SettingsError:
        return None


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("ticket-fulfilment")
        except PackageNotFoundError:
            installed = "unknown (not installed)"
        typer.echo(f"fulfil (ticket-fulfilment) {installed}")
        raise typer.Exit()


app = typer.Typer(cls=FulfilGroup, help="ticket-fulfilment: buy ticket orders through the TBB Partner API.",
                  epilog=EXIT_CODES_HELP, no_args_is_help=True, rich_markup_mode="markdown")


@app.callback()
def _main(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the installed version and exit."),
) -> None:
    pass


# ---- settings: each command validates only the parts it uses -----------------------------------

_LOADERS: dict[type, Callable[[], Any]] = {
    DatabaseSettings: get_database_settings,
    BrokerSettings: get_broker_settings,
    PartnerSettings: get_partner_settings,
    PolicySettings: get_policy_settings,
    ConsoleSettings: get_console_settings,
}


def require(*parts: type) -> None:
    """Validate these parts of the configuration, or exit 2 naming every bad variable among them."""
    problems: list[str] = []
    for part in parts:
        try:
            _LOADERS[part]()
        except SettingsError as error:
            problems.extend(line for line in str(error).splitlines()[1:] if line not in problems)
    if problems:
        fail("invalid configuration:\n" + "\n".join(problems), EXIT_USAGE)


def load_settings() -> Settings:
    """Everything (workers' view): for the commands that run a process or check every part."""
    try:
        return get_settings()
    except SettingsError as error:
        fail(str(error), EXIT_USAGE)


def database() -> DatabaseSettings:
    require(DatabaseSettings)
    return get_database_settings()


def broker() -> BrokerSettings:
    require(BrokerSettings)
    return get_broker_settings()


def policy() -> PolicySettings:
    require(PolicySettings)
    return get_policy_settings()


def partner() -> PartnerSettings:
    require(PartnerSettings)
    return get_partner_settings()


@contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """Libraries log each retry (dramatiq's reconnections, the partner client's attempts) on stderr;
    in a command, its own one-line outcome says it all."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def quiet_broker_logs() -> Any:
    return quiet_logs("dramatiq", "pika")


PARTNER_LOGGERS = ("fulfilment.partners",)


def check_database() -> None:
    """Fail now (exit 3) if the database cannot serve, before anything else is touched."""
    from sqlalchemy import text

    from fulfilment.db import session_scope

    with session_scope() as session:
        session.execute(text("SELECT 1"))


# ---- lookups and formatting ------------------------------------------------------------------


def find_purchase(session, ident: str):  # type: ignore[no-untyped-def]
    from fulfilment.operator import find_purchase as find

    return find(session, ident)


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def money(value: Decimal | None) -> str | None:
    return f"{value:.2f}" if value is not None else None

"""What every `fulfil` command shares: the app, settings loading, error exits, formatting."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

import typer

from fulfilment.requests import purchase_id_for
from fulfilment.settings import Settings, SettingsError, get_settings

app = typer.Typer(help="ticket-fulfilment: buy ticket orders through the TBB Partner API.", no_args_is_help=True)

REPO_ROOT = Path(__file__).resolve().parents[2]


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as error:
        fail(str(error))


def find_purchase(session, ident: str):  # type: ignore[no-untyped-def]
    from models import Purchase

    try:
        purchase = session.get(Purchase, uuid.UUID(ident))
    except ValueError:
        purchase = None
    return purchase or session.get(Purchase, purchase_id_for(ident))


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def money(value: Decimal | None) -> str | None:
    return f"{value:.2f}" if value is not None else None

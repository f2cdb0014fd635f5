"""`fulfil health`: can this process do its job right now?

Checks the database (and that migrations are applied), the broker, and partner
authentication.  Details are redacted: no password or token ever reaches the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fulfilment.logging_setup import redact
from fulfilment.settings import Settings


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


class DatabaseDown(Exception):
    """Postgres cannot be reached or cannot serve (as opposed to, say, a schema behind the code)."""


def check_database(settings: Settings) -> str:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, text

    from fulfilment.cli import REPO_ROOT
    from fulfilment.steps.intake import describe_database_error, is_database_unavailable

    engine = create_engine(settings.database_url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            current = MigrationContext.configure(connection).get_current_revision()
    except Exception as error:
        if is_database_unavailable(error):
            raise DatabaseDown(
                f"down: {describe_database_error(error)[:240]} -- submitted requests wait in RabbitMQ; "
                "intake retries them until the database is back"
            ) from error
        raise
    finally:
        engine.dispose()
    head = ScriptDirectory(str(REPO_ROOT / "migrations")).get_current_head()
    if current != head:
        raise RuntimeError(f"schema at {current or 'nothing'}, code expects {head}: run `fulfil migrate`")
    return f"reachable, schema at {current}"


def check_broker(settings: Settings) -> str:
    import pika

    parameters = pika.URLParameters(settings.broker_url)
    parameters.socket_timeout = 5
    parameters.blocked_connection_timeout = 5
    connection = pika.BlockingConnection(parameters)
    try:
        connection.channel()
    finally:
        connection.close()
    return "reachable"


def check_partner(settings: Settings) -> str:
    from fulfilment.partners.registry import build_tbb

    client = build_tbb(settings)
    try:
        client.check_credentials()
    finally:
        client.close()
    return f"authenticated as {settings.tbb_client_id}"


CHECKS: list[tuple[str, Callable[[Settings], str]]] = [
    ("database", check_database),
    ("broker", check_broker),
    ("partner", check_partner),
]


def run_checks(settings: Settings) -> list[CheckResult]:
    results = []
    for name, check in CHECKS:
        try:
            results.append(CheckResult(name, True, check(settings)))
        except Exception as error:  # noqa: BLE001  every failure is reported, none stops the others
            results.append(CheckResult(name, False, redact(f"{type(error).__name__}: {error}")[:500]))
    return results

"""`fulfil health | migrate | scheduler | sandbox | schema`: running and checking the service."""

from __future__ import annotations

import json
import signal
from enum import StrEnum
from typing import Annotated, Any, Optional

import typer

from fulfilment import requests
from fulfilment.cli.common import EXIT_UNAVAILABLE, PARTNER_LOGGERS, app, database, fail, load_settings, quiet_logs


@app.command()
def health(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Check database (and its schema), broker and each enabled partner; exit 3 naming the failing part.

    Needs every variable, those of each enabled partner included (exit 2 naming any that is missing).
    """
    from fulfilment.health import run_checks

    settings = load_settings()
    with quiet_logs("dramatiq", "pika", *PARTNER_LOGGERS):
        results = run_checks(settings)
    healthy = all(result.ok for result in results)
    if as_json:
        typer.echo(json.dumps({"ok": healthy, "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail}
                                                         for r in results]}, indent=2))
    else:
        for result in results:
            typer.echo(f"{result.name:<13} {'ok' if result.ok else 'FAILED'}  {result.detail}")
    if not healthy:
        raise typer.Exit(EXIT_UNAVAILABLE)


@app.command()
def migrate(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply database migrations (alembic upgrade)."""
    from fulfilment.migrate import upgrade

    settings = database()  # DATABASE_URL only
    current = upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision} ({current or 'base'})")


@app.command()
def scheduler() -> None:
    """Run the scheduler (one live instance; others wait as standbys). Stops cleanly on SIGTERM."""
    from prometheus_client import start_http_server

    from fulfilment import logging_setup
    from fulfilment.bootstrap import scheduler_jobs
    from fulfilment.db import get_engine
    from fulfilment.scheduler import Scheduler, limit_idle_transactions
    from fulfilment.settings import SettingsError

    settings = load_settings()
    logging_setup.configure(settings.log_level)
    wiring = scheduler_jobs(settings)
    try:
        runner = Scheduler(settings, wiring.jobs)
    except SettingsError as error:
        fail(str(error))
    # A leader frozen mid-job must not keep its batch's rows locked past the lease.
    limit_idle_transactions(get_engine(), settings.scheduler_leader_lease_seconds)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    try:
        runner.run()
    finally:
        wiring.close()


class SandboxPartner(StrEnum):
    TBB = "tbb"
    TICKETMASTER = "ticketmaster"


@app.command()
def sandbox(
    partner: Annotated[SandboxPartner, typer.Option(help="Which partner's API to serve.")] = SandboxPartner.TBB,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option(help="Default: 18080 (tbb), 18090 (ticketmaster).")] = None,
) -> None:
    """Run a partner API sandbox (for development and tests): TBB (SANDBOX_* variables) or
    Ticketmaster (TM_SANDBOX_* variables)."""
    if partner is SandboxPartner.TICKETMASTER:
        from fulfilment.partners.ticketmaster.sandbox import config as tm_config
        from fulfilment.partners.ticketmaster.sandbox import server as tm_server

        tm_server.run(host, port or tm_server.DEFAULT_PORT, tm_config.SandboxConfig.from_env())
        return
    from fulfilment.partners.tbb.sandbox.config import SandboxConfig
    from fulfilment.partners.tbb.sandbox.server import run

    run(host, port or 18080, SandboxConfig.from_env())


@app.command()
def schema() -> None:
    """Print the JSON Schema of a purchase request."""
    typer.echo(json.dumps(request_schema(), indent=2))


def request_schema() -> dict[str, Any]:
    schema = requests.request_schema()
    schema["title"] = "PurchaseRequest"
    schema["description"] = ("A purchase request: `partner` chooses the shape (absent or \"tbb\": Ticket Buyback; "
                             "\"ticketmaster\": the Ticketmaster Partner API).")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://ticket-fulfilment.invalid/schemas/purchase-request.schema.json"
    return schema

"""`fulfil health | migrate | scheduler | sandbox | schema`: running and checking the service."""

from __future__ import annotations

import json
import signal
import time
import uuid
from typing import Annotated, Any

import typer

from fulfilment.cli.common import EXIT_UNAVAILABLE, PARTNER_LOGGERS, app, database, fail, load_settings, quiet_logs
from fulfilment.requests import PurchaseRequest


@app.command()
def health(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Check database (and its schema), broker and partner authentication; exit 3 naming the failing part.

    Needs every variable, the partner's included (exit 2 naming any that is missing).
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
            typer.echo(f"{result.name:<9} {'ok' if result.ok else 'FAILED'}  {result.detail}")
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
    import dramatiq
    from prometheus_client import start_http_server

    from fulfilment import logging_setup
    from fulfilment.db import get_engine
    from fulfilment.deadlines import flag_near_deadlines
    from fulfilment.outbox import EventPublisher, relay_outbox
    from fulfilment.scheduler import Job, Scheduler, limit_idle_transactions, redrive_due, update_gauges
    from fulfilment.settings import SettingsError

    settings = load_settings()
    logging_setup.configure(settings.log_level)
    import workers  # noqa: F401  the broker and the actor names

    def send(step: str, purchase_id: uuid.UUID) -> None:
        dramatiq.get_broker().get_actor(step).send(str(purchase_id))

    publisher = EventPublisher(settings.broker_url)

    def relay() -> int:
        # Drain the backlog within a time budget, one confirmed batch at a time.
        total, deadline = 0, time.monotonic() + max(1.0, settings.scheduler_interval_seconds)
        while time.monotonic() < deadline:
            sent = relay_outbox(publisher, batch_size=settings.scheduler_batch_size)
            total += sent
            if sent < settings.scheduler_batch_size:
                break
        return total

    def gauges() -> int:
        from fulfilment.queues import queue_depths

        return update_gauges(settings, lambda: queue_depths(settings.broker_url))

    jobs = [
        Job("redrive", lambda: redrive_due(settings, send)),
        Job("deadlines", lambda: flag_near_deadlines(settings.deadline_warning_hours,
                                                     batch_size=settings.scheduler_batch_size)),
        Job("outbox", relay),
        # Counts every live purchase: cheap per row, but not per tick at scale.
        Job("gauges", gauges, every_seconds=max(15.0, settings.scheduler_interval_seconds)),
    ]
    try:
        runner = Scheduler(settings, jobs)
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
        publisher.close()


@app.command()
def sandbox(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 18080,
) -> None:
    """Run the TBB Partner API sandbox (for development and tests)."""
    from fulfilment.sandbox.config import SandboxConfig
    from fulfilment.sandbox.server import run

    run(host, port, SandboxConfig.from_env())


@app.command()
def schema() -> None:
    """Print the JSON Schema of a purchase request."""
    typer.echo(json.dumps(request_schema(), indent=2))


def request_schema() -> dict[str, Any]:
    schema = PurchaseRequest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://ticket-fulfilment.invalid/schemas/purchase-request.schema.json"
    return schema

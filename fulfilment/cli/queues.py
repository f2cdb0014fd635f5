"""`fulfil queues migrate`: the pipeline's queues re-declared as BROKER_QUEUE_TYPE asks
(fulfilment/rabbitmq/migrate.py), their messages kept.  Needs BROKER_URL only."""

from __future__ import annotations

from typing import Annotated

import typer

from fulfilment.cli.common import EXIT_REFUSED, app, broker, fail, policy, require
from fulfilment.settings import BrokerSettings

queues = typer.Typer(help="The pipeline's RabbitMQ queues (classic or quorum, BROKER_QUEUE_TYPE).",
                     no_args_is_help=True)
app.add_typer(queues, name="queues")


@queues.command("migrate")
def queues_migrate(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say which queues would move.")] = False,
) -> None:
    """Re-declare every queue (actor, .DQ, .XQ, and fulfilment.events.unrouted) that exists with
    another type, delivery limit or bound than configured, moving its messages through `<queue>.migrating` (none lost; a crash may
    duplicate one, which the actors ignore).  Stop the workers and the scheduler first: a queue
    with consumers is refused (exit 4).  Run it again to finish an interrupted run."""
    from fulfilment.rabbitmq.migrate import QueueInUse, migrate_queues
    from fulfilment.rabbitmq.outbox import unrouted_arguments

    require(BrokerSettings)
    settings = broker()
    bound = policy()
    unrouted = unrouted_arguments(bound.events_unrouted_max_length, bound.events_unrouted_ttl_seconds,
                                  settings.broker_queue_type)
    try:
        report = migrate_queues(settings.broker_url, queue_type=settings.broker_queue_type,
                                delivery_limit=settings.broker_delivery_limit, dry_run=dry_run, unrouted=unrouted)
    except QueueInUse as error:
        fail(str(error), code=EXIT_REFUSED)
    verb = "would migrate" if dry_run else "migrated"
    for name, count in report.migrated.items():
        typer.echo(f"{verb:<14} {name} ({count} message(s)) -> {settings.broker_queue_type}")
    for name in report.already:
        typer.echo(f"{'as configured':<14} {name}")
    typer.echo(f"{len(report.migrated)} {verb}, {len(report.already)} already {settings.broker_queue_type}, "
               f"{len(report.absent)} not declared yet")

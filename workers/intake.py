"""purchases.intake: validate and store a purchase request, then quote it (in line, or by message).

A request accepted by RabbitMQ ends as a purchase or a recorded rejection, however long
Postgres is unavailable (invariant 9).  While the database is down the intake attempt
raises `DatabaseUnavailable`, which `retry_when` retries without limit, with the usual
capped backoff (short, invariant 7): the request waits in RabbitMQ, never in the XQ.  Each
wait is counted in fulfil_intake_database_waits_total / fulfil_intake_waiting_for_database and
on the database outage (fulfilment/outages.py: "database (Postgres) down: intake waiting for the
database ...", a summary a minute with the requests waiting, one line when it is back).  Any other
failure keeps the ACTOR_MAX_RETRIES limit; waits for the database do not use it up.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from fulfilment import dependencies, metrics
from fulfilment.outages import DATABASE
from fulfilment.partners.registry import get_partners
from fulfilment.rabbitmq.queues import INTAKE_QUEUE
from fulfilment.settings import get_settings
from fulfilment.steps import intake, runner
from workers.runner import nudge

log = logging.getLogger(__name__)

# How many of this message's retries were waits for the database (kept in its options).
WAITS_OPTION = "intake_database_waits"


class DatabaseUnavailable(dramatiq.Retry):
    """Postgres could not serve the intake: the message is retried, however long it takes.

    A `Retry`, so dramatiq does not log each wait as an error with a traceback; the actor
    logs one warning per attempt instead.
    """


def database_waits(message: Any) -> int:
    """Waits recorded on the message, or 0 if they belong to an earlier life of it: every
    wait is followed by a retry, so waits > retries means the retry count was reset (a
    dead letter replayed) and the old waits no longer apply."""
    if message is None:
        return 0
    waits = int(message.options.get(WAITS_OPTION, 0) or 0)
    return waits if waits <= int(message.options.get("retries", 0) or 0) else 0


def retry_intake(retries: int, exception: BaseException) -> bool:
    """dramatiq `retry_when`: database outages without limit, anything else max_retries times.

    `retries` counts every earlier failure of the message, waits for the database included;
    those are taken off.  The Retries middleware calls this in the worker thread before the
    CurrentMessage middleware clears the current message (after_* hooks run in reverse
    order, and CurrentMessage comes before Retries in workers/broker.py); without it, every
    retry counts, as dramatiq itself would.
    """
    if isinstance(exception, DatabaseUnavailable):
        return True
    failures = retries - database_waits(CurrentMessage.get_current_message())
    return failures < get_settings().actor_max_retries


@dramatiq.actor(queue_name=INTAKE_QUEUE, throws=(intake.InvalidPurchaseRequest,), retry_when=retry_intake)
def submit_purchase(request: Any) -> None:
    """`request`: a JSON object matching docs/schemas/purchase-request.schema.json."""
    message = CurrentMessage.get_current_message()
    try:
        # Stored, then quoted (and ordered) in this thread or sent (runner.take_in).
        runner.take_in(request, partner=get_partners(), settings=get_settings(),
                       message_id=message.message_id if message else None, send=nudge)
    except intake.InvalidPurchaseRequest:
        metrics.INTAKE_WAITING_FOR_DATABASE.set(0)  # the rejection was recorded: the database answered
        raise
    except Exception as error:
        # Also covers a rejection that could not be recorded: it is retried, not dropped.
        if not dependencies.is_database_unavailable(error):
            raise
        raise _wait_for_database(message, error) from error
    metrics.INTAKE_WAITING_FOR_DATABASE.set(0)


def _wait_for_database(message: Any, error: BaseException) -> DatabaseUnavailable:
    waits = database_waits(message) + 1
    if message is not None:
        message.options[WAITS_OPTION] = waits  # kept in the retried message by the Retries middleware
    metrics.INTAKE_DATABASE_WAITS.inc()
    metrics.INTAKE_WAITING_FOR_DATABASE.set(1)
    reason = dependencies.describe_database_error(error)
    # One line when the database goes down, a summary a minute, one when it is back (outages.py);
    # message_id, request_id (and purchase_id once validated) are on it via the log context.
    DATABASE.failed(f"intake waiting for the database (the request stays queued and is retried until "
                    f"the database is back): {reason}")
    return DatabaseUnavailable(f"intake waiting for the database: {reason}")

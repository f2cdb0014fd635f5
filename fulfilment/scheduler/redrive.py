"""The re-drive job: every live purchase whose next action is due gets its step sent again (invariant 2)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from sqlalchemy import text

from fulfilment.db import session_scope
from fulfilment.outages import BROKER
from fulfilment.scheduler.leadership import one_line
from fulfilment.settings import Settings
from fulfilment.state_machine import NEXT_STEP
from fulfilment.step_names import StepName

log = logging.getLogger(__name__)


Send = Callable[[StepName, uuid.UUID], None]

REDRIVE_SQL = text(
    """
    WITH due AS (
        -- Only live purchases carry a next_action_at (state_machine.transition enforces it),
        -- so the partial index alone, read in order, finds the batch and stops at the LIMIT.
        SELECT id
          FROM purchases
         WHERE next_action_at <= now()
           AND (claimed_until IS NULL OR claimed_until < now())
           AND (nudged_at IS NULL OR nudged_at < now() - make_interval(secs => :renudge_seconds))
         ORDER BY next_action_at
         LIMIT :batch
           FOR UPDATE SKIP LOCKED
    )
    UPDATE purchases AS p
       SET nudged_at = now()
      FROM due
     WHERE p.id = due.id
 RETURNING p.id, p.state
    """
)


def redrive_due(settings: Settings, send: Send) -> int:
    """Send the next step of every live purchase whose next action is due (one batch)."""
    with session_scope() as session:
        rows = session.execute(
            REDRIVE_SQL,
            {"renudge_seconds": settings.redrive_after_seconds, "batch": settings.scheduler_batch_size},
        ).all()
    sent = 0
    for index, (purchase_id, state) in enumerate(rows):
        step = NEXT_STEP.get(state)  # type: ignore[call-overload]
        if step is None:  # cannot happen while transition() keeps next_action_at for live states only
            log.error("purchase %s is %s but has a next action; not re-driven", purchase_id, state)
            continue
        try:
            send(step, purchase_id)
        except Exception as error:
            if not _broker_outage(error):
                log.warning("could not send %s for purchase %s", step, purchase_id, exc_info=True)
                continue
            # The broker is out of reach: the rest of the batch would fail the same way.  One line
            # for the outage (fulfilment/outages.py), none per purchase; they are re-driven once it is back.
            BROKER.failed(f"re-drive of {len(rows) - sent} due purchase(s) waits: {one_line(error)}",
                          waiting=[str(row[0]) for row in rows[index:]])
            break
        sent += 1
    return sent


def _broker_outage(error: BaseException) -> bool:
    import pika.exceptions
    from dramatiq.errors import ConnectionError as BrokerConnectionError

    return isinstance(error, (BrokerConnectionError, pika.exceptions.AMQPError, OSError))

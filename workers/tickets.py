"""purchases.tickets: fetch an ordered purchase's tickets when they are due (a partner that issues tickets)."""

from __future__ import annotations

import dramatiq

from fulfilment.rabbitmq.queues import STEP_QUEUES
from fulfilment.step_names import StepName
from workers.runner import InvalidMessage, run_step


@dramatiq.actor(queue_name=STEP_QUEUES[StepName.TICKETS], throws=(InvalidMessage,))
def fetch_tickets(purchase_id: str) -> None:
    run_step(StepName.TICKETS, purchase_id)

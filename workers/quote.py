"""purchases.quote: get a (new) quote for a purchase."""

from __future__ import annotations

import dramatiq

from fulfilment.rabbitmq.queues import STEP_QUEUES
from fulfilment.step_names import StepName
from workers.runner import InvalidMessage, run_step


@dramatiq.actor(queue_name=STEP_QUEUES[StepName.QUOTE], throws=(InvalidMessage,))
def quote_purchase(purchase_id: str) -> None:
    run_step(StepName.QUOTE, purchase_id)

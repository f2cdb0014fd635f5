"""purchases.order: place the order, and resolve orders whose outcome is unknown."""

from __future__ import annotations

import dramatiq

from fulfilment.rabbitmq.queues import STEP_QUEUES
from fulfilment.step_names import StepName
from workers.runner import InvalidMessage, run_step


@dramatiq.actor(queue_name=STEP_QUEUES[StepName.ORDER], throws=(InvalidMessage,))
def place_order(purchase_id: str) -> None:
    run_step(StepName.ORDER, purchase_id)


@dramatiq.actor(queue_name=STEP_QUEUES[StepName.RESOLVE], throws=(InvalidMessage,))
def resolve_order(purchase_id: str) -> None:
    run_step(StepName.RESOLVE, purchase_id)

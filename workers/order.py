"""purchases.order: place the order, and resolve orders whose outcome is unknown."""

from __future__ import annotations

import dramatiq

from fulfilment.steps.runner import StepName
from workers.runner import InvalidMessage, run_step


@dramatiq.actor(queue_name="purchases.order", throws=(InvalidMessage,))
def place_order(purchase_id: str) -> None:
    run_step(StepName.ORDER, purchase_id)


@dramatiq.actor(queue_name="purchases.order", throws=(InvalidMessage,))
def resolve_order(purchase_id: str) -> None:
    run_step(StepName.RESOLVE, purchase_id)

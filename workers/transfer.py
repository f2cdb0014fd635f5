"""purchases.transfer: read the order's transfer status when its check is due."""

from __future__ import annotations

import dramatiq

from fulfilment.rabbitmq.queues import STEP_QUEUES
from fulfilment.step_names import StepName
from workers.runner import InvalidMessage, run_step


@dramatiq.actor(queue_name=STEP_QUEUES[StepName.TRANSFER], throws=(InvalidMessage,))
def check_transfer(purchase_id: str) -> None:
    run_step(StepName.TRANSFER, purchase_id)

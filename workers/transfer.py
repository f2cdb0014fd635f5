"""purchases.transfer: read the order's transfer status when its check is due."""

from __future__ import annotations

import dramatiq

from fulfilment.steps.runner import StepName
from workers.runner import InvalidMessage, run_step


@dramatiq.actor(queue_name="purchases.transfer", throws=(InvalidMessage,))
def check_transfer(purchase_id: str) -> None:
    run_step(StepName.TRANSFER, purchase_id)

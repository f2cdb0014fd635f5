"""purchases.intake: validate and store a purchase request, then nudge the quote step."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from fulfilment.publish import INTAKE_QUEUE
from fulfilment.settings import get_settings
from fulfilment.steps import intake
from fulfilment.steps.common import Next
from workers.runner import nudge


@dramatiq.actor(queue_name=INTAKE_QUEUE, throws=(intake.InvalidPurchaseRequest,))
def submit_purchase(request: Any) -> None:
    """`request`: a JSON object matching docs/schemas/purchase-request.schema.json."""
    message = CurrentMessage.get_current_message()
    purchase_id = intake.accept(request, settings=get_settings(), message_id=message.message_id if message else None)
    if purchase_id is not None:
        nudge(Next("quote_purchase"), purchase_id)

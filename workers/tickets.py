"""purchases.tickets: fetch an ordered purchase's tickets when they are due, and refresh issued
tickets (a partner that issues tickets)."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from fulfilment.partners.registry import get_partners
from fulfilment.rabbitmq.queues import REFRESH_ACTOR, REFRESH_QUEUE, STEP_QUEUES
from fulfilment.settings import get_settings
from fulfilment.step_names import StepName
from fulfilment.steps import refresh
from fulfilment.steps.runner import parse_device, parse_purchase_id
from workers.runner import InvalidMessage, run_step


@dramatiq.actor(queue_name=STEP_QUEUES[StepName.TICKETS], throws=(InvalidMessage,))
def fetch_tickets(purchase_id: str) -> None:
    run_step(StepName.TICKETS, purchase_id)


@dramatiq.actor(actor_name=REFRESH_ACTOR, queue_name=REFRESH_QUEUE, throws=(InvalidMessage,))
def refresh_tickets(purchase_id: str, on_demand: bool = False, device: object = None) -> None:
    """A scheduled (event start - 20 h) or on-demand refresh of a purchase's SafeTix tokens
    (`device`: the fan's device showing the tickets, for an on-demand one)."""
    message = CurrentMessage.get_current_message()
    refresh.refresh_tickets(parse_purchase_id(purchase_id), partners=get_partners(), settings=get_settings(),
                            on_demand=bool(on_demand), message_id=message.message_id if message else None,
                            device=parse_device(device))

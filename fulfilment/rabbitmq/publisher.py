"""Submitting purchase requests from Python, for other services.

    from fulfilment.publish import submit
    purchase_id = submit({"request_id": "...", ...}, broker_url="amqp://...")

The request is validated here first (a ValidationError names every bad field), then
published as a dramatiq message to the `purchases.intake` queue with publisher
confirms: when `submit` returns, RabbitMQ holds the message durably.  The purchase
id is derived from `request_id`, so it is known at once, and submitting the same
request_id again names the same purchase.

Publishers in other languages send the same JSON (docs/request-format.md).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from fulfilment.requests import PurchaseRequest

INTAKE_QUEUE = "purchases.intake"
INTAKE_ACTOR = "submit_purchase"
# The queue of each purchase step's actor (workers/*.py), for processes that send a step
# without importing the workers (and so without their settings): `fulfil retry`.
STEP_QUEUES = {
    "quote_purchase": "purchases.quote",
    "place_order": "purchases.order",
    "resolve_order": "purchases.order",
    "check_transfer": "purchases.transfer",
}


def intake_message(request: PurchaseRequest) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=INTAKE_QUEUE,
        actor_name=INTAKE_ACTOR,
        args=(request.model_dump(mode="json", exclude_none=True),),
        kwargs={},
        options={},
        message_id=str(uuid.uuid4()),
        message_timestamp=int(time.time() * 1000),
    )


class Publisher:
    """Keeps one confirmed-delivery broker connection for many submissions."""

    def __init__(self, broker_url: str) -> None:
        # No middleware: this process only publishes; it runs no actors.
        self._broker = RabbitmqBroker(url=broker_url, confirm_delivery=True, middleware=[])

    def submit(self, request: PurchaseRequest | dict[str, Any]) -> uuid.UUID:
        parsed = request if isinstance(request, PurchaseRequest) else PurchaseRequest.model_validate(request)
        self._broker.enqueue(intake_message(parsed))
        return parsed.purchase_id

    def close(self) -> None:
        self._broker.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def submit(request: PurchaseRequest | dict[str, Any], *, broker_url: str) -> uuid.UUID:
    with Publisher(broker_url) as publisher:
        return publisher.submit(request)


def send_step(step: str, purchase_id: uuid.UUID, *, broker_url: str) -> str:
    """Nudge one purchase's step, as the scheduler does (publisher confirms); returns the message id."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=STEP_QUEUES[step],
        actor_name=step,
        args=(str(purchase_id),),
        kwargs={},
        options={},
        message_id=str(uuid.uuid4()),
        message_timestamp=int(time.time() * 1000),
    )
    broker = RabbitmqBroker(url=broker_url, confirm_delivery=True, middleware=[])
    try:
        broker.enqueue(message)
    finally:
        broker.close()
    return message.message_id

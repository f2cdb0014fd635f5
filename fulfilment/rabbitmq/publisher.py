"""Publishing to the pipeline's queues: purchase requests (for other services, through the
public `fulfilment.publish`) and purchase steps (`send_step`, for workers, scheduler and CLI).

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

from fulfilment.rabbitmq.broker import FulfilmentBroker
from fulfilment.rabbitmq.queues import INTAKE_ACTOR, INTAKE_QUEUE, REFRESH_ACTOR, REFRESH_QUEUE, STEP_QUEUES
from fulfilment.requests import AnyPurchaseRequest, PurchaseRequest, TicketmasterRequest, parse_request
from fulfilment.settings import QueueSettings, get_queue_settings
from fulfilment.step_names import StepName


def _message(queue: str, actor: str, argument: object) -> dramatiq.Message[Any]:
    """A new dramatiq message for `actor` on `queue`, as the actor's own send() would build it."""
    return dramatiq.Message(queue_name=queue, actor_name=actor, args=(argument,), kwargs={}, options={},
                            message_id=str(uuid.uuid4()), message_timestamp=int(time.time() * 1000))


def intake_message(request: AnyPurchaseRequest) -> dramatiq.Message[Any]:
    # A TBB request goes out without `partner` (the default), as before partners were chosen per
    # request: workers of an older release still accept it during a rolling upgrade.
    body = request.model_dump(mode="json", exclude_none=True,
                              exclude={"partner"} if request.partner == "tbb" else None)
    if isinstance(request, TicketmasterRequest) and request.payment_nonce is not None:
        # A secret field dumps as "**********": the worker needs the nonce itself (sealed at intake).
        body["payment_nonce"] = request.payment_nonce.get_secret_value()
    return _message(INTAKE_QUEUE, INTAKE_ACTOR, body)


class Publisher:
    """Keeps one confirmed-delivery broker connection for many submissions."""

    def __init__(self, broker_url: str, queues: QueueSettings | None = None) -> None:
        self._broker = confirmed_broker(broker_url, queues)

    def submit(self, request: AnyPurchaseRequest | dict[str, Any]) -> uuid.UUID:
        parsed = request if isinstance(request, (PurchaseRequest, TicketmasterRequest)) else parse_request(request)
        self._broker.enqueue(intake_message(parsed))
        return parsed.purchase_id

    def close(self) -> None:
        self._broker.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def submit(request: AnyPurchaseRequest | dict[str, Any], *, broker_url: str) -> uuid.UUID:
    with Publisher(broker_url) as publisher:
        return publisher.submit(request)


def step_message(step: StepName, purchase_id: uuid.UUID) -> dramatiq.Message[Any]:
    """The message of a purchase step, as its actor (workers/*.py) would send it."""
    return _message(STEP_QUEUES[step], str(step), str(purchase_id))


def send_step(broker: dramatiq.Broker, step: StepName, purchase_id: uuid.UUID, *, delay_seconds: float = 0.0) -> str:
    """Send one purchase's step through `broker` (the workers', the scheduler's or a one-off);
    returns the message id.  The one way every process sends a step, without importing the
    workers: the step's name is its actor's, its queue `STEP_QUEUES[step]`."""
    message = step_message(step, purchase_id)
    broker.enqueue(message, delay=int(delay_seconds * 1000) or None)
    return message.message_id


def send_refresh(broker: dramatiq.Broker, purchase_id: uuid.UUID, *, on_demand: bool,
                 device: dict[str, str] | None = None) -> str:
    """Ask the workers to refresh a purchase's tickets (steps/refresh.py); returns the message id."""
    message = _message(REFRESH_QUEUE, REFRESH_ACTOR, str(purchase_id))
    message = message.copy(args=(str(purchase_id), on_demand), kwargs={"device": device} if device else {})
    broker.enqueue(message)
    return message.message_id


def request_ticket_refresh(purchase_id: uuid.UUID | str, *, broker_url: str,
                           device: dict[str, str] | None = None) -> str:
    """On-demand refresh of a purchase's tickets (e.g. a ticket is being displayed), with confirms.
    `device`: the fan's device showing it ({"device_id", "device_type", "device_os"}, seed 003),
    else the request's.  The new tokens come back in a `purchase.tickets_refreshed` event."""
    if device is not None:
        from fulfilment.requests import FanDevice

        device = FanDevice.model_validate(device).model_dump()  # a clear error here, not in a worker
    broker = confirmed_broker(broker_url)
    try:
        return send_refresh(broker, uuid.UUID(str(purchase_id)), on_demand=True, device=device)
    finally:
        broker.close()


def confirmed_broker(broker_url: str, queues: QueueSettings | None = None) -> FulfilmentBroker:
    """A broker for a process that only publishes (no actors, no middleware), with publisher
    confirms: a send returns once RabbitMQ has the message.  Its queues are declared as the
    workers declare them: `queues`, or BROKER_QUEUE_TYPE / BROKER_DELIVERY_LIMIT."""
    shape = queues or get_queue_settings()
    return FulfilmentBroker(url=broker_url, queue_type=shape.broker_queue_type,
                            delivery_limit=shape.broker_delivery_limit, confirm_delivery=True, middleware=[])


def send_step_once(step: StepName, purchase_id: uuid.UUID, *, broker_url: str) -> str:
    """Nudge one purchase's step from a one-off process (`fulfil retry`), with confirms."""
    broker = confirmed_broker(broker_url)
    try:
        return send_step(broker, step, purchase_id)
    finally:
        broker.close()

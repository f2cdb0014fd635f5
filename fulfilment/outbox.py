"""The outbox relay: publish recorded events to RabbitMQ, mark them sent only after the confirm.

Events go to the durable topic exchange `fulfilment.events` with routing key
`purchase.<state>` (or `purchase.deadline_near`), persistent, with publisher
confirms, and with the event id as the AMQP `message_id`.  A relay killed between
the confirm and the commit publishes those events again on its next run, with the
same ids: consumers may see duplicates and de-duplicate on `event_id`, but never
miss an event (design invariant 4).  Schema: docs/schemas/purchase-event.schema.json.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

import pika
import pika.exceptions
from sqlalchemy import func, select, update

from fulfilment.db import session_scope
from models import OutboxEvent

log = logging.getLogger(__name__)

EXCHANGE = "fulfilment.events"


class EventPublisher:
    """One confirmed channel to the events exchange, reconnected on demand."""

    def __init__(self, broker_url: str) -> None:
        self._parameters = pika.URLParameters(broker_url)
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None

    def _ensure_channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = pika.BlockingConnection(self._parameters)
            self._channel = self._connection.channel()
            self._channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
            self._channel.confirm_delivery()
        return self._channel

    def publish(self, event_id: uuid.UUID, routing_key: str, payload: dict[str, object]) -> None:
        """Returns once RabbitMQ confirmed the message; raises otherwise."""
        channel = self._ensure_channel()
        channel.basic_publish(
            EXCHANGE,
            routing_key,
            json.dumps(payload, separators=(",", ":")).encode(),
            pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/json",
                message_id=str(event_id),
                type=routing_key,
                timestamp=int(time.time()),
            ),
        )

    def close(self) -> None:
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
        except pika.exceptions.AMQPError:
            pass
        self._connection = None
        self._channel = None


def relay_outbox(publisher: EventPublisher, *, batch_size: int) -> int:
    """Publish one batch of unsent events in creation order; return how many were marked sent."""
    with session_scope() as session:
        events = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.published_at.is_(None))
            .order_by(OutboxEvent.created_at, OutboxEvent.transition_id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        sent: list[uuid.UUID] = []
        for event in events:
            try:
                publisher.publish(event.id, event.routing_key, event.payload)
            except (pika.exceptions.AMQPError, OSError) as error:
                # Keep what was confirmed; the rest waits for the next tick.
                log.warning("outbox: publishing event %s failed (%s); will retry", event.id, error)
                publisher.close()
                break
            sent.append(event.id)
        if sent:
            session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(sent)).values(published_at=func.now()))
    return len(sent)

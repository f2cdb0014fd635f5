"""The outbox relay: publish recorded events to RabbitMQ, mark them sent only after the confirm.

Events go to the durable topic exchange `fulfilment.events` with routing key
`purchase.<state>` (or `purchase.deadline_near`, ...) for a purchase's history, and
`request.rejected` for a request intake refused (no purchase: the sender learns why),
persistent, with publisher confirms, and with the event id as the AMQP `message_id`.
A relay killed between the confirm and the commit publishes those events again on its
next run, with the same ids: consumers may see duplicates and de-duplicate on
`event_id`, but never miss an event (design invariant 4).  Schemas:
docs/schemas/purchase-event.schema.json, docs/schemas/request-rejected.schema.json.

Unrouted events are kept, never dropped.  Every event is published `mandatory`: if no
queue is bound for its routing key, RabbitMQ returns it (pika raises UnroutableError
after the confirm) and the relay re-publishes it, same body, properties and routing
key, to the durable fanout exchange `fulfilment.events.unrouted`, whose durable queue
of the same name keeps it until an operator consumes, moves or purges it.  An event
is marked sent only once RabbitMQ confirmed it into a queue: a bound consumer's or
the unrouted queue.  If neither takes it (say the unrouted queue was deleted), the
relay logs an ERROR, leaves the event unsent, reconnects (which declares the
unrouted exchange and queue again) and retries on the next tick.

`fulfilment.events` itself is still declared without arguments: RabbitMQ refuses
(406 PRECONDITION_FAILED) to redeclare an exchange with different arguments, and
consumers, existing deployments included, declare it plain.  An operator may make
`fulfilment.events.unrouted` its alternate exchange with a policy (README, "Events for
requesting services"); unrouted events then land in the same queue without a return.
An exchange or queue that already exists with other arguments (say `fulfilment.events`
declared with an alternate exchange) is used as it is, declared passively, instead of
failing every connection attempt.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

import pika
import pika.exceptions
from pydantic import SecretStr
from sqlalchemy import func, select, update

from fulfilment import ticket_crypto
from fulfilment.db import session_scope
from fulfilment.outages import BROKER
from fulfilment.rabbitmq.broker import node_parameters
from fulfilment.rabbitmq.queues import EXCHANGE, UNROUTED
from models import OutboxEvent

log = logging.getLogger(__name__)


class _NotReturnedMessages(logging.Filter):
    """pika logs a WARNING for every message RabbitMQ returns; the relay handles returns itself
    (kept in UNROUTED, one warning per routing key), so those lines are only noise (one per event)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Published message was returned"))


logging.getLogger("pika.adapters.blocking_connection").addFilter(_NotReturnedMessages())



class EventPublisher:
    """One confirmed channel to the events exchange, reconnected on demand."""

    def __init__(self, broker_url: str) -> None:
        self._parameters = node_parameters(broker_url)  # every node of a cluster, tried in turn
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None
        self._unrouted_keys: set[str] = set()  # routing keys already warned about

    def _ensure_channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = pika.BlockingConnection(self._parameters)
            channel = self._connection.channel()
            for name, declare in (
                (EXCHANGE, lambda ch, passive: ch.exchange_declare(EXCHANGE, "topic", passive, durable=True)),
                (UNROUTED, lambda ch, passive: ch.exchange_declare(UNROUTED, "fanout", passive, durable=True)),
                (UNROUTED, lambda ch, passive: ch.queue_declare(UNROUTED, passive, durable=True)),
            ):
                try:
                    declare(channel, False)
                except pika.exceptions.ChannelClosedByBroker as error:
                    if error.reply_code != 406:
                        raise
                    # It exists with other arguments (an alternate exchange, a queue type, ...): use it as it is.
                    log.info("outbox: %s exists with other arguments, using it as it is (%s)", name, error.reply_text)
                    channel = self._connection.channel()
                    declare(channel, True)
            channel.queue_bind(UNROUTED, UNROUTED)
            channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def publish(self, event_id: uuid.UUID, routing_key: str, payload: dict[str, object]) -> None:
        """Returns once RabbitMQ confirmed the message into a queue; raises otherwise."""
        channel = self._ensure_channel()
        body = json.dumps(payload, separators=(",", ":")).encode()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=str(event_id),
            type=routing_key,
            timestamp=int(time.time()),
        )
        try:
            channel.basic_publish(EXCHANGE, routing_key, body, properties, mandatory=True)
            return
        except pika.exceptions.UnroutableError:
            pass  # returned (no queue bound for routing_key), then confirmed: keep it below
        if routing_key not in self._unrouted_keys:
            self._unrouted_keys.add(routing_key)
            log.warning("outbox: no queue is bound to %s for %s; keeping such events in queue %s",
                        EXCHANGE, routing_key, UNROUTED)
        try:
            channel.basic_publish(UNROUTED, routing_key, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            log.error("outbox: event %s (%s) was routed to no queue, not even %s; it stays unsent",
                      event_id, routing_key, UNROUTED)
            raise

    def close(self) -> None:
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
        except pika.exceptions.AMQPError:
            pass
        self._connection = None
        self._channel = None


def relay_outbox(publisher: EventPublisher, *, batch_size: int, ticket_key: SecretStr | None = None) -> int:
    """Publish one batch of unsent events in creation order; return how many were marked sent.

    `ticket_key` opens the ticket tokens sealed in an event (ticket_crypto.open_event) just before
    it is published: Postgres never holds them in clear.  An event it cannot open is not published
    (and neither is anything after it: events go out in order) and the error is logged each tick.
    """
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
                payload = ticket_crypto.open_event(ticket_key, event.payload)
            except ticket_crypto.TicketKeyError as error:
                log.error("outbox: event %s (%s) cannot be published: %s", event.id, event.routing_key, error)
                break
            try:
                publisher.publish(event.id, event.routing_key, payload)
            except (pika.exceptions.AMQPError, OSError) as error:
                # Keep what was confirmed; the rest waits for the next tick.
                BROKER.failed(f"outbox: events wait unpublished ({type(error).__name__}: {error})")
                publisher.close()
                break
            sent.append(event.id)
            BROKER.recovered()
        if sent:
            session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(sent)).values(published_at=func.now()))
    return len(sent)

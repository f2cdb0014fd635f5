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
unrouted exchange and queue again) and retries on the next tick.  The log stays quiet: one
WARNING the first time a routing key goes unrouted, a summary every UNROUTED_SUMMARY_SECONDS
while any does, and one INFO line when its events reach a bound queue again.

The unrouted queue has the type of the pipeline's queues (BROKER_QUEUE_TYPE: a quorum queue on a
cluster, replicated like the others; `fulfil queues migrate` moves an existing one, events kept).
It is bounded (EVENTS_UNROUTED_MAX_LENGTH, EVENTS_UNROUTED_TTL_SECONDS, as the
queue arguments `x-max-length` with `x-overflow: drop-head` and `x-message-ttl`): beyond them
RabbitMQ drops the oldest kept events, so a routing key nobody binds cannot fill the broker's
disk.  RabbitMQ cannot change the arguments of an existing queue (406): a queue declared before
the bound (or with other bounds) is used as it is, and the relay says once, at WARNING, how to
bound it without losing its events (a policy) or how to have it declared anew.

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
import re
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

# While some routing key goes unrouted, a summary of what was kept is logged this often.
UNROUTED_SUMMARY_SECONDS = 600.0
# The defaults of EVENTS_UNROUTED_MAX_LENGTH and EVENTS_UNROUTED_TTL_SECONDS (settings.py).
DEFAULT_UNROUTED_MAX_LENGTH = 100_000
DEFAULT_UNROUTED_TTL_SECONDS = 604_800.0


def unrouted_arguments(max_length: int, ttl_seconds: float, queue_type: str = "classic") -> dict[str, object]:
    """The unrouted queue's type and bound as queue arguments (0: no bound of that kind)."""
    arguments: dict[str, object] = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
    if max_length:
        arguments |= {"x-max-length": max_length, "x-overflow": "drop-head"}  # drop the oldest, keep publishing
    if ttl_seconds:
        arguments["x-message-ttl"] = max(1, round(ttl_seconds * 1000))
    return arguments


def unrouted_policy(arguments: dict[str, object]) -> str:
    """The rabbitmqctl command that bounds an existing unrouted queue as `arguments` would."""
    definition = {key.removeprefix("x-"): value for key, value in arguments.items() if key != "x-queue-type"}
    return (f"rabbitmqctl set_policy [-p <vhost>] --apply-to queues fulfilment-events-unrouted-bound "
            f"'^{re.escape(UNROUTED)}$' '{json.dumps(definition, separators=(',', ':'))}'")


class EventPublisher:
    """One confirmed channel to the events exchange, reconnected on demand."""

    def __init__(self, broker_url: str, *, unrouted_max_length: int = DEFAULT_UNROUTED_MAX_LENGTH,
                 unrouted_ttl_seconds: float = DEFAULT_UNROUTED_TTL_SECONDS, queue_type: str = "classic") -> None:
        self._parameters = node_parameters(broker_url)  # every node of a cluster, tried in turn
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None
        self._unrouted_arguments = unrouted_arguments(unrouted_max_length, unrouted_ttl_seconds, queue_type)
        self._unrouted_max_length = unrouted_max_length
        # The unrouted queue's max length as this relay declared it (0: none, or a queue declared
        # otherwise before); None until declared.  Exported as fulfil_unrouted_events_limit.
        self.unrouted_limit: int | None = None
        self._said_queue_differs = False
        self._unrouted_keys: dict[str, int] = {}  # routing key -> events kept since the last line about it
        self._summary_due = 0.0

    def _ensure_channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = pika.BlockingConnection(self._parameters)
            channel = self._connection.channel()
            for name, kind, declare in (
                (EXCHANGE, "exchange", lambda ch, passive: ch.exchange_declare(EXCHANGE, "topic", passive, durable=True)),
                (UNROUTED, "exchange", lambda ch, passive: ch.exchange_declare(UNROUTED, "fanout", passive, durable=True)),
                (UNROUTED, "queue", lambda ch, passive: ch.queue_declare(
                    UNROUTED, passive, durable=True, arguments=None if passive else self._unrouted_arguments)),
            ):
                try:
                    declare(channel, False)
                except pika.exceptions.ChannelClosedByBroker as error:
                    if error.reply_code != 406:
                        raise
                    # It exists with other arguments (an alternate exchange, a queue type, ...): use it as it is.
                    channel = self._connection.channel()
                    declare(channel, True)
                    if kind == "queue":
                        self._queue_differs(error.reply_text)
                    else:
                        log.info("outbox: %s exists with other arguments, using it as it is (%s)", name,
                                 error.reply_text)
                    continue
                if kind == "queue":
                    self.unrouted_limit = self._unrouted_max_length
            channel.queue_bind(UNROUTED, UNROUTED)
            channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def _queue_differs(self, reply: str) -> None:
        self.unrouted_limit = 0
        if self._said_queue_differs:
            return
        self._said_queue_differs = True
        bound = self._unrouted_arguments
        log.warning(
            "outbox: queue %s was declared with other arguments than this relay's %s (RabbitMQ cannot change them): "
            "it is used as it is, bounded only as declared then or by a policy. To bound it without losing its events: "
            "%s. To have it declared as configured (its type included), events kept: stop the scheduler and run "
            "`fulfil queues migrate` (%s)", UNROUTED, json.dumps(bound) if bound else "(none: unbounded)",
            unrouted_policy(bound) if {k for k in bound if k != "x-queue-type"} else "(no bound configured)", reply)

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
        except pika.exceptions.UnroutableError:
            pass  # returned (no queue bound for routing_key), then confirmed: keep it below
        else:
            self._routed(routing_key)
            return
        try:
            channel.basic_publish(UNROUTED, routing_key, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            log.error("outbox: event %s (%s) was routed to no queue, not even %s; it stays unsent",
                      event_id, routing_key, UNROUTED)
            raise
        self._kept(routing_key)

    def _kept(self, routing_key: str) -> None:
        """One line the first time a routing key goes unrouted, then a summary now and then."""
        now = time.monotonic()
        if routing_key not in self._unrouted_keys:
            self._unrouted_keys[routing_key] = 0
            log.warning("outbox: no queue is bound to %s for %s; keeping such events in queue %s",
                        EXCHANGE, routing_key, UNROUTED)
            self._summary_due = self._summary_due or now + UNROUTED_SUMMARY_SECONDS
        else:
            self._unrouted_keys[routing_key] += 1
        if now >= self._summary_due:
            kept = ", ".join(f"{key} {count}" for key, count in sorted(self._unrouted_keys.items()))
            log.warning("outbox: still no queue bound to %s for %d routing key(s); events kept in %s since the "
                        "last line: %s", EXCHANGE, len(self._unrouted_keys), UNROUTED, kept)
            self._unrouted_keys = dict.fromkeys(self._unrouted_keys, 0)
            self._summary_due = now + UNROUTED_SUMMARY_SECONDS

    def _routed(self, routing_key: str) -> None:
        if routing_key in self._unrouted_keys:
            kept = self._unrouted_keys.pop(routing_key)
            log.info("outbox: events for %s reach a bound queue again (%d more kept in %s since the last line)",
                     routing_key, kept, UNROUTED)
            if not self._unrouted_keys:
                self._summary_due = 0.0

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

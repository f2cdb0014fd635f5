"""The outbox relay against real Postgres and RabbitMQ: confirmed, marked after, never lost."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.rabbitmq.outbox import EventPublisher, relay_outbox
from fulfilment.rabbitmq.queues import EXCHANGE, UNROUTED
from models import OutboxEvent
from tests.support import servers
from tests.support.events import EventListener
from tests.support.factories import stored_purchase


def ticket_key():  # type: ignore[no-untyped-def]
    """The scheduler's key: events of ticket-issuing partners in the shared test database are sealed."""
    from fulfilment.settings import get_settings

    return get_settings().ticket_key


@pytest.fixture
def listener(configured: dict[str, str]) -> Iterator[EventListener]:
    consumer = EventListener(configured["BROKER_URL"])
    yield consumer
    consumer.close()


@pytest.fixture
def publisher(configured: dict[str, str]) -> Iterator[EventPublisher]:
    relay = EventPublisher(configured["BROKER_URL"])
    yield relay
    relay.close()


def unpublished(ids: list[uuid.UUID]) -> set[uuid.UUID]:
    with session_scope() as session:
        return set(session.scalars(select(OutboxEvent.id).where(OutboxEvent.purchase_id.in_(ids),
                                                                 OutboxEvent.published_at.is_(None))))


def drain_relay(publisher: EventPublisher) -> None:
    while relay_outbox(publisher, batch_size=100, ticket_key=ticket_key()):
        pass


def test_events_reach_a_bound_consumer_with_their_ids(listener: EventListener, publisher: EventPublisher) -> None:
    drain_relay(publisher)  # older events of other tests
    listener.drain()
    listener.received.clear()
    ids = [stored_purchase() for _ in range(3)]
    drain_relay(publisher)
    received = {m["message_id"]: m for m in listener.drain(until=3)}
    with session_scope() as session:
        events = session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id.in_(ids))).all()
    assert len(events) == 3 and unpublished(ids) == set()
    for event in events:
        message = received[str(event.id)]
        assert message["routing_key"] == "purchase.received" and message["persistent"]
        assert message["body"] == event.payload and message["body"]["event_id"] == str(event.id)


class CrashAfterPublishing(EventPublisher):
    """Publishes for real, then dies before the relay can mark anything sent."""

    def __init__(self, url: str, survive: int) -> None:
        super().__init__(url)
        self.survive = survive

    def publish(self, event_id, routing_key, payload):  # type: ignore[no-untyped-def]
        super().publish(event_id, routing_key, payload)
        self.survive -= 1
        if self.survive == 0:
            raise SystemExit("killed between publish and mark-sent")


def test_a_relay_killed_between_publish_and_mark_sent_repeats_events_with_the_same_ids(
    listener: EventListener, publisher: EventPublisher, configured: dict[str, str]
) -> None:
    drain_relay(publisher)
    listener.drain()
    listener.received.clear()
    ids = [stored_purchase() for _ in range(4)]
    crashing = CrashAfterPublishing(configured["BROKER_URL"], survive=3)
    with pytest.raises(SystemExit):
        relay_outbox(crashing, batch_size=100, ticket_key=ticket_key())
    crashing.close()
    # Nothing was marked sent: the transaction died with the relay.
    assert len(unpublished(ids)) == 4
    drain_relay(publisher)
    assert unpublished(ids) == set()

    messages = listener.drain(until=7)
    with session_scope() as session:
        event_ids = {str(e) for e in session.scalars(select(OutboxEvent.id).where(OutboxEvent.purchase_id.in_(ids)))}
    seen = [m["message_id"] for m in messages if m["message_id"] in event_ids]
    assert set(seen) == event_ids  # none lost
    assert len(seen) == 7  # three delivered twice, with the same ids
    for message in messages:
        assert message["body"]["event_id"] == message["message_id"]


def test_a_broker_failure_keeps_events_unsent_for_the_next_run(publisher: EventPublisher) -> None:
    drain_relay(publisher)
    purchase_id = stored_purchase()
    broken = EventPublisher("amqp://fulfil:wrong@127.0.0.1:1/%2F")
    # Connection refused: nothing confirmed, nothing marked.
    assert relay_outbox(broken, batch_size=100, ticket_key=ticket_key()) == 0
    assert len(unpublished([purchase_id])) == 1
    drain_relay(publisher)
    assert unpublished([purchase_id]) == set()


def test_published_events_are_not_sent_again(publisher: EventPublisher, listener: EventListener) -> None:
    stored_purchase()
    drain_relay(publisher)
    listener.drain()
    listener.received.clear()
    assert relay_outbox(publisher, batch_size=100, ticket_key=ticket_key()) == 0
    assert listener.drain(timeout=1) == []


# Events no queue is bound for: kept in `fulfilment.events.unrouted`, marked sent only once kept.
# Each test gets a vhost of its own, so that no other test's queue is bound to the exchange.


@pytest.fixture
def bare_vhost(configured: dict[str, str]) -> Iterator[servers.TestVhost]:
    created = servers.create_vhost("fulfil_test_unrouted")
    try:
        yield created
    finally:
        servers.delete_vhost(created)


@pytest.fixture
def bare_publisher(bare_vhost: servers.TestVhost, publisher: EventPublisher) -> Iterator[EventPublisher]:
    drain_relay(publisher)  # other tests' events go to the session's vhost, not to this one
    relay = EventPublisher(bare_vhost.url)
    yield relay
    relay.close()


def broker_channel(url: str) -> pika.adapters.blocking_connection.BlockingChannel:
    return pika.BlockingConnection(pika.URLParameters(url)).channel()


def take_unrouted(url: str) -> dict[str, dict[str, Any]]:
    """Everything in the unrouted queue, by message_id (none if the queue does not exist)."""
    channel = broker_channel(url)
    taken: dict[str, dict[str, Any]] = {}
    try:
        channel.queue_declare(UNROUTED, passive=True)
        while True:
            method, properties, body = channel.basic_get(UNROUTED, auto_ack=True)
            if method is None:
                break
            taken[properties.message_id] = {"routing_key": method.routing_key, "persistent": properties.delivery_mode == 2,
                                            "body": json.loads(body)}
    except pika.exceptions.ChannelClosedByBroker as error:
        assert error.reply_code == 404, error
    finally:
        channel.connection.close()
    return taken


def event_of(purchase_id: uuid.UUID) -> OutboxEvent:
    with session_scope() as session:
        return session.scalars(select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id)).one()


def test_events_no_queue_is_bound_for_are_kept_in_the_unrouted_queue(
    bare_vhost: servers.TestVhost, bare_publisher: EventPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    purchase_id = stored_purchase()
    with caplog.at_level(logging.WARNING):
        drain_relay(bare_publisher)
    event = event_of(purchase_id)
    assert unpublished([purchase_id]) == set()
    kept = take_unrouted(bare_vhost.url)[str(event.id)]
    assert kept == {"routing_key": "purchase.received", "persistent": True, "body": event.payload}
    assert f"no queue is bound to {EXCHANGE} for purchase.received" in caplog.text
    # One warning per routing key, not pika's line per returned message (issue 8's log flood).
    assert "Published message was returned" not in caplog.text

    # A consumer declaring the exchange as before still can (no arguments changed), and once
    # its queue is bound it gets the events: nothing more goes to the unrouted queue.
    listener = EventListener(bare_vhost.url)
    try:
        second = stored_purchase()
        drain_relay(bare_publisher)
        assert [m["message_id"] for m in listener.drain(until=1)] == [str(event_of(second).id)]
    finally:
        listener.close()
    assert take_unrouted(bare_vhost.url) == {}


def test_an_event_no_queue_takes_stays_unsent_until_it_is_kept(
    bare_vhost: servers.TestVhost, bare_publisher: EventPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    stored_purchase()
    drain_relay(bare_publisher)  # connected: the unrouted exchange and queue are declared
    channel = broker_channel(bare_vhost.url)
    channel.queue_delete(UNROUTED)  # an operator removed it: unrouted events have nowhere to go
    channel.connection.close()
    purchase_id = stored_purchase()
    event_id = event_of(purchase_id).id
    with caplog.at_level(logging.ERROR, logger="fulfilment.rabbitmq.outbox"):
        assert relay_outbox(bare_publisher, batch_size=100, ticket_key=ticket_key()) == 0
    assert unpublished([purchase_id]) == {event_id}
    assert any(r.levelno == logging.ERROR and str(event_id) in r.getMessage() for r in caplog.records)
    # The next run reconnects, declares the unrouted queue again and keeps the event there.
    drain_relay(bare_publisher)
    assert unpublished([purchase_id]) == set()
    assert str(event_id) in take_unrouted(bare_vhost.url)


@pytest.mark.parametrize("set_by", ["exchange argument", "policy"])
def test_an_alternate_exchange_set_by_an_operator_keeps_them_too(
    bare_vhost: servers.TestVhost, bare_publisher: EventPublisher, caplog: pytest.LogCaptureFixture, set_by: str
) -> None:
    if set_by == "policy":  # as the README says
        servers.rabbitmqctl("set_policy", "-p", bare_vhost.name, "--apply-to", "exchanges", "fulfilment-events-unrouted",
                            r"^fulfilment\.events$", json.dumps({"alternate-exchange": UNROUTED}))
    else:  # declared so before this relay ran: it must use the exchange as it is (no 406 loop)
        channel = broker_channel(bare_vhost.url)
        channel.exchange_declare(EXCHANGE, "topic", durable=True, arguments={"alternate-exchange": UNROUTED})
        channel.connection.close()
    purchase_id = stored_purchase()
    with caplog.at_level(logging.WARNING, logger="fulfilment.rabbitmq.outbox"):
        drain_relay(bare_publisher)
    assert unpublished([purchase_id]) == set()
    assert str(event_of(purchase_id).id) in take_unrouted(bare_vhost.url)
    assert "no queue is bound" not in caplog.text  # RabbitMQ routed it there: nothing was returned


def test_sealed_ticket_tokens_are_opened_only_as_the_event_is_published() -> None:
    """A ticket token waits in the outbox sealed; a relay without the key publishes nothing rather than
    a token it cannot open (or events out of order), and says why."""
    from pydantic import SecretStr

    from fulfilment import ticket_crypto

    key = ticket_key()
    assert key is not None
    sealed = {"type": "purchase.tickets_issued", "tickets": [ticket_crypto.seal_ticket(key, {"barcode": "1"}, "tok-1")]}
    assert "tok-1" not in str(sealed) and sealed["tickets"][0]["token"] is None
    assert ticket_crypto.open_event(key, sealed)["tickets"][0]["token"] == "tok-1"
    with pytest.raises(ticket_crypto.TicketKeyError):
        ticket_crypto.open_event(None, sealed)
    with pytest.raises(ticket_crypto.TicketKeyError):
        ticket_crypto.open_event(SecretStr(ticket_crypto.new_key()), sealed)
    assert ticket_crypto.open_event(None, {"type": "purchase.quoted"}) == {"type": "purchase.quoted"}

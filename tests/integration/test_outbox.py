"""The outbox relay against real Postgres and RabbitMQ: confirmed, marked after, never lost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.outbox import EventPublisher, relay_outbox
from models import OutboxEvent
from tests.support.events import EventListener
from tests.support.factories import stored_purchase


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
    while relay_outbox(publisher, batch_size=100):
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
        relay_outbox(crashing, batch_size=100)
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
    assert relay_outbox(broken, batch_size=100) == 0  # connection refused: nothing confirmed, nothing marked
    assert len(unpublished([purchase_id])) == 1
    drain_relay(publisher)
    assert unpublished([purchase_id]) == set()


def test_published_events_are_not_sent_again(publisher: EventPublisher, listener: EventListener) -> None:
    stored_purchase()
    drain_relay(publisher)
    listener.drain()
    listener.received.clear()
    assert relay_outbox(publisher, batch_size=100) == 0
    assert listener.drain(timeout=1) == []

"""Rejections reach the sender: a refused request publishes `request.rejected` through the outbox.

The event is written in the transaction that records the rejection, validates against
docs/schemas/request-rejected.schema.json, never carries the raw body, and reaches a consumer
bound to the events exchange (real RabbitMQ).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.rabbitmq.outbox import EventPublisher, relay_outbox
from fulfilment.settings import get_settings
from fulfilment.steps import intake
from models import OutboxEvent, RejectedRequest
from tests.support.events import EventListener
from tests.support.factories import request
from tests.support.servers import REPO

SCHEMA = json.loads((REPO / "docs" / "schemas" / "request-rejected.schema.json").read_text())
CHECKER = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def ticket_key():  # type: ignore[no-untyped-def]
    """The scheduler's key: events of ticket-issuing partners in the shared test database are sealed."""
    from fulfilment.settings import get_settings

    return get_settings().ticket_key


@pytest.fixture
def listener(configured: dict[str, str]) -> Iterator[EventListener]:
    consumer = EventListener(configured["BROKER_URL"], binding="request.rejected")
    yield consumer
    consumer.close()


@pytest.fixture
def publisher(configured: dict[str, str]) -> Iterator[EventPublisher]:
    relay = EventPublisher(configured["BROKER_URL"])
    while relay_outbox(relay, batch_size=500, ticket_key=ticket_key()):  # older events of other tests
        pass
    yield relay
    relay.close()


def rejected(raw: Any) -> tuple[RejectedRequest, OutboxEvent]:
    with pytest.raises(intake.InvalidPurchaseRequest) as raised:
        intake.accept(raw, settings=get_settings())
    with session_scope() as session:
        row = session.scalars(select(RejectedRequest).order_by(RejectedRequest.id.desc())).first()
        assert row is not None and row.reason_code == raised.value.code
        event = session.scalars(select(OutboxEvent).where(OutboxEvent.rejection_id == row.id)).one()
    return row, event


def test_an_invalid_request_publishes_request_rejected_without_its_body(
    listener: EventListener, publisher: EventPublisher
) -> None:
    body = request(quantity=-1, metadata={"marker": "raw-body-marker-5521"})
    row, event = rejected(body)
    assert event.routing_key == "request.rejected" and event.purchase_id is None and event.transition_id is None
    CHECKER.validate(event.payload)
    assert event.payload == {
        "event_id": str(event.id), "type": "request.rejected", "occurred_at": event.payload["rejected_at"],
        "rejection_id": row.id, "request_id": body["request_id"], "purchase_id": None,
        "reason_code": "INVALID_REQUEST", "reason": row.reason, "rejected_at": event.payload["rejected_at"],
        "message_id": None,
    }
    assert "quantity" in event.payload["reason"] and "raw-body-marker-5521" not in json.dumps(event.payload)

    while relay_outbox(publisher, batch_size=500, ticket_key=ticket_key()):
        pass
    [message] = [m for m in listener.drain(until=1) if m["message_id"] == str(event.id)]
    assert message["routing_key"] == "request.rejected" and message["persistent"] and message["body"] == event.payload


def test_a_conflicting_request_id_names_the_purchase_that_stands() -> None:
    body = request()
    purchase_id = intake.accept(body, settings=get_settings())
    _, event = rejected({**body, "quantity": body["quantity"] + 1})
    CHECKER.validate(event.payload)
    assert event.payload["reason_code"] == "REQUEST_ID_CONFLICT"
    assert event.payload["purchase_id"] == str(purchase_id) and event.payload["request_id"] == body["request_id"]
    assert "quantity" in event.payload["reason"]


def test_a_request_that_is_not_even_an_object_is_reported_too() -> None:
    _, event = rejected(["not", "an", "object"])
    CHECKER.validate(event.payload)
    assert event.payload["request_id"] is None and event.payload["reason_code"] == "INVALID_REQUEST"

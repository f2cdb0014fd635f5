"""Intake against real Postgres: validation with reasons, idempotency by request_id."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from fulfilment.db import session_scope
from fulfilment.requests import purchase_id_for
from fulfilment.settings import get_settings
from fulfilment.steps import intake
from models import Purchase, RejectedRequest
from tests.support.factories import request


def rejections(request_id: str) -> list[RejectedRequest]:
    with session_scope() as session:
        return list(session.scalars(select(RejectedRequest).where(RejectedRequest.request_id == request_id)))


def test_the_same_request_id_twice_makes_one_purchase() -> None:
    body = request()
    first = intake.accept(body, settings=get_settings())
    second = intake.accept(dict(body), settings=get_settings())
    assert first == purchase_id_for(body["request_id"])
    assert second is None
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(Purchase.request_id == body["request_id"])) == 1
    assert rejections(body["request_id"]) == []


def test_a_reused_request_id_with_other_content_keeps_the_first_and_records_the_conflict() -> None:
    body = request(quantity=2)
    intake.accept(body, settings=get_settings())
    with pytest.raises(intake.InvalidPurchaseRequest) as raised:
        intake.accept({**body, "quantity": 4}, settings=get_settings())
    assert raised.value.code == "REQUEST_ID_CONFLICT" and "quantity" in raised.value.reason
    with session_scope() as session:
        purchase = session.scalars(select(Purchase).where(Purchase.request_id == body["request_id"])).one()
    assert purchase.quantity == 2
    [rejected] = rejections(body["request_id"])
    assert rejected.reason_code == "REQUEST_ID_CONFLICT"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": -3}, "quantity"),
        ({"quantity": "2"}, "quantity"),
        ({"delivery_type": "carrier_pigeon"}, "delivery_type"),
        ({"delivery_deadline": "2030-01-01T10:00:00"}, "naive"),
        ({"delivery_deadline": "2001-01-01T10:00:00Z"}, "past"),
        ({"surprise": 1}, "surprise: unknown field"),
        ({"event_id": None, "section_name": None}, "event_id: Field required"),
        ({"max_unit_price": -1}, "max_unit_price"),
        ({"section_name": "x" * 5000}, "section_name"),
    ],
)
def test_bad_requests_are_recorded_with_a_specific_reason(change: dict, expected: str) -> None:
    body = request(**change)
    if change.get("event_id", "") is None:
        body.pop("event_id", None)
    with pytest.raises(intake.InvalidPurchaseRequest) as raised:
        intake.accept(body, settings=get_settings())
    assert expected in raised.value.reason
    [rejected] = rejections(body["request_id"])
    assert rejected.reason_code == "INVALID_REQUEST" and expected in rejected.reason
    with session_scope() as session:
        assert session.get(Purchase, purchase_id_for(body["request_id"])) is None


@pytest.mark.parametrize("raw", [None, [], "a string", 42])
def test_a_body_that_is_not_an_object_is_rejected(raw: object) -> None:
    with pytest.raises(intake.InvalidPurchaseRequest, match="JSON object"):
        intake.accept(raw, settings=get_settings())

"""POST /v1/quotes: seed 002 shape, every error code, best-available rows, no reservation."""

from __future__ import annotations

import re

import pytest
from sandbox_testkit import Sandbox, assert_error

from fulfilment.partners.sandbox_kit.clock import parse_iso_utc


def test_quote_success_matches_seed_002(sandbox: Sandbox) -> None:
    r = sandbox.quote(event_id="5496123", section_name="101", row_name="A", quantity=2)
    assert r.status_code == 201
    body = r.json()
    assert body["success"] is True and set(body["meta"]) == {"request_id", "timestamp"}
    data = body["data"]
    assert set(data) == {"quote_id", "status", "expires_at", "event", "seats", "pricing"}
    assert re.fullmatch(r"qt_[0-9a-f]{8}", data["quote_id"])
    assert data["status"] == "active"
    assert (parse_iso_utc(data["expires_at"]) - sandbox.clock.now).total_seconds() == 3600
    assert data["event"] == {
        "event_id": "5496123",
        "event_name": "New England Patriots vs. Buffalo Bills",
        "event_datetime_local": data["event"]["event_datetime_local"],
        "event_timezone": "America/New_York",
    }
    assert data["seats"] == {"section_name": "101", "section_name_display": "Section 101", "row_name": "A",
                             "row_name_display": "Row A", "quantity": 2}
    assert data["pricing"] == {"unit_price": 175.0, "subtotal": 350.0, "currency": "USD"}


def test_fractional_quote_ttl(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=1.5)
    data = sandbox.quote().json()["data"]
    assert (parse_iso_utc(data["expires_at"]) - sandbox.clock.now).total_seconds() == 1.5


def test_pricing_per_section(sandbox: Sandbox) -> None:
    data = sandbox.quote(event_id="5496124", section_name="301", row_name="C", quantity=3).json()["data"]
    assert data["pricing"] == {"unit_price": 102.0, "subtotal": 306.0, "currency": "USD"}  # 85 x 1.2


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, {"event_id", "section_name", "quantity"}),
        ({"event_id": 5496123, "section_name": "101", "quantity": 2}, {"event_id"}),
        ({"event_id": "5496123", "section_name": 101, "quantity": 2}, {"section_name"}),
        ({"event_id": "5496123", "section_name": "101", "quantity": "2"}, {"quantity"}),
        ({"event_id": "5496123", "section_name": "101", "quantity": 2.5}, {"quantity"}),
        ({"event_id": "5496123", "section_name": "101", "quantity": True}, {"quantity"}),
        ({"event_id": "5496123", "section_name": "101", "quantity": 0}, {"quantity"}),
        ({"event_id": "5496123", "section_name": "101", "row_name": 1, "quantity": 1}, {"row_name"}),
    ],
)
def test_validation_errors(sandbox: Sandbox, body: dict, fields: set[str]) -> None:
    error = assert_error(sandbox.post("/v1/quotes", body), 400, "VALIDATION_ERROR")
    assert {e["field"] for e in error["details"]["errors"]} == fields


def test_non_json_body(sandbox: Sandbox) -> None:
    r = sandbox.client.post("/v1/quotes", content=b"{oops", headers=sandbox.headers())
    assert_error(r, 400, "VALIDATION_ERROR")


def test_null_row_name_means_best_available(sandbox: Sandbox) -> None:
    r = sandbox.post("/v1/quotes", {"event_id": "5496123", "section_name": "101", "row_name": None, "quantity": 1})
    assert r.status_code == 201 and r.json()["data"]["seats"]["row_name"] == "A"


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"event_id": "1"}, 404, "EVENT_NOT_FOUND"),
        ({"event_id": "5490000"}, 422, "EVENT_EXPIRED"),
        ({"section_name": "999"}, 404, "SECTION_NOT_FOUND"),
        ({"row_name": "Z"}, 404, "SECTION_NOT_FOUND"),
        ({"event_id": "5490001", "section_name": "101", "row_name": "B", "quantity": 1}, 422, "NO_INVENTORY_AVAILABLE"),
        ({"event_id": "5490001", "section_name": "102", "row_name": "A", "quantity": 1}, 422, "NO_INVENTORY_AVAILABLE"),
        ({"event_id": "5490001", "section_name": "102", "row_name": None, "quantity": 1}, 422, "NO_INVENTORY_AVAILABLE"),
        ({"event_id": "5490001", "section_name": "101", "row_name": "A", "quantity": 3}, 422, "INSUFFICIENT_QUANTITY"),
        ({"event_id": "5490001", "section_name": "101", "row_name": None, "quantity": 3}, 422, "INSUFFICIENT_QUANTITY"),
        ({"quantity": 21}, 422, "INSUFFICIENT_QUANTITY"),
    ],
)
def test_business_errors(sandbox: Sandbox, kwargs: dict, status: int, code: str) -> None:
    assert_error(sandbox.quote(**kwargs), status, code)


def test_insufficient_quantity_details(sandbox: Sandbox) -> None:
    error = assert_error(sandbox.quote(event_id="5490001", row_name="A", quantity=3), 422, "INSUFFICIENT_QUANTITY")
    assert error["details"]["requested"] == 3 and error["details"]["available"] == 2


def test_payment_not_configured(sandbox: Sandbox) -> None:
    assert_error(sandbox.quote(partner="partner-nopay"), 403, "PAYMENT_NOT_CONFIGURED")
    # Payment is checked before the body: even an invalid body gets 403.
    assert_error(sandbox.post("/v1/quotes", {}, partner="partner-nopay"), 403, "PAYMENT_NOT_CONFIGURED")


def test_payout_method_code_variant(make_sandbox) -> None:
    sandbox = make_sandbox(payment_error_code="PAYOUT_METHOD_NOT_CONFIGURED")
    assert_error(sandbox.quote(partner="partner-nopay"), 403, "PAYOUT_METHOD_NOT_CONFIGURED")


def test_quote_requires_a_token(sandbox: Sandbox) -> None:
    r = sandbox.client.post("/v1/quotes", json={"event_id": "5496123", "section_name": "101", "quantity": 1})
    assert_error(r, 401, "UNAUTHORIZED")


def test_best_available_row_is_the_front_most_that_fits(make_sandbox) -> None:
    sandbox = make_sandbox(seats_per_row=4)
    assert sandbox.quote(row_name=None, quantity=3).json()["data"]["seats"]["row_name"] == "A"
    # Sell 2 of row A's 4 seats: a pair still fits in A, a trio moves to B.
    assert sandbox.order(sandbox.quote_id(row_name="A", quantity=2)).status_code == 201
    assert sandbox.quote(row_name=None, quantity=2).json()["data"]["seats"]["row_name"] == "A"
    assert sandbox.quote(row_name=None, quantity=3).json()["data"]["seats"]["row_name"] == "B"
    # More than any row holds.
    assert_error(sandbox.quote(row_name=None, quantity=5), 422, "INSUFFICIENT_QUANTITY")


def test_quotes_reserve_nothing(sandbox: Sandbox) -> None:
    # Two partners each quote the whole tiny row; both quotes succeed.
    first = sandbox.quote_id(event_id="5490001", row_name="A", quantity=2)
    second = sandbox.quote_id(partner="partner-b", event_id="5490001", row_name="A", quantity=2)
    assert first != second
    rows = sandbox.get("/v1/events/5490001/sections/101/rows").json()["data"]
    assert [r["row_name"] for r in rows] == ["A"]  # still available: quoting took nothing


def test_quote_ids_are_unique(sandbox: Sandbox) -> None:
    ids = {sandbox.quote_id(quantity=1) for _ in range(30)}
    assert len(ids) == 30

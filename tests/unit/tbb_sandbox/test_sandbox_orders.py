"""POST /v1/orders, GET /v1/orders/{id}, GET /v1/orders?quote_id=: shapes, errors, inventory."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from sandbox_testkit import Sandbox, assert_error

from fulfilment.partners.sandbox_kit.clock import parse_iso_utc
from fulfilment.partners.tbb.sandbox.accounts import DEFAULT_PARTNERS
from fulfilment.partners.tbb.sandbox.store import OrderRequest


def test_order_success_matches_seed_001(sandbox: Sandbox) -> None:
    quote_id = sandbox.quote_id(quantity=2)
    r = sandbox.order(quote_id)
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert set(data) == {"order_id", "status", "quote_id", "event", "seats", "pricing", "delivery",
                         "created_at", "updated_at"}
    assert re.fullmatch(r"TBB-\d{8}-[A-Z0-9]{4}", data["order_id"])
    assert data["order_id"][4:12] == sandbox.clock.now.strftime("%Y%m%d")
    assert data["status"] == "awaiting_transfer"
    assert data["quote_id"] == quote_id
    assert set(data["event"]) == {"event_id", "event_name", "event_datetime_local", "event_timezone"}
    assert data["seats"] == {"section_name_display": "Section 101", "row_name_display": "Row A",
                             "quantity": 2, "seat_range": "1-2"}
    assert data["pricing"] == {"unit_price": 175.0, "subtotal": 350.0}
    assert data["delivery"]["delivery_type"] == "mobile_transfer"
    assert data["delivery"]["delivery_deadline"] == sandbox.deadline()
    assert re.fullmatch(r"transfer-inbox-[a-z0-9]+@ticketbuyback\.com", data["delivery"]["transfer_email"])
    assert data["created_at"] == data["updated_at"]
    assert parse_iso_utc(data["created_at"]) == sandbox.clock.now


def test_orders_take_consecutive_seats(sandbox: Sandbox) -> None:
    ranges = [sandbox.order(sandbox.quote_id(quantity=q)).json()["data"]["seats"]["seat_range"] for q in (2, 1, 3)]
    assert ranges == ["1-2", "3", "4-6"]


@pytest.mark.parametrize("delivery_type", ["mobile_transfer", "mobile_qr", "pdf"])
def test_delivery_types(sandbox: Sandbox, delivery_type: str) -> None:
    r = sandbox.order(sandbox.quote_id(), delivery_type=delivery_type)
    assert r.status_code == 201 and r.json()["data"]["delivery"]["delivery_type"] == delivery_type


def test_deadline_with_offset_is_normalised_to_utc(sandbox: Sandbox) -> None:
    local = (sandbox.clock.now + timedelta(days=1)).astimezone().replace(microsecond=0)
    r = sandbox.order(sandbox.quote_id(), deadline=local.isoformat())
    assert r.status_code == 201
    assert parse_iso_utc(r.json()["data"]["delivery"]["delivery_deadline"]) == local
    assert r.json()["data"]["delivery"]["delivery_deadline"].endswith("Z")


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, {"quote_id", "delivery_type", "delivery_deadline"}),
        ({"quote_id": "qt_x", "delivery_type": "carrier_pigeon", "delivery_deadline": "2099-01-01T00:00:00Z"},
         {"delivery_type"}),
        ({"quote_id": "qt_x", "delivery_type": "pdf", "delivery_deadline": "tomorrow"}, {"delivery_deadline"}),
        ({"quote_id": "qt_x", "delivery_type": "pdf", "delivery_deadline": "2099-01-01T00:00:00"}, {"delivery_deadline"}),
        ({"quote_id": 7, "delivery_type": "pdf", "delivery_deadline": "2099-01-01T00:00:00Z"}, {"quote_id"}),
    ],
)
def test_validation_errors(sandbox: Sandbox, body: dict, fields: set[str]) -> None:
    error = assert_error(sandbox.post("/v1/orders", body), 400, "VALIDATION_ERROR")
    assert {e["field"] for e in error["details"]["errors"]} == fields


def test_quote_not_found(sandbox: Sandbox) -> None:
    error = assert_error(sandbox.order("qt_00000000"), 404, "QUOTE_NOT_FOUND")
    assert error["details"] == {"quote_id": "qt_00000000"}


def test_quote_of_another_partner_is_forbidden(sandbox: Sandbox) -> None:
    quote_id = sandbox.quote_id(partner="partner-a")
    assert_error(sandbox.order(quote_id, partner="partner-b"), 403, "FORBIDDEN")
    # Nothing was consumed: the owner can still use it.
    assert sandbox.order(quote_id, partner="partner-a").status_code == 201


def test_quote_expired(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=60)
    quote = sandbox.quote().json()["data"]
    sandbox.clock.advance(60)
    error = assert_error(sandbox.order(quote["quote_id"]), 422, "QUOTE_EXPIRED")
    assert error["details"] == {"quote_id": quote["quote_id"], "expired_at": quote["expires_at"]}


def test_quote_still_valid_just_before_expiry(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=1.5)
    quote_id = sandbox.quote_id()
    sandbox.clock.advance(1.499)
    assert sandbox.order(quote_id).status_code == 201


def test_quote_already_consumed(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=60)
    quote_id = sandbox.quote_id()
    assert sandbox.order(quote_id).status_code == 201
    error = assert_error(sandbox.order(quote_id), 422, "QUOTE_ALREADY_CONSUMED")
    assert error["details"]["quote_id"] == quote_id
    # Consumed wins over expired: the retrying client learns its first attempt succeeded.
    sandbox.clock.advance(61)
    assert_error(sandbox.order(quote_id), 422, "QUOTE_ALREADY_CONSUMED")


def test_invalid_delivery_deadline(sandbox: Sandbox) -> None:
    event = sandbox.get("/v1/events/5496123").json()["data"]
    quote_id = sandbox.quote_id()
    assert_error(sandbox.order(quote_id, deadline=event["event_datetime_utc"]), 422, "INVALID_DELIVERY_DEADLINE")
    after = (parse_iso_utc(event["event_datetime_utc"]) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_error(sandbox.order(quote_id, deadline=after), 422, "INVALID_DELIVERY_DEADLINE")
    past = (sandbox.clock.now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_error(sandbox.order(quote_id, deadline=past), 422, "INVALID_DELIVERY_DEADLINE")
    assert sandbox.order(quote_id).status_code == 201  # the failures consumed nothing


def test_payment_not_configured(sandbox: Sandbox) -> None:
    assert_error(sandbox.order("qt_00000000", partner="partner-nopay"), 403, "PAYMENT_NOT_CONFIGURED")


def test_order_requires_a_token(sandbox: Sandbox) -> None:
    assert_error(sandbox.client.post("/v1/orders", json={}), 401, "UNAUTHORIZED")


def test_orders_consume_inventory_quotes_do_not(sandbox: Sandbox) -> None:
    first = sandbox.quote_id(event_id="5490001", row_name="A", quantity=2)
    second = sandbox.quote_id(partner="partner-b", event_id="5490001", row_name="A", quantity=2)
    assert sandbox.order(first).json()["data"]["seats"]["seat_range"] == "1-2"
    assert_error(sandbox.order(second, partner="partner-b"), 422, "NO_INVENTORY_AVAILABLE")
    assert_error(sandbox.quote(event_id="5490001", row_name="A", quantity=1), 422, "NO_INVENTORY_AVAILABLE")
    # The failed order did not consume its quote.
    quote = sandbox.client.get("/admin/quotes", params={"quote_id": second}).json()["quotes"][0]
    assert quote["consumed"] is False


def test_insufficient_quantity_at_order_time(sandbox: Sandbox) -> None:
    pair = sandbox.quote_id(event_id="5490001", row_name="A", quantity=2)
    single = sandbox.quote_id(partner="partner-b", event_id="5490001", row_name="A", quantity=1)
    assert sandbox.order(single, partner="partner-b").json()["data"]["seats"]["seat_range"] == "1"
    error = assert_error(sandbox.order(pair), 422, "INSUFFICIENT_QUANTITY")
    assert error["details"]["available"] == 1


def test_get_order(sandbox: Sandbox) -> None:
    created = sandbox.order(sandbox.quote_id()).json()["data"]
    r = sandbox.get(f"/v1/orders/{created['order_id']}")
    assert r.status_code == 200
    assert r.json()["data"] == created
    assert_error(sandbox.get(f"/v1/orders/{created['order_id']}", partner="partner-b"), 403, "FORBIDDEN")
    assert_error(sandbox.get("/v1/orders/TBB-20990101-ZZZZ"), 404, "ORDER_NOT_FOUND")
    assert_error(sandbox.client.get(f"/v1/orders/{created['order_id']}"), 401, "UNAUTHORIZED")


def test_list_orders_by_quote(sandbox: Sandbox) -> None:
    quote_id = sandbox.quote_id()
    assert sandbox.get("/v1/orders", params={"quote_id": quote_id}).json()["data"] == []
    created = sandbox.order(quote_id).json()["data"]
    other = sandbox.order(sandbox.quote_id()).json()["data"]
    r = sandbox.get("/v1/orders", params={"quote_id": quote_id})
    body = r.json()
    assert r.status_code == 200 and body["success"] is True
    assert body["data"] == [created]
    assert body["pagination"] == {"total": 1, "limit": 20, "offset": 0, "has_more": False}
    # Another partner never sees it.
    r = sandbox.get("/v1/orders", params={"quote_id": quote_id}, partner="partner-b")
    assert r.json()["data"] == [] and r.json()["pagination"]["total"] == 0
    # Without quote_id: all of this partner's orders, paginated, oldest first.
    r = sandbox.get("/v1/orders", params={"limit": 1})
    assert [o["order_id"] for o in r.json()["data"]] == [created["order_id"]]
    assert r.json()["pagination"] == {"total": 2, "limit": 1, "offset": 0, "has_more": True}
    r = sandbox.get("/v1/orders", params={"limit": 1, "offset": 1})
    assert [o["order_id"] for o in r.json()["data"]] == [other["order_id"]]
    assert_error(sandbox.get("/v1/orders", params={"limit": 500}), 400, "VALIDATION_ERROR")


def test_admin_records_quote_expiry_next_to_order_creation(make_sandbox) -> None:
    sandbox = make_sandbox(quote_ttl_seconds=10)
    quote = sandbox.quote().json()["data"]
    sandbox.clock.advance(9)
    order = sandbox.order(quote["quote_id"]).json()["data"]
    admin = sandbox.client.get("/admin/orders", params={"quote_id": quote["quote_id"]}).json()
    assert admin["count"] == 1
    recorded = admin["orders"][0]
    assert recorded["partner"] == "partner-a"
    assert recorded["quote_expires_at"] == quote["expires_at"]
    assert recorded["created_at"] == order["created_at"]
    assert parse_iso_utc(recorded["created_at"]) < parse_iso_utc(recorded["quote_expires_at"])
    assert recorded["created_on_expired_quote"] is False
    assert sandbox.client.get("/admin/stats").json()["orders_on_expired_quote"] == 0


def test_concurrent_orders_on_one_quote_succeed_once(sandbox: Sandbox) -> None:
    """The store is the atomicity boundary: hammer it from threads directly."""
    state = sandbox.state
    account = next(p for p in DEFAULT_PARTNERS if p.client_id == "partner-a")
    quote_id = sandbox.quote_id()
    request = OrderRequest(quote_id, "mobile_transfer", sandbox.clock.now + timedelta(days=1))
    results: list[str] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        try:
            state.store.create_order(account, request)
            results.append("ok")
        except Exception as exc:  # noqa: BLE001 - we classify below
            results.append(getattr(exc, "code", repr(exc)))

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1
    assert results.count("QUOTE_ALREADY_CONSUMED") == 15
    assert sandbox.client.get("/admin/orders", params={"quote_id": quote_id}).json()["count"] == 1


def test_quote_expired_with_real_time_tiny_ttl() -> None:
    import time

    from sandbox_testkit import FakeClock
    from starlette.testclient import TestClient

    from fulfilment.partners.tbb.sandbox import SandboxConfig, create_app

    client = TestClient(create_app(SandboxConfig(quote_ttl_seconds=0.2)))
    sandbox = Sandbox(client, FakeClock())  # FakeClock only used for deadlines here
    quote_id = sandbox.quote_id()
    time.sleep(0.25)
    error = assert_error(sandbox.order(quote_id), 422, "QUOTE_EXPIRED")
    assert error["details"]["quote_id"] == quote_id
    assert client.get("/admin/stats").json()["orders_on_expired_quote"] == 0

"""The TM sandbox after the purchase, in process: order management (SafeTix, barcode-only, delivery
delay), unredeemed orders and SecureRender (rotating tokens, x-user-id, per-ticket errors).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support.tm_sandbox import (
    APIKEY,
    BARCODE_EVENT,
    DELAY_EVENT,
    DEVICE,
    TEST_EVENT,
    InProcess,
    reserve_body,
)


@pytest.fixture
def tm() -> Iterator[InProcess]:
    sandbox = InProcess()
    yield sandbox
    sandbox.close()


def _tickets(tm: InProcess, order_token: str, device: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    response = tm.partner.order(order_token, device)
    assert response.status_code == 200, response.text
    tickets: list[dict[str, Any]] = response.json()["tickets"]
    return tickets


def _render_request(event_id: str, ticket: dict[str, Any]) -> dict[str, Any]:
    return {"eventId": event_id, "section": ticket["section"], "row": ticket["row"], "seat": ticket["seat_name"],
            "barcode": ticket["barcode_id"]}


def _decoded(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(token))
    return decoded


# --- order management -------------------------------------------------------------------------------


def test_order_management_issues_safetix_tokens(tm: InProcess) -> None:
    order = tm.partner.buy(TEST_EVENT, reserve_body(quantity=2))
    response = tm.partner.order(order["order_token"])
    assert response.status_code == 200
    body = response.json()
    assert body["customer_email"] == "tom.brown@email.com"
    assert body["delivery"]["service_level"] == "SAFETIX"
    assert body["additional_info"] == {}
    assert (body["device_id"], body["device_type"], body["device_os"]) == ("device-12345", "native", "android")
    assert body["third_party_account_id"] == "12313131" and body["nfc_capable_device"] is True
    first = body["tickets"]
    assert [t["seat_name"] for t in first] == ["1", "2"]
    for ticket in first:
        assert ticket["order_number"] == order["order_number"] and ticket["voided"] is False
        assert len(ticket["barcode_id"]) == 16
        entry = ticket["secure_entry_data"]
        assert entry["render_type"] == "rotating_symbology" and entry["segment_type"] == "ROTATING_SYMBOLOGY"
        assert _decoded(entry["token"])["b"] == ticket["barcode_id"]
    again = _tickets(tm, order["order_token"])
    assert [t["barcode_id"] for t in again] == [t["barcode_id"] for t in first]
    assert all(a["secure_entry_data"]["token"] != b["secure_entry_data"]["token"] for a, b in zip(again, first, strict=True))


def test_barcode_only_event_has_no_token(tm: InProcess) -> None:
    order = tm.partner.buy(BARCODE_EVENT, reserve_body("000042800007", price_id=8))
    body = tm.partner.order(order["order_token"]).json()
    assert body["delivery"]["service_level"] == "ETICKET"
    ticket = body["tickets"][0]
    assert ticket["barcode_id"] and ticket["secure_entry_data"] == {"token": None, "render_type": "barcode",
                                                                     "segment_type": "BARCODE"}
    refreshed = tm.partner.securerender([_render_request(BARCODE_EVENT, ticket)])
    assert refreshed.status_code == 400
    assert refreshed.json()["tickets"][0]["error"] == {"code": 400, "error": "safetix.not.enabled"}


def test_delivery_delay_date_holds_the_token_back_until_that_date(tm: InProcess) -> None:
    details = tm.partner.call("GET", f"/partners/v1/events/{DELAY_EVENT}").json()["event"]
    delay_date = date.fromisoformat(details["local_date"]) - timedelta(days=2)
    order = tm.partner.buy(DELAY_EVENT, reserve_body(price_id=7))

    before = tm.partner.order(order["order_token"]).json()
    assert before["additional_info"] == {"safetix_delivery_delay_date": delay_date.isoformat()}
    entry = before["tickets"][0]["secure_entry_data"]
    assert entry["token"] is None and entry["render_type"] == "rotating_symbology"
    assert entry["error"] == {"code": 425, "message": f"SafeTix token not retrievable before {delay_date.isoformat()}"}
    request = _render_request(DELAY_EVENT, before["tickets"][0])
    delayed = tm.partner.securerender([request])
    assert delayed.status_code == 400
    assert delayed.json()["tickets"][0]["error"] == {"code": 400, "error": "safetix.delivery.delayed"}

    # One minute before midnight (Phoenix) on the delay date: still held back; at midnight: there.
    midnight = datetime.combine(delay_date, time(0, 0), tzinfo=ZoneInfo("America/Phoenix"))
    tm.admin.set_clock(midnight - timedelta(minutes=1))
    assert tm.partner.order(order["order_token"]).json()["tickets"][0]["secure_entry_data"]["token"] is None
    tm.admin.set_clock(midnight)
    after = tm.partner.order(order["order_token"]).json()
    assert after["additional_info"] == {"safetix_delivery_delay_date": delay_date.isoformat()}
    token = after["tickets"][0]["secure_entry_data"]["token"]
    assert token and "error" not in after["tickets"][0]["secure_entry_data"]
    assert tm.partner.securerender([request]).status_code == 200


def test_order_management_refusals(tm: InProcess) -> None:
    order = tm.partner.buy()
    token = order["order_token"]
    mismatch = tm.partner.order(token, {**DEVICE, "third_party_account_id": "someone-else"})
    assert mismatch.status_code == 403 and mismatch.json()["error"]["code"] == 10005
    unknown = tm.partner.order("no-such-token")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 90002
    for bad in ({**DEVICE, "device_id": "x" * 51}, {**DEVICE, "device_type": "tablet"},
                {**DEVICE, "device_os": "windows"}, {k: v for k, v in DEVICE.items() if k != "device_id"}):
        refused = tm.partner.order(token, bad)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == 10002
    no_token = tm.partner.call("POST", "/partners/v1/orders", json=DEVICE)
    assert no_token.status_code == 400 and "order_token" in no_token.json()["error"]["message"]
    upper = tm.partner.order(token, {**DEVICE, "device_type": "NATIVE", "device_os": "IOS", "device_id": "x" * 50})
    assert upper.status_code == 200 and upper.json()["device_os"] == "IOS"
    tm.admin.configure(apikeys=[APIKEY, "other-partner-key"])
    assert tm.partner.order(token, apikey="other-partner-key").status_code == 404


# --- unredeemed -------------------------------------------------------------------------------------


def test_unredeemed_orders_list_the_source_account(tm: InProcess) -> None:
    bought_at = tm.admin.client.get("/admin/clock").json()["epoch_ms"]
    first = tm.partner.buy(source_account_id="hash-1")
    tm.admin.advance(3600)
    tm.partner.buy(source_account_id="hash-2")

    def listed(**params: str) -> list[str | None]:
        response = tm.partner.call("GET", "/partners/v1/orders/unredeemed", params=params)
        assert response.status_code == 200, response.text
        return [o["order_source_account_id"] for o in response.json()["data"]]

    body = tm.partner.call("GET", "/partners/v1/orders/unredeemed", params={"days_from_purchase": "1"}).json()
    item = body["data"][0]
    assert set(item) == {"purchase_date_time", "email_status", "event_date_time", "event_id",
                         "order_source_account_id", "purchase_email_address"}
    assert item["purchase_date_time"] == bought_at
    assert item["event_id"] == TEST_EVENT and item["purchase_email_address"] == "tom.brown@email.com"
    assert listed(days_from_purchase="1") == ["hash-1", "hash-2"]
    tm.admin.advance(86400 - 1800)  # now: 24.5 h after the first purchase, 23.5 h after the second
    assert listed(days_from_purchase="1") == ["hash-2"]
    assert listed(days_from_purchase="0") == []
    assert listed(days_before_event="40") == ["hash-1", "hash-2"]
    assert listed(days_before_event="5") == []
    tm.admin.redeem(first["order_token"])
    assert listed(days_from_purchase="10") == ["hash-2"]
    missing = tm.partner.call("GET", "/partners/v1/orders/unredeemed")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == 10002
    assert tm.partner.call("GET", "/partners/v1/orders/unredeemed", params={"days_from_purchase": "x"}).status_code == 400
    tm.admin.configure(apikeys=[APIKEY, "other-partner-key"])
    other = tm.partner.call("GET", "/partners/v1/orders/unredeemed", params={"days_from_purchase": "9"},
                            apikey="other-partner-key")
    assert other.json() == {"data": []}


# --- SecureRender -----------------------------------------------------------------------------------


def test_securerender_rotates_the_token_keeps_the_barcode_and_logs_each_call(tm: InProcess) -> None:
    order = tm.partner.buy()
    ticket = _tickets(tm, order["order_token"])[0]
    request = _render_request(TEST_EVENT, ticket)
    first = tm.partner.securerender([request])
    assert first.status_code == 200
    body = first.json()
    assert (body["deviceId"], body["deviceType"], body["deviceOs"], body["nfcCapableDevice"]) == (
        "68753A11-1234-1226-9D60-0050E4C000000", "NATIVE", "IOS", True)
    one = body["tickets"][0]
    assert {k: one[k] for k in request} == request
    assert one["renderType"] == "rotating_symbology" and "pkPassId" in one["passData"]["ios"]
    started = tm.clock.now
    tm.admin.advance(20 * 3600)
    two = tm.partner.securerender([request]).json()["tickets"][0]
    assert two["barcode"] == one["barcode"] == ticket["barcode_id"]
    assert len({one["token"], two["token"], ticket["secure_entry_data"]["token"]}) == 3
    assert _decoded(two["token"])["b"] == ticket["barcode_id"]
    calls = tm.admin.counts()["securerender_calls"][ticket["barcode_id"]]
    assert calls == [{"at": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "ok": True},
                     {"at": (started + timedelta(hours=20)).strftime("%Y-%m-%dT%H:%M:%SZ"), "ok": True}]


def test_securerender_refuses_another_user_id(tm: InProcess) -> None:
    order = tm.partner.buy(third_party_account_id="buyer-1")
    ticket = _tickets(tm, order["order_token"], {**DEVICE, "third_party_account_id": "buyer-1"})[0]
    refused = tm.partner.securerender([_render_request(TEST_EVENT, ticket)], user_id="buyer-2")
    assert refused.status_code == 400
    answer = refused.json()["tickets"][0]
    assert answer["error"] == {"code": 403, "error": "invalid.user.id"} and "token" not in answer
    assert tm.partner.securerender([_render_request(TEST_EVENT, ticket)], user_id="buyer-1").status_code == 200
    assert [c["ok"] for c in tm.admin.counts()["securerender_calls"][ticket["barcode_id"]]] == [False, True]


def test_securerender_per_ticket_errors(tm: InProcess) -> None:
    order = tm.partner.buy(TEST_EVENT, reserve_body(quantity=2))
    good, other = (_render_request(TEST_EVENT, t) for t in _tickets(tm, order["order_token"]))
    no_row = {k: v for k, v in other.items() if k != "row"}
    response = tm.partner.securerender([good, no_row, {**other, "barcode": "9999999999999999"},
                                        {**other, "seat": "7"}])
    assert response.status_code == 400
    answers = response.json()["tickets"]
    assert "token" in answers[0] and "error" not in answers[0]
    assert answers[1] == {**no_row, "error": {"code": 400, "error": "missing.row.attribute"}}
    assert answers[2]["error"] == {"code": 400, "error": "invalid.barcode"}
    assert answers[3]["error"] == {"code": 400, "error": "ticket.attributes.mismatch"}


def test_securerender_request_level_checks_and_staging_path(tm: InProcess) -> None:
    order = tm.partner.buy()
    request = _render_request(TEST_EVENT, _tickets(tm, order["order_token"])[0])
    staging = tm.partner.securerender([request], path="/marketplace-staging/v1/securerender")
    assert staging.status_code == 200 and staging.json()["tickets"][0]["token"]
    no_user = tm.partner.securerender([request], user_id=None)
    assert no_user.status_code == 400 and no_user.json() == {"code": 400, "error": "missing.x-user-id.header"}
    no_tickets = tm.partner.securerender([])
    assert no_tickets.json() == {"code": 400, "error": "missing.tickets.attribute"}
    no_key = tm.partner.securerender([request], apikey="")
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == 10001
    assert tm.partner.securerender([request], header=True).status_code == 200

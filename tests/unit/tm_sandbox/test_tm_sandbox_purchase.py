"""The TM sandbox's purchase rules, in process (Starlette TestClient on a fake clock).

Auth, events and availability, reserve (shape, contiguity, sold out, not idempotent), holds that
expire and release seats, payment (required fields, amount, test nonces), commit (unknown, expired,
deleted, unpaid, re-committed carts) and delete.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.support.tm_sandbox import (
    APIKEY,
    BARCODE_EVENT,
    DELAY_EVENT,
    TEST_EVENT,
    TINY_EVENT,
    InProcess,
    payment_body,
    reserve_body,
)


@pytest.fixture
def tm() -> Iterator[InProcess]:
    sandbox = InProcess()
    yield sandbox
    sandbox.close()


def _error(response: object) -> dict[str, object]:
    error: dict[str, object] = response.json()["error"]  # type: ignore[attr-defined]
    return error


def _free(tm: InProcess, event_id: str, section: str, row: str) -> list[int]:
    body = tm.partner.call("GET", f"/partners/v1/events/{event_id}/availability").json()
    for level in body["event"]["tickets"]:
        for place in level["inventory"]:
            if (place["section"], place["row"]) == (section, row):
                seats: list[int] = place["seats"]
                return seats
    return []


# --- auth -------------------------------------------------------------------------------------------


def test_apikey_in_query_or_header_else_401_envelope(tm: InProcess) -> None:
    path = f"/partners/v1/events/{TEST_EVENT}"
    for apikey in ("", "not-a-key"):
        refused = tm.partner.call("GET", path, apikey=apikey)
        assert refused.status_code == 401
        assert refused.json() == {"error": {"message": "Unauthorized Access: missing or invalid apikey", "code": 10001,
                                            "http_code": 401, "severity": "ERROR"}}
    assert tm.partner.call("GET", path).status_code == 200
    assert tm.partner.call("GET", path, header=True).status_code == 200
    tm.admin.configure(apikeys=["rotated-key"])
    assert tm.partner.call("GET", path).status_code == 401
    assert tm.partner.call("GET", path, apikey="rotated-key").status_code == 200
    assert tm.admin.counts()["unauthorized"] == 3
    assert "rotated-key" not in str(tm.admin.configure())  # config shows hints only


# --- events and availability ------------------------------------------------------------------------


@pytest.mark.parametrize(("event_id", "timezone", "local_time"), [
    (TEST_EVENT, "America/Los_Angeles", "19:30:00"),
    (DELAY_EVENT, "America/Phoenix", "19:00:00"),
    (BARCODE_EVENT, "America/Los_Angeles", "18:30:00"),
    (TINY_EVENT, "Australia/Sydney", "20:00:00"),
])
def test_event_details_carry_start_and_timezone(tm: InProcess, event_id: str, timezone: str, local_time: str) -> None:
    details = tm.partner.call("GET", f"/partners/v1/events/{event_id}").json()
    event = details["event"]
    assert details["api_transactable"] is True
    assert event["id"] == event_id and event["timezone"] == timezone == event["venue"]["location"]["time_zone"]
    assert event["local_time"] == local_time
    start = datetime.fromisoformat(event["eventdate"]["value"].replace("Z", "+00:00"))
    assert start > tm.clock.now
    assert all(isinstance(t["id"], str) and t["id"].startswith("0000") for t in event["tickets"])


def test_unknown_event_and_unknown_path_answer_404_envelope(tm: InProcess) -> None:
    for path in ("/partners/v1/events/0000000000000000", "/partners/v1/nowhere"):
        response = tm.partner.call("GET", path)
        assert response.status_code == 404 and _error(response)["code"] == 90000


def test_event_list_names_the_seeded_events(tm: InProcess) -> None:
    events = tm.partner.call("GET", "/partners/v1/events").json()["events"]
    assert {e["eventId"] for e in events} == {TEST_EVENT, DELAY_EVENT, BARCODE_EVENT, TINY_EVENT}
    assert {e["timeZone"] for e in events} == {"America/Los_Angeles", "America/Phoenix", "Australia/Sydney"}


def test_availability_lists_offers_and_free_seats(tm: InProcess) -> None:
    body = tm.partner.call("GET", f"/partners/v1/events/{BARCODE_EVENT}/availability").json()["event"]
    assert body["eventTicketLimit"] == 8 and body["restrictSingle"] is False
    level = body["tickets"][0]
    assert level["available"] == level["total"] == 48 and level["currentTicketLimit"] == 8
    assert {o["ticketTypeId"] for o in level["offers"]} == {"000042800007", "000083000007"}
    assert {o["faceValue"] for o in level["offers"]} == {150.0, 90.0}
    tm.partner.cart(BARCODE_EVENT, reserve_body("000042800007", quantity=2, price_id=8))
    assert tm.partner.call("GET", f"/partners/v1/events/{BARCODE_EVENT}/availability").json()[
        "event"]["tickets"][0]["available"] == 46
    tiny = tm.partner.call("GET", f"/partners/v1/events/{TINY_EVENT}/availability").json()["event"]["tickets"][0]
    assert tiny["available"] == 8 and tiny["total"] == 12  # H1 seats 3-4 and section J are sold
    assert [(p["section"], p["seats"]) for p in tiny["inventory"]] == [("G", [1, 2, 3, 4]), ("H", [1, 2, 5, 6])]


# --- reserve ----------------------------------------------------------------------------------------


def test_reserve_answers_seed_003_cart(tm: InProcess) -> None:
    response = tm.partner.reserve(DELAY_EVENT, reserve_body(price_id=7))
    assert response.status_code == 200
    assert '"grand":97.90' in response.text and '"grand":101.66' in response.text
    cart = response.json()
    assert len(cart["cart_id"]) == 36
    ticket_item, processing, delivery = cart["cart"]["items"]
    assert [a["id"] for a in ticket_item["areas"]] == [8, 9, 11, 16]
    assert (ticket_item["section"], ticket_item["row"], ticket_item["num_seats"]) == ("BALC2L", "A", 1)
    assert ticket_item["start_seat_number"] == ticket_item["end_seat_number"] == "1"
    assert ticket_item["totals"] == {"currency_code": "USD", "fee": 34.2, "grand": 97.9, "merchandise": 57.0, "tax": 6.7}
    charges = {c["type"]: (c["price"], c["tax"]) for c in ticket_item["tickets"][0]["charges"]}
    assert charges == {"distance": (0, 0), "facility": (0, 0), "face_value": (57.0, 4.13), "service": (34.2, 2.57)}
    assert processing["totals"]["fee"] == 3.76 and delivery["service_level"] == "ETICKET"
    assert cart["cart"]["totals"] == {"currency_code": "USD", "delivery": 0, "fee": 37.96, "grand": 101.66,
                                      "merchandise": 57.0, "tax": 6.7, "unpaid": 101.66, "upsell": 0}
    assert cart["cart"]["hold_time"] == 300 and cart["cart"]["payments"] == []


def test_reserve_is_not_idempotent(tm: InProcess) -> None:
    first, second = tm.partner.cart(), tm.partner.cart()
    assert first["cart_id"] != second["cart_id"]
    assert first["cart"]["items"][0]["start_seat_number"] != second["cart"]["items"][0]["start_seat_number"]
    assert len(tm.admin.carts(state="held")) == 2
    assert _free(tm, TEST_EVENT, "101", "A") == list(range(3, 11))


def test_odd_numbered_seats_are_contiguous_in_row_order(tm: InProcess) -> None:
    cart = tm.partner.cart(DELAY_EVENT, reserve_body(quantity=3, price_id=7))
    item = cart["cart"]["items"][0]
    assert (item["start_seat_number"], item["end_seat_number"], item["num_seats"]) == ("1", "5", 3)


def test_sold_out_and_no_contiguous_seats_answer_20052(tm: InProcess) -> None:
    partner = tm.partner
    no_block = partner.reserve(TINY_EVENT, reserve_body("000002040006", 3, section="H", accept_best_available=False))
    assert no_block.status_code == 400
    assert no_block.json()["error"] == {"message": "No inventory found to match request", "code": 20052,
                                        "http_code": 400, "severity": "ERROR"}
    sold_out = partner.reserve(TINY_EVENT, reserve_body("000002040006", 1, section="J", accept_best_available=False))
    assert _error(sold_out)["code"] == 20052
    partner.cart(TINY_EVENT, reserve_body("000002040006", 4, section="G"))
    assert _error(partner.reserve(TINY_EVENT, reserve_body("000002040006", 3)))["code"] == 20052
    two = partner.cart(TINY_EVENT, reserve_body("000002040006", 2))
    assert two["cart"]["items"][0]["section"] == "H"  # best available elsewhere: H1 seats 1-2
    partner.cart(TINY_EVENT, reserve_body("000002040006", 2))  # H1 seats 5-6
    assert _error(partner.reserve(TINY_EVENT, reserve_body("000002040006", 1)))["code"] == 20052


def test_named_seats_and_best_available_fallback(tm: InProcess) -> None:
    partner = tm.partner
    named = partner.cart(body=reserve_body(quantity=2, section="101", row="B", begin_seat="3", end_seat="4"))
    item = named["cart"]["items"][0]
    assert (item["section"], item["row"], item["start_seat_number"], item["end_seat_number"]) == ("101", "B", "3", "4")
    strict = partner.reserve(body=reserve_body(quantity=2, section="101", row="B", begin_seat=3, end_seat=4,
                                               accept_best_available=False))
    assert _error(strict)["code"] == 20052
    fallback = partner.cart(body=reserve_body(quantity=2, section="101", row="B", begin_seat=3, end_seat=4))
    assert fallback["cart"]["items"][0]["start_seat_number"] == "1"
    by_area = partner.cart(body=reserve_body(price_id=None, areas=[{"id": 2}]))
    assert by_area["cart"]["items"][0]["section"] == "201"


def test_reserve_refusals(tm: InProcess) -> None:
    partner = tm.partner
    assert _error(partner.reserve(body=reserve_body("1", 1)))["code"] == 20046  # "000000000001" without zeros
    assert _error(partner.reserve(body=reserve_body(quantity=9)))["code"] == 10161
    assert _error(partner.reserve(body=reserve_body(price_id=99)))["code"] == 20052
    assert _error(partner.reserve(body=reserve_body(quantity=0)))["code"] == 10002
    structure = partner.reserve(body={"tickets": [{"id": "000000000001", "quantity": 1}]})
    assert structure.status_code == 400 and _error(structure)["code"] == 21001
    assert str(_error(structure)["message"]).startswith("Invalid reserve request data structure")
    not_json = partner.call("POST", f"/partners/v1/events/{TEST_EVENT}/cart", headers={"content-type": "application/json"})
    assert _error(not_json)["code"] == 21001
    assert tm.admin.carts() == []


def test_several_ticket_types_share_one_block(tm: InProcess) -> None:
    body = {"reserve": {"tickets": [{"id": "000042800007", "quantity": 1, "price": {"id": 8}},
                                    {"id": "000083000007", "quantity": 1, "price": {"id": 8}}]}}
    cart = tm.partner.cart(BARCODE_EVENT, body)
    item = cart["cart"]["items"][0]
    assert item["num_seats"] == 2 and [t["id"] for t in item["tickets"]] == ["000042800007", "000083000007"]
    assert item["totals"]["merchandise"] == 240.0  # 150.00 + 60 % child ticket


def test_captcha_when_required(tm: InProcess) -> None:
    tm.admin.configure(captcha_required=True)
    missing = tm.partner.reserve()
    assert missing.status_code == 401 and _error(missing)["code"] == 10004
    invalid = tm.partner.reserve(body={"reserve": {**reserve_body()["reserve"], "token": "invalid"}})
    assert invalid.status_code == 400 and _error(invalid)["code"] == 10031
    assert tm.partner.reserve(body={**reserve_body(), "token": "solved-captcha"}).status_code == 200


def test_started_event_is_not_transactable(tm: InProcess) -> None:
    tm.admin.advance(31 * 86400)
    refused = tm.partner.reserve()
    assert refused.status_code == 403 and _error(refused)["code"] == 90001
    assert tm.partner.call("GET", f"/partners/v1/events/{TEST_EVENT}").json()["api_transactable"] is False


# --- holds ------------------------------------------------------------------------------------------


def test_hold_expiry_releases_seats_and_counts_a_leaked_cart(tm: InProcess) -> None:
    partner, admin = tm.partner, tm.admin
    cart = partner.cart(TINY_EVENT, reserve_body("000002040006", 4, section="G"))
    assert _free(tm, TINY_EVENT, "G", "17") == []
    admin.advance(299)
    assert admin.carts()[0]["state"] == "held" and admin.carts()[0]["hold_time"] == 1
    admin.advance(1)
    assert _free(tm, TINY_EVENT, "G", "17") == [1, 2, 3, 4]
    assert [c["state"] for c in admin.carts()] == ["expired"]
    assert admin.counts()["leaked_carts"] == 1
    assert _error(partner.pay(TINY_EVENT, payment_body(cart)))["code"] == 90003
    expired = partner.commit(TINY_EVENT, cart["cart_id"])
    assert expired.status_code == 400 and _error(expired)["code"] == 90003
    assert admin.counts()["commits_on_expired_carts"] == 1
    assert partner.cart(TINY_EVENT, reserve_body("000002040006", 4, section="G", accept_best_available=False))


def test_hold_counts_down_payment_extends_it_and_is_configurable(tm: InProcess) -> None:
    cart = tm.partner.cart()
    tm.admin.advance(100)
    paid = tm.partner.pay(TEST_EVENT, payment_body(cart)).json()
    assert paid["cart"]["hold_time"] == 200 + 150
    tm.admin.configure(hold_time_seconds=10, payment_extension_seconds=0)
    assert tm.partner.cart()["cart"]["hold_time"] == 10


# --- payment ----------------------------------------------------------------------------------------


def test_payment_answers_the_paid_cart(tm: InProcess) -> None:
    cart = tm.partner.cart()
    paid = tm.partner.pay(TEST_EVENT, payment_body(cart))
    assert paid.status_code == 200
    body = paid.json()["cart"]
    assert body["totals"]["grand"] == 54.41 and body["totals"]["unpaid"] == 0
    assert body["payments"][0]["amount"] == 54.41 and body["payments"][0]["type"] == "CC"
    assert [c["state"] for c in tm.admin.carts()] == ["paid"]


def test_payment_missing_required_fields_is_400(tm: InProcess) -> None:
    cart = tm.partner.cart()
    body = payment_body(cart)
    del body["payment"]["first_name"]
    del body["payment"]["card"]["cin"]
    body["payment"]["third_party_account_id"] = ""
    response = tm.partner.pay(TEST_EVENT, body)
    assert response.status_code == 400 and _error(response)["code"] == 10002
    message = str(_error(response)["message"])
    assert "payment.first_name" in message and "payment.card.cin" in message and "third_party_account_id" in message
    no_cart = tm.partner.pay(TEST_EVENT, {"payment": payment_body(cart)["payment"]})
    assert _error(no_cart)["code"] == 10002 and "cartId" in str(_error(no_cart)["message"])
    plain_pan = tm.partner.pay(TEST_EVENT, payment_body(cart, nonce="4588883206000011"))
    assert _error(plain_pan)["code"] == 10002 and "encrypted" in str(_error(plain_pan)["message"])
    assert [c["paid"] for c in tm.admin.carts()] == [False]


def test_payment_amount_must_equal_the_grand_total(tm: InProcess) -> None:
    cart = tm.partner.cart()
    wrong = tm.partner.pay(TEST_EVENT, payment_body(cart, amount="54.40"))
    assert wrong.status_code == 400 and _error(wrong)["code"] == 20121
    assert "54.40" in str(_error(wrong)["message"]) and "54.41" in str(_error(wrong)["message"])
    assert _error(tm.partner.pay(TEST_EVENT, payment_body(cart, amount="54.414")))["code"] == 20121
    currency = tm.partner.pay(TEST_EVENT, payment_body(cart, currency="EUR"))
    assert _error(currency)["code"] == 10002
    assert tm.partner.pay(TEST_EVENT, payment_body(cart, amount="54.410")).status_code == 200


@pytest.mark.parametrize(("nonce", "code"), [
    ("fake-processor-declined-visa-nonce", 20122),
    ("fake-insufficient-funds-nonce", 20129),
    ("fake-cvv-mismatch-nonce", 20152),
])
def test_payment_test_nonces(tm: InProcess, nonce: str, code: int) -> None:
    cart = tm.partner.cart()
    refused = tm.partner.pay(TEST_EVENT, payment_body(cart, nonce=nonce))
    assert refused.status_code == 400 and _error(refused)["code"] == code
    assert _error(tm.partner.commit(TEST_EVENT, cart["cart_id"]))["code"] == 20120  # still unpaid
    assert tm.partner.pay(TEST_EVENT, payment_body(cart)).status_code == 200


# --- commit -----------------------------------------------------------------------------------------


def test_commit_without_payment_is_refused(tm: InProcess) -> None:
    cart = tm.partner.cart()
    refused = tm.partner.commit(TEST_EVENT, cart["cart_id"])
    assert refused.status_code == 400 and _error(refused)["code"] == 20120
    assert tm.admin.counts()["commits_without_payment"] == 1 and tm.admin.orders() == []


def test_commit_of_unknown_cart_or_bad_body_is_invalid_reserve_structure(tm: InProcess) -> None:
    for body in ({"cart_id": "no-such-cart"}, {"cartId": "wrong-key"}, ["not", "an", "object"]):
        response = tm.partner.call("PUT", f"/partners/v1/events/{TEST_EVENT}/cart", json=body)
        assert response.status_code == 400
        assert _error(response)["code"] == 21001
        assert str(_error(response)["message"]).startswith("Invalid reserve request data structure")


def test_recommit_answers_90003_and_creates_nothing(tm: InProcess) -> None:
    order = tm.partner.buy(source_account_id="p-1")
    again = tm.partner.commit(TEST_EVENT, order["cart"]["cart_id"], source_account_id="p-1")
    assert again.status_code == 400 and again.json()["error"] == {"message": "Invalid cart", "code": 90003,
                                                                   "http_code": 400, "severity": "ERROR"}
    assert len(tm.admin.orders()) == 1
    counts = tm.admin.counts()
    assert counts["recommits"] == 1 and counts["orders_per_source_account"] == {"p-1": 1}
    assert [c["state"] for c in tm.admin.carts()] == ["committed"]


def test_orders_are_counted_per_source_account(tm: InProcess) -> None:
    for source in ("p-1", "p-1", "p-2"):
        tm.partner.buy(source_account_id=source)
    cart = tm.partner.cart()
    tm.partner.pay(TEST_EVENT, payment_body(cart))
    tm.partner.commit(TEST_EVENT, cart["cart_id"], source_account_id=None)
    assert tm.admin.counts()["orders_per_source_account"] == {"p-1": 2, "p-2": 1, "(none)": 1}
    assert len(tm.admin.orders(source_account_id="p-1")) == 2


def test_a_cart_belongs_to_its_apikey_and_event(tm: InProcess) -> None:
    tm.admin.configure(apikeys=[APIKEY, "other-partner-key"])
    cart = tm.partner.cart()
    assert _error(tm.partner.pay(TEST_EVENT, payment_body(cart), apikey="other-partner-key"))["code"] == 90003
    assert _error(tm.partner.commit(TEST_EVENT, cart["cart_id"], apikey="other-partner-key"))["code"] == 21001
    assert _error(tm.partner.delete(TEST_EVENT, cart["cart_id"], apikey="other-partner-key"))["code"] == 90003
    assert _error(tm.partner.pay(DELAY_EVENT, payment_body(cart)))["code"] == 90003
    assert [c["state"] for c in tm.admin.carts()] == ["held"]


# --- delete -----------------------------------------------------------------------------------------


def test_delete_releases_seats_and_is_repeatable(tm: InProcess) -> None:
    partner, admin = tm.partner, tm.admin
    cart = partner.cart(TINY_EVENT, reserve_body("000002040006", 4, section="G"))
    deleted = partner.delete(TINY_EVENT, cart["cart_id"])
    assert deleted.status_code == 204 and deleted.content == b""
    assert _free(tm, TINY_EVENT, "G", "17") == [1, 2, 3, 4]
    assert partner.delete(TINY_EVENT, cart["cart_id"]).status_code == 204
    assert [c["state"] for c in admin.carts()] == ["deleted"]
    assert _error(partner.commit(TINY_EVENT, cart["cart_id"]))["code"] == 90003
    assert admin.counts()["commits_on_deleted_carts"] == 1
    admin.advance(600)
    assert admin.counts()["leaked_carts"] == 0  # a deleted cart does not leak


def test_delete_refusals(tm: InProcess) -> None:
    order = tm.partner.buy()
    assert _error(tm.partner.delete(TEST_EVENT, order["cart"]["cart_id"]))["code"] == 90003
    assert _error(tm.partner.delete(TEST_EVENT, "no-such-cart"))["code"] == 90003
    missing = tm.partner.call("DELETE", f"/partners/v1/events/{TEST_EVENT}/cart")
    assert missing.status_code == 400 and _error(missing)["code"] == 10002


def test_money_can_be_rendered_as_strings(tm: InProcess) -> None:
    tm.admin.configure(money_format="string")
    cart = tm.partner.cart()
    assert cart["cart"]["totals"]["grand"] == "54.41" and cart["cart"]["totals"]["unpaid"] == "54.41"
    assert tm.partner.pay(TEST_EVENT, payment_body(cart)).json()["cart"]["totals"]["unpaid"] == "0.00"

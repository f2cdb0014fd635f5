"""TicketmasterApi against faked HTTP (respx): paths and bodies, polling values, the no-retry
rules of cart calls (counted: what respx saw), deadlines, 429 handling, and secrets kept out of
URLs that are logged or stored, exception text, reprs and log output."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import traceback
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from fulfilment.partners.base import (
    AccountError,
    DeadlineReached,
    NotFound,
    OutcomeUnknown,
    PartnerError,
    PermanentError,
    TransientError,
)
from fulfilment.partners.ticketmaster.api import TicketmasterApi
from fulfilment.partners.ticketmaster.errors import (
    CartInvalid,
    Maintenance,
    MalformedResponse,
    NotSent,
    PaymentRefused,
    PollingExpired,
    RateLimited,
    SoldOut,
    TmOutcomeUnknown,
    UnexpectedResponse,
    polling_url_gone,
)
from fulfilment.partners.ticketmaster.payloads import (
    Availability,
    Cart,
    CartDeleted,
    Committed,
    Device,
    Operation,
    OrderTickets,
    Polling,
    RenderTicket,
    ReserveRequest,
    ReserveTicket,
    SecureRenderResult,
)
from tests.unit.test_tm_api_payloads import (
    AVAILABILITY,
    CART_JSON,
    COMMITTED,
    EVENT,
    ORDER_TICKETS,
    ORDER_TOKEN,
    SECURE_RENDER_400,
    SECURE_RENDER_OK,
    TICKET_TOKEN,
    UNREDEEMED,
    payment,
)

HOST = "https://tm.test"
BASE = f"{HOST}/partners/v1"
RENDER = f"{HOST}/marketplace/v1/securerender"
APIKEY = "GkB8Z037ZfqbLCNtZViAgrEegbsrZ6Ne"
EVENT_ID = "3F005105D843DFA3"
CART_ID = "beec42c9-f456-4270-bba9-4c62528bef00"
CART_URL = f"{BASE}/events/{EVENT_ID}/cart"
PAYMENT_URL = f"{CART_URL}/payment"
POLL_URL = f"{BASE}/polling/cart/tickets/PUT/00000001080E06000000006BB7C4A8C0"


def later(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


def cart_response(status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=CART_JSON.encode(), headers={"Content-Type": "application/json"})


def fail(status: int, code: int | None, message: str = "nope", headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"message": message, "code": code, "http_code": status, "severity": "ERROR"}}
    return httpx.Response(status, json=body, headers=headers)


def polling(url: str = f"{POLL_URL}?apikey={APIKEY}&cart_id=bzJV%2BZQo%3D", wait: float = 4) -> httpx.Response:
    return httpx.Response(202, json={"polling_url": url, "wait": wait})


def expiry_in(seconds: float) -> dict[str, str]:
    return {"Ratelimit-Expiry": str(int((time.time() + seconds) * 1000)), "Ratelimit-Quota-Allowed": "3600",
            "Ratelimit-Quota-Used": "3600", "Ratelimit-Quota-Available": "0"}


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def observed() -> list[tuple[str, str, float]]:
    return []


@pytest.fixture
def api(slept: list[float], observed: list[tuple[str, str, float]]) -> TicketmasterApi:
    # Tenacity's real decisions without real sleeping: the waits are recorded instead.
    return TicketmasterApi(BASE, APIKEY, max_attempts=4, max_retry_seconds=10, connect_timeout=1, read_timeout=2,
                           sleep=slept.append, observe=lambda *args: observed.append(args))


def device() -> Device:
    return Device("12345", "web", "android")


def reserve_request() -> ReserveRequest:
    return ReserveRequest((ReserveTicket("000002040006", 2, "3"),))


def commit(api: TicketmasterApi, deadline: float | None = None) -> Committed | Polling:
    return api.commit(EVENT_ID, CART_ID, "src-hash", request_id="req-1", deadline=deadline or later())


# ---- every call: where it goes, what it sends, what it returns ---------------------------------------


@respx.mock
def test_reserve_sends_the_body_the_apikey_and_the_request_id(api: TicketmasterApi) -> None:
    route = respx.post(CART_URL).mock(return_value=cart_response())
    cart = api.reserve(EVENT_ID, reserve_request(), request_id="11111111-1111", deadline=later())
    assert isinstance(cart, Cart) and cart.cart_id == CART_ID and cart.hold_time_seconds == 444
    assert cart.totals.grand == Decimal("101.66") and type(cart.totals.grand) is Decimal and cart.currency == "USD"
    sent = route.calls.last.request
    assert sent.url.params["apikey"] == APIKEY and "x-api-key" not in sent.headers
    assert sent.headers["X-Request-ID"] == "11111111-1111"
    assert json.loads(sent.content) == {"reserve": {"tickets": [{"id": "000002040006", "quantity": 2, "price": {"id": 3}}]}}


@respx.mock
def test_the_apikey_may_go_as_a_header_instead() -> None:
    api = TicketmasterApi(BASE, APIKEY, apikey_placement="header", sleep=lambda _: None)
    route = respx.get(f"{BASE}/events/{EVENT_ID}").mock(return_value=httpx.Response(200, json=EVENT))
    api.event_details(EVENT_ID, request_id="r", deadline=later())
    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == APIKEY and "apikey" not in sent.url.params


@respx.mock
def test_payment_commit_and_delete(api: TicketmasterApi) -> None:
    pay = respx.put(PAYMENT_URL).mock(return_value=cart_response())
    com = respx.put(CART_URL).mock(return_value=httpx.Response(200, json=COMMITTED))
    dele = respx.delete(CART_URL).mock(return_value=httpx.Response(204))
    cart = api.add_payment(EVENT_ID, CART_ID, payment(), request_id="r", deadline=later())
    assert isinstance(cart, Cart) and cart.payments[0].amount == Decimal("101.66")
    body = json.loads(pay.calls.last.request.content)
    assert body["cartId"] == CART_ID and body["payment"]["amount"] == "54.41"
    committed = commit(api)
    assert isinstance(committed, Committed) and committed.order_number == "35-46145/LA1"
    assert committed.grand_total == Decimal("101.66") and committed.currency == "USD" and committed.cart_id == CART_ID
    assert json.loads(com.calls.last.request.content) == {"cart_id": CART_ID, "source_account_id": "src-hash"}
    assert api.delete_cart(EVENT_ID, CART_ID, request_id="r", deadline=later()) == CartDeleted(CART_ID)
    assert dele.calls.last.request.url.params["cart_id"] == CART_ID


@respx.mock
def test_reads(api: TicketmasterApi) -> None:
    respx.get(f"{BASE}/events/{EVENT_ID}").mock(return_value=httpx.Response(200, json=EVENT))
    respx.get(f"{BASE}/events/{EVENT_ID}/availability").mock(return_value=httpx.Response(200, json=AVAILABILITY))
    unredeemed = respx.get(f"{BASE}/orders/unredeemed").mock(return_value=httpx.Response(200, json=UNREDEEMED))
    event = api.event_details(EVENT_ID, request_id="r", deadline=later())
    assert event.timezone == "America/New_York" and event.start_utc == dt.datetime(2015, 12, 7, tzinfo=dt.UTC)
    availability = api.availability(EVENT_ID, request_id="r", deadline=later())
    assert isinstance(availability, Availability) and availability.offers[0].ticket_type_id == "00000405000C"
    orders = api.unredeemed_orders(3, request_id="r", deadline=later())
    assert isinstance(orders, tuple) and orders[0].order_source_account_id == "fb63e3ede36210317e9e0fc5efccbc1f"
    assert unredeemed.calls.last.request.url.params["days_from_purchase"] == "3"


@respx.mock
def test_order_tickets_sends_the_order_token_on_the_wire_only(api: TicketmasterApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    route = respx.post(f"{BASE}/orders").mock(return_value=httpx.Response(200, json=ORDER_TICKETS))
    tickets = api.order_tickets(SecretStr(ORDER_TOKEN), device(), "12313131", request_id="r", deadline=later())
    assert isinstance(tickets, OrderTickets) and tickets.delivery_delay_date == dt.date(2020, 4, 5)
    sent = route.calls.last.request
    assert sent.url.params["order_token"] == ORDER_TOKEN and sent.url.params["apikey"] == APIKEY
    assert json.loads(sent.content) == {"device_id": "12345", "device_type": "web", "device_os": "android",
                                        "third_party_account_id": "12313131"}
    assert "HTTP Request" in caplog.text  # httpx did log the request...
    assert ORDER_TOKEN not in caplog.text and APIKEY not in caplog.text and TICKET_TOKEN not in caplog.text  # ...without them


@respx.mock
def test_secure_render(api: TicketmasterApi) -> None:
    route = respx.post(RENDER).mock(side_effect=[httpx.Response(200, json=SECURE_RENDER_OK),
                                                 httpx.Response(400, json=SECURE_RENDER_400)])
    tickets = [RenderTicket("3F005237E5CB39EA", "G", "17", "1", "964537283421")]
    dev = Device("68753A11-1234-1226-9D60-0050E4C000000", "native", "ios", "Mozilla/5.0")
    ok = api.secure_render("783412345", dev, tickets, request_id="r", deadline=later())
    assert isinstance(ok, SecureRenderResult) and ok.tickets[0].token is not None and ok.errors == ()
    sent = route.calls.last.request
    assert sent.headers["x-user-id"] == "783412345" and sent.url.params["apikey"] == APIKEY
    assert json.loads(sent.content)["deviceType"] == "NATIVE"
    refused = api.secure_render("783412345", dev, tickets, request_id="r", deadline=later())
    assert refused.errors[0].error is not None and refused.errors[0].error.message == "missing.row.attribute"
    assert route.call_count == 2  # a per-ticket refusal is an answer: not retried


@respx.mock
def test_secure_render_400_with_the_envelope_is_an_error(api: TicketmasterApi) -> None:
    respx.post(RENDER).mock(return_value=fail(400, 55555))
    with pytest.raises(PermanentError):
        api.secure_render("u", device(), [RenderTicket("e", "s", "r", "1", "b")], request_id="r", deadline=later())


@respx.mock
def test_optional_headers(slept: list[float]) -> None:
    api = TicketmasterApi(BASE, APIKEY, client_ip="203.0.113.7", force_polling=True, sleep=slept.append)
    route = respx.get(f"{BASE}/events/{EVENT_ID}/availability").mock(return_value=httpx.Response(200, json=AVAILABILITY))
    api.availability(EVENT_ID, request_id="r", deadline=later())
    sent = route.calls.last.request
    assert sent.headers["True-Client-IP"] == "203.0.113.7" and sent.headers["X-TM-FORCE-POLLING"] == "true"


# ---- polling: a value, never a sleep --------------------------------------------------------------


@respx.mock
def test_reserve_may_answer_with_polling_and_the_url_never_holds_the_apikey(api: TicketmasterApi,
                                                                           slept: list[float]) -> None:
    respx.post(CART_URL).mock(return_value=polling(wait=4))
    answer = api.reserve(EVENT_ID, reserve_request(), request_id="r", deadline=later())
    assert isinstance(answer, Polling) and answer.operation is Operation.RESERVE and answer.wait_seconds == 4.0
    assert APIKEY not in answer.url and "apikey" not in answer.url.lower()
    assert answer.url == f"{POLL_URL}?cart_id=bzJV%2BZQo%3D"  # the rest of TM's URL, byte for byte
    assert slept == []  # the client never waits for TM


@respx.mock
def test_poll_adds_the_apikey_back_on_the_wire_and_returns_the_same_union(api: TicketmasterApi) -> None:
    route = respx.get(POLL_URL).mock(side_effect=[polling(), cart_response()])
    first = api.poll(f"{POLL_URL}?cart_id=bzJV%2BZQo%3D", expect=Operation.RESERVE, request_id="r", deadline=later())
    assert isinstance(first, Polling) and "apikey" not in first.url
    cart = api.poll(first.url, expect=Operation.RESERVE, request_id="r", deadline=later())
    assert isinstance(cart, Cart) and cart.cart_id == CART_ID
    sent = route.calls.last.request.url
    assert sent.params["apikey"] == APIKEY and sent.params["cart_id"] == "bzJV+ZQo="


@respx.mock
@pytest.mark.parametrize(
    ("operation", "call"),
    [
        (Operation.AVAILABILITY, lambda api: api.availability(EVENT_ID, request_id="r", deadline=later())),
        (Operation.ADD_PAYMENT, lambda api: api.add_payment(EVENT_ID, CART_ID, payment(), request_id="r", deadline=later())),
        (Operation.COMMIT, commit),
        (Operation.DELETE_CART, lambda api: api.delete_cart(EVENT_ID, CART_ID, request_id="r", deadline=later())),
        (Operation.ORDER_TICKETS, lambda api: api.order_tickets(ORDER_TOKEN, device(), "1", request_id="r", deadline=later())),
        (Operation.UNREDEEMED_ORDERS, lambda api: api.unredeemed_orders(1, request_id="r", deadline=later())),
    ],
)
def test_every_polling_call_returns_polling(api: TicketmasterApi, operation: Operation, call: Any) -> None:
    respx.route(host="tm.test").mock(return_value=polling(f"/partners/v1/polling/x?APIKEY={APIKEY}"))
    answer = call(api)
    assert answer == Polling(f"{BASE}/polling/x", 4.0, operation)


@respx.mock
def test_poll_continues_a_commit(api: TicketmasterApi) -> None:
    respx.get(POLL_URL).mock(return_value=httpx.Response(200, json=COMMITTED))
    committed = api.poll(f"{POLL_URL}?cart_id={CART_ID}", expect=Operation.COMMIT, request_id="r", deadline=later())
    assert isinstance(committed, Committed) and committed.cart_id == CART_ID and committed.order_number == "35-46145/LA1"


@respx.mock
def test_poll_of_a_delete_accepts_204(api: TicketmasterApi) -> None:
    respx.get(POLL_URL).mock(return_value=httpx.Response(204))
    assert api.poll(POLL_URL, expect=Operation.DELETE_CART, request_id="r", deadline=later(), cart_id="c9") == CartDeleted("c9")


def test_poll_refuses_foreign_urls_and_calls_that_never_poll(api: TicketmasterApi) -> None:
    with respx.mock(assert_all_called=False) as mock:
        anything = mock.route().mock(return_value=httpx.Response(200, json={}))
        with pytest.raises(ValueError):
            api.poll("https://evil.test/partners/v1/polling/x", expect=Operation.COMMIT, request_id="r", deadline=later())
        with pytest.raises(ValueError):
            api.poll(POLL_URL, expect=Operation.EVENT_DETAILS, request_id="r", deadline=later())
        assert anything.call_count == 0


@respx.mock
def test_a_stored_url_with_an_apikey_is_cleaned_before_use(api: TicketmasterApi) -> None:
    route = respx.get(POLL_URL).mock(return_value=httpx.Response(200, json=AVAILABILITY))
    api.poll(f"{POLL_URL}?apikey=OLD-KEY", expect=Operation.AVAILABILITY, request_id="r", deadline=later())
    assert route.calls.last.request.url.params.get_list("apikey") == [APIKEY]


@respx.mock
def test_a_polling_url_on_another_origin_is_never_followed(api: TicketmasterApi) -> None:
    respx.put(CART_URL).mock(return_value=polling("https://evil.test/steal"))
    with pytest.raises(TmOutcomeUnknown) as raised:
        commit(api)
    assert raised.value.code == "FOREIGN_POLLING_URL" and raised.value.cart_id == CART_ID
    respx.get(f"{BASE}/events/{EVENT_ID}/availability").mock(return_value=polling("https://evil.test/steal"))
    with pytest.raises(UnexpectedResponse):
        api.availability(EVENT_ID, request_id="r", deadline=later())


@respx.mock
def test_a_forgotten_polling_url(api: TicketmasterApi) -> None:
    route = respx.get(POLL_URL).mock(return_value=httpx.Response(404, text="Not Found"))
    with pytest.raises(PollingExpired):
        api.poll(POLL_URL, expect=Operation.AVAILABILITY, request_id="r", deadline=later())
    assert route.call_count == 1
    with pytest.raises(TmOutcomeUnknown) as raised:  # a commit's outcome is not "gone" with its URL
        api.poll(f"{POLL_URL}?cart_id=c7", expect=Operation.COMMIT, request_id="r", deadline=later())
    assert raised.value.code == "POLLING_GONE" and raised.value.cart_id == "c7"


@respx.mock
def test_a_polled_reserve_can_be_sold_out(api: TicketmasterApi) -> None:
    respx.get(POLL_URL).mock(return_value=fail(400, 20052, "No inventory found to match request"))
    with pytest.raises(SoldOut):
        api.poll(POLL_URL, expect=Operation.RESERVE, request_id="r", deadline=later())


@respx.mock
def test_event_details_never_poll(api: TicketmasterApi) -> None:
    route = respx.get(f"{BASE}/events/{EVENT_ID}").mock(return_value=polling())
    with pytest.raises(UnexpectedResponse):
        api.event_details(EVENT_ID, request_id="r", deadline=later())
    assert route.call_count == 1


# ---- cart calls are never retried once they may have been sent -----------------------------------


AFTER_SEND = [httpx.ReadTimeout("slow"), httpx.WriteTimeout("slow write"), httpx.RemoteProtocolError("dropped"),
              httpx.ReadError("reset"), httpx.WriteError("half sent")]


@respx.mock
@pytest.mark.parametrize("failure", AFTER_SEND, ids=lambda e: type(e).__name__)
def test_a_commit_without_an_answer_is_sent_once_and_unknown(api: TicketmasterApi, failure: Exception) -> None:
    route = respx.put(CART_URL).mock(side_effect=failure)
    with pytest.raises(TmOutcomeUnknown) as raised:
        commit(api)
    assert route.call_count == 1
    assert isinstance(raised.value, OutcomeUnknown) and raised.value.cart_id == CART_ID and raised.value.operation == "commit"


@respx.mock
@pytest.mark.parametrize(
    "response",
    [httpx.Response(500, text="oops"), httpx.Response(502, text="<html>Bad Gateway</html>"), httpx.Response(503, text=""),
     httpx.Response(504, text="Gateway Timeout"), fail(500, 12345), fail(400, 55555), httpx.Response(400, text="?"),
     httpx.Response(302, headers={"Location": "https://tm.test/elsewhere"}), httpx.Response(200, text="not json"),
     httpx.Response(200, json={"grand_total": 1}), httpx.Response(200, json={"error": {"code": 1, "message": "?"}}),
     httpx.Response(201, text=""), httpx.Response(202, json={"wait": 4})],
    ids=["500", "502", "503", "504", "500_code", "unknown_code", "400_no_envelope", "302", "200_not_json",
         "200_no_order", "200_error_envelope", "201_empty", "202_without_url"],
)
def test_a_commit_without_a_definite_answer_is_sent_once_and_unknown(api: TicketmasterApi, response: httpx.Response) -> None:
    route = respx.put(CART_URL).mock(return_value=response)
    with pytest.raises(TmOutcomeUnknown) as raised:
        commit(api)
    assert route.call_count == 1 and raised.value.cart_id == CART_ID


@respx.mock
def test_a_commit_whose_body_cannot_be_decoded_is_unknown(api: TicketmasterApi) -> None:
    route = respx.put(CART_URL).mock(
        return_value=httpx.Response(200, stream=httpx.ByteStream(b"\x00not gzip"), headers={"Content-Encoding": "gzip"}))
    with pytest.raises(TmOutcomeUnknown):
        commit(api)
    assert route.call_count == 1


@respx.mock
def test_a_polling_url_embedding_the_apikey_elsewhere_is_never_stored(api: TicketmasterApi) -> None:
    respx.put(CART_URL).mock(return_value=polling(f"{BASE}/polling/{APIKEY}/x"))
    with pytest.raises(TmOutcomeUnknown) as raised:
        commit(api)
    assert APIKEY not in str(raised.value) and raised.value.code == "SECRET_IN_POLLING_URL"


@respx.mock
def test_an_unreadable_commit_answer_keeps_its_order_number(api: TicketmasterApi) -> None:
    respx.put(CART_URL).mock(return_value=httpx.Response(200, json={"order_number": "35-1/LA1", "order_token": 5}))
    committed = commit(api)  # an order number proves the order: an answer, not an error
    assert isinstance(committed, Committed) and committed.order_number == "35-1/LA1" and committed.unreadable == ("order_token",)
    respx.put(CART_URL).mock(return_value=httpx.Response(200, json=[{"order_number": "35-1/LA1"}]))
    with pytest.raises(TmOutcomeUnknown):
        commit(api)


@respx.mock
@pytest.mark.parametrize(
    ("response", "kind"),
    [(fail(400, 20122, "Payment Not Accepted"), PaymentRefused), (fail(400, 20129), PaymentRefused),
     (fail(400, 20152), PaymentRefused), (fail(400, 90003, "Invalid cart"), CartInvalid),
     (fail(400, None, "Invalid reserve request data structure"), CartInvalid), (fail(503, 20001), Maintenance),
     (fail(400, 20052), SoldOut), (fail(403, 90001), PermanentError), (fail(401, 10004), AccountError)],
)
def test_a_definite_refusal_of_a_commit_keeps_its_kind(api: TicketmasterApi, response: httpx.Response, kind: type) -> None:
    route = respx.put(CART_URL).mock(return_value=response)
    with pytest.raises(kind) as raised:
        commit(api)
    assert not isinstance(raised.value, OutcomeUnknown) and route.call_count == 1


@respx.mock
@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ConnectTimeout("no syn-ack"),
                                     httpx.PoolTimeout("pool")], ids=lambda e: type(e).__name__)
def test_a_commit_that_never_left_may_be_sent_again(api: TicketmasterApi, failure: Exception) -> None:
    route = respx.put(CART_URL).mock(side_effect=[failure, httpx.Response(200, json=COMMITTED)])
    assert isinstance(commit(api), Committed)
    assert route.call_count == 2


@respx.mock
def test_a_commit_that_can_never_connect_is_not_sent(api: TicketmasterApi) -> None:
    route = respx.put(CART_URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(NotSent) as raised:
        commit(api)
    assert route.call_count == 4  # max_attempts
    assert isinstance(raised.value, TransientError) and not isinstance(raised.value, OutcomeUnknown)


@respx.mock
def test_a_429_is_waited_out_when_it_ends_before_the_deadline(api: TicketmasterApi, slept: list[float]) -> None:
    route = respx.put(CART_URL).mock(side_effect=[httpx.Response(429, headers=expiry_in(2)),
                                                  httpx.Response(200, json=COMMITTED)])
    assert isinstance(commit(api, later(30)), Committed)
    assert route.call_count == 2 and len(slept) == 1 and 1.0 <= slept[0] <= 2.5


@respx.mock
def test_a_429_beyond_the_deadline_is_raised_for_the_core_to_park(api: TicketmasterApi, slept: list[float]) -> None:
    headers = expiry_in(600)
    route = respx.put(CART_URL).mock(return_value=httpx.Response(429, headers=headers))
    with pytest.raises(RateLimited) as raised:
        commit(api, later(30))
    assert route.call_count == 1 and slept == []
    error = raised.value
    assert error.retry_at == dt.datetime.fromtimestamp(int(headers["Ratelimit-Expiry"]) / 1000, tz=dt.UTC)
    assert error.quota_allowed == 3600 and error.quota_available == 0


@respx.mock
@pytest.mark.parametrize("failure", AFTER_SEND[:3], ids=lambda e: type(e).__name__)
def test_other_cart_calls_are_not_retried_after_sending_either(api: TicketmasterApi, failure: Exception) -> None:
    reserve = respx.post(CART_URL).mock(side_effect=failure)
    pay = respx.put(PAYMENT_URL).mock(side_effect=failure)
    delete = respx.delete(CART_URL).mock(side_effect=failure)
    with pytest.raises(OutcomeUnknown):
        api.reserve(EVENT_ID, reserve_request(), request_id="r", deadline=later())
    with pytest.raises(OutcomeUnknown):
        api.add_payment(EVENT_ID, CART_ID, payment(), request_id="r", deadline=later())
    with pytest.raises(OutcomeUnknown):
        api.delete_cart(EVENT_ID, CART_ID, request_id="r", deadline=later())
    assert (reserve.call_count, pay.call_count, delete.call_count) == (1, 1, 1)


@respx.mock
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_cart_calls_answered_5xx_are_sent_once(api: TicketmasterApi, status: int) -> None:
    reserve = respx.post(CART_URL).mock(return_value=httpx.Response(status))
    pay = respx.put(PAYMENT_URL).mock(return_value=httpx.Response(status))
    for call in (lambda: api.reserve(EVENT_ID, reserve_request(), request_id="r", deadline=later()),
                 lambda: api.add_payment(EVENT_ID, CART_ID, payment(), request_id="r", deadline=later())):
        with pytest.raises(OutcomeUnknown):
            call()
    assert (reserve.call_count, pay.call_count) == (1, 1)


@respx.mock
def test_an_unreadable_reserve_keeps_the_cart_id(api: TicketmasterApi) -> None:
    respx.post(CART_URL).mock(return_value=httpx.Response(200, json={"cart_id": "c-new", "cart": {"items": []}}))
    with pytest.raises(TmOutcomeUnknown) as raised:
        api.reserve(EVENT_ID, reserve_request(), request_id="r", deadline=later())
    assert raised.value.cart_id == "c-new"  # so the core can still delete it


@respx.mock
def test_sold_out_and_captcha_on_reserve(api: TicketmasterApi) -> None:
    route = respx.post(CART_URL).mock(side_effect=[fail(400, 20052, "No inventory found to match request"),
                                                   fail(401, 10004, "Unauthorized Access")])
    with pytest.raises(SoldOut):
        api.reserve(EVENT_ID, reserve_request(), request_id="r", deadline=later())
    with pytest.raises(AccountError):
        api.reserve(EVENT_ID, reserve_request(), request_id="r", deadline=later())
    assert route.call_count == 2


@respx.mock
def test_a_stalled_commit_poll_is_read_again_and_never_taken_for_a_gone_url(api: TicketmasterApi) -> None:
    # A polling URL is a read of a result: reading it again is safe (contract); a stall proves nothing.
    route = respx.get(POLL_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(TmOutcomeUnknown) as raised:
        api.poll(f"{POLL_URL}?cart_id={CART_ID}", expect=Operation.COMMIT, request_id="r", deadline=later())
    assert route.call_count > 1
    assert not polling_url_gone(raised.value)


@respx.mock
def test_a_commit_poll_answered_after_a_stall_gives_the_order(api: TicketmasterApi) -> None:
    route = respx.get(POLL_URL).mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(
        200, json={"order_number": "39-12345/NYC", "order_token": "tok"})])
    answer = api.poll(f"{POLL_URL}?cart_id={CART_ID}", expect=Operation.COMMIT, request_id="r", deadline=later())
    assert answer.order_number == "39-12345/NYC" and route.call_count == 2


@respx.mock
@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_commit_polling_url_is_said_so_and_not_read_again(api: TicketmasterApi, status: int) -> None:
    route = respx.get(POLL_URL).mock(return_value=httpx.Response(status))
    with pytest.raises(TmOutcomeUnknown) as raised:
        api.poll(f"{POLL_URL}?cart_id={CART_ID}", expect=Operation.COMMIT, request_id="r", deadline=later())
    assert polling_url_gone(raised.value) and route.call_count == 1


@respx.mock
def test_calls_on_one_cart_never_overlap(api: TicketmasterApi) -> None:
    in_flight: list[int] = []
    overlaps: list[int] = []
    lock = threading.Lock()

    def slow(_: httpx.Request) -> httpx.Response:
        with lock:
            in_flight.append(1)
            overlaps.append(len(in_flight))
        time.sleep(0.05)
        with lock:
            in_flight.pop()
        return cart_response()

    respx.put(PAYMENT_URL).mock(side_effect=slow)
    threads = [threading.Thread(target=api.add_payment, args=(EVENT_ID, CART_ID, payment()),
                                kwargs={"request_id": "r", "deadline": later(10)}) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(overlaps) == 4 and max(overlaps) == 1


# ---- reads are retried, within bounds -------------------------------------------------------


@respx.mock
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_reads_retry_5xx(api: TicketmasterApi, status: int) -> None:
    route = respx.get(f"{BASE}/events/{EVENT_ID}/availability").mock(
        side_effect=[fail(status, None), httpx.Response(status, text="<html>oops</html>"), httpx.Response(200, json=AVAILABILITY)])
    assert isinstance(api.availability(EVENT_ID, request_id="r", deadline=later()), Availability)
    assert route.call_count == 3


@respx.mock
def test_reads_retry_network_errors_and_malformed_answers(api: TicketmasterApi) -> None:
    route = respx.get(f"{BASE}/orders/unredeemed").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json={"data": "?"}), httpx.Response(200, json=UNREDEEMED)])
    assert len(api.unredeemed_orders(2, request_id="r", deadline=later())) == 1  # type: ignore[arg-type]
    assert route.call_count == 3


@respx.mock
def test_read_retries_are_bounded(api: TicketmasterApi, slept: list[float]) -> None:
    route = respx.get(f"{BASE}/events/{EVENT_ID}").mock(return_value=httpx.Response(200, text="not json"))
    with pytest.raises(MalformedResponse):
        api.event_details(EVENT_ID, request_id="r", deadline=later())
    assert route.call_count == 4 and len(slept) == 3


@respx.mock
@pytest.mark.parametrize(("response", "kind"), [(fail(503, 20001, "niterun"), Maintenance), (fail(404, None), NotFound),
                                                (fail(403, None), AccountError), (fail(400, 90001), PermanentError)])
def test_reads_do_not_retry_what_will_not_change(api: TicketmasterApi, response: httpx.Response, kind: type) -> None:
    route = respx.get(f"{BASE}/events/{EVENT_ID}/availability").mock(return_value=response)
    with pytest.raises(kind):
        api.availability(EVENT_ID, request_id="r", deadline=later())
    assert route.call_count == 1


@respx.mock
def test_order_tickets_is_retried_like_a_read(api: TicketmasterApi) -> None:
    route = respx.post(f"{BASE}/orders").mock(side_effect=[httpx.Response(502), httpx.Response(200, json=ORDER_TICKETS)])
    assert isinstance(api.order_tickets(ORDER_TOKEN, device(), "1", request_id="r", deadline=later()), OrderTickets)
    assert route.call_count == 2


# ---- one deadline per call ---------------------------------------------------------------


@respx.mock
def test_nothing_is_sent_once_the_deadline_has_passed(api: TicketmasterApi) -> None:
    route = respx.put(CART_URL).mock(return_value=httpx.Response(200, json=COMMITTED))
    with pytest.raises(DeadlineReached):
        commit(api, time.monotonic() - 1)
    assert route.call_count == 0


@respx.mock
def test_every_exchange_timeout_is_cut_to_the_time_left(api: TicketmasterApi) -> None:
    route = respx.put(CART_URL).mock(return_value=httpx.Response(200, json=COMMITTED))
    commit(api, later(0.4))
    timeouts = route.calls.last.request.extensions["timeout"]
    assert all(0 < timeouts[name] <= 0.4 for name in ("connect", "read", "write", "pool"))


@respx.mock
def test_retries_stop_before_the_deadline(api: TicketmasterApi, slept: list[float]) -> None:
    route = respx.get(f"{BASE}/events/{EVENT_ID}/availability").mock(return_value=httpx.Response(429, headers=expiry_in(5)))
    with pytest.raises(RateLimited):
        api.availability(EVENT_ID, request_id="r", deadline=later(2))
    assert route.call_count == 1 and slept == []


def test_waiting_for_another_call_on_the_cart_ends_at_the_deadline(api: TicketmasterApi) -> None:
    release = threading.Event()
    started = threading.Event()

    def stalled(_: httpx.Request) -> httpx.Response:
        started.set()
        release.wait(5)
        return cart_response()

    with respx.mock:
        respx.put(PAYMENT_URL).mock(side_effect=stalled)
        committing = respx.put(CART_URL).mock(return_value=httpx.Response(200, json=COMMITTED))
        first = threading.Thread(target=api.add_payment, args=(EVENT_ID, CART_ID, payment()),
                                 kwargs={"request_id": "r", "deadline": later(10)})
        first.start()
        try:
            assert started.wait(5)
            before = time.monotonic()
            with pytest.raises(DeadlineReached):
                commit(api, later(0.2))
            assert time.monotonic() - before < 2 and committing.call_count == 0
        finally:
            release.set()
            first.join()


# ---- secrets --------------------------------------------------------------------------------------


@respx.mock
def test_secrets_never_reach_errors_reprs_or_logs(api: TicketmasterApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = f"{BASE}/events/{EVENT_ID}/availability?apikey={APIKEY}&order_token={ORDER_TOKEN}"
    respx.get(f"{BASE}/events/{EVENT_ID}/availability").mock(
        side_effect=[httpx.ReadTimeout(f"timed out reading {leaky}"), httpx.Response(502, text=f"<html>{leaky}</html>"),
                     fail(500, None, f"upstream said {leaky}"), httpx.ConnectError(f"cannot reach {leaky}")])
    respx.post(f"{BASE}/orders").mock(side_effect=httpx.ReadTimeout(f"timed out reading {leaky}"))
    respx.put(CART_URL).mock(return_value=httpx.Response(502, text=f"bad gateway {leaky}"))
    errors: list[BaseException] = []
    for call in (lambda: api.availability(EVENT_ID, request_id="r", deadline=later()),
                 lambda: api.order_tickets(ORDER_TOKEN, device(), "1", request_id="r", deadline=later()),
                 lambda: commit(api)):
        with pytest.raises(PartnerError) as raised:  # any kind: it is the text we check
            call()
        errors.append(raised.value)
    text = caplog.text + repr(api) + str(api)
    for error in errors:
        text += str(error) + repr(error) + "".join(traceback.format_exception(error))
    assert APIKEY not in text and ORDER_TOKEN not in text
    assert "tm call failed" in caplog.text  # the retries were logged, scrubbed


@respx.mock
def test_tokens_do_not_leak_through_logged_answers(api: TicketmasterApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    respx.post(f"{BASE}/orders").mock(return_value=httpx.Response(200, json=ORDER_TICKETS))
    respx.put(CART_URL).mock(return_value=httpx.Response(200, json=COMMITTED))
    tickets = api.order_tickets(ORDER_TOKEN, device(), "1", request_id="r", deadline=later())
    committed = commit(api)
    logging.getLogger("test").info("answers: %r %s %r", tickets, tickets, committed)
    assert TICKET_TOKEN not in caplog.text and ORDER_TOKEN not in caplog.text


# ---- metrics ----------------------------------------------------------------------------------


@respx.mock
def test_every_exchange_is_observed(api: TicketmasterApi, observed: list[tuple[str, str, float]]) -> None:
    respx.put(CART_URL).mock(side_effect=[httpx.ConnectError("x"), polling()])
    respx.get(POLL_URL).mock(return_value=httpx.Response(200, json=COMMITTED))
    answer = commit(api)
    assert isinstance(answer, Polling)
    api.poll(answer.url, expect=Operation.COMMIT, request_id="r", deadline=later())
    assert [(op, outcome) for op, outcome, _ in observed] == [
        ("commit", "NOT_SENT"), ("commit", "polling"), ("poll_commit", "ok")]
    assert all(seconds >= 0 for _, _, seconds in observed)


@respx.mock
def test_a_failing_metrics_hook_never_costs_an_answer() -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("metrics down")

    api = TicketmasterApi(BASE, APIKEY, observe=broken)
    respx.put(CART_URL).mock(return_value=httpx.Response(200, json=COMMITTED))
    assert isinstance(commit(api), Committed)


# ---- construction -------------------------------------------------------------------------------


def test_a_test_transport_gets_the_apikey_added_too() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=AVAILABILITY)

    api = TicketmasterApi(BASE, APIKEY, transport=httpx.MockTransport(handler))
    assert isinstance(api.availability(EVENT_ID, request_id="r", deadline=later()), Availability)
    assert seen[0].url.params["apikey"] == APIKEY


@pytest.mark.parametrize("url", [f"{BASE}?apikey={APIKEY}", "https://user:pw@tm.test/partners/v1"])
def test_urls_carrying_credentials_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        TicketmasterApi(url, APIKEY)
    with pytest.raises(ValueError):
        TicketmasterApi(BASE, "")

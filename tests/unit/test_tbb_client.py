"""TbbClient behaviour against faked HTTP (respx): auth, retries, the order-call rules."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from decimal import Decimal

import httpx
import pytest
import respx

from fulfilment.partners.base import (
    AccountError,
    DeadlineReached,
    LookupUnknown,
    OrderAbsent,
    OrderFound,
    OutcomeUnknown,
    PermanentError,
    QuoteRequest,
    TransientError,
)
from fulfilment.partners.tbb import TbbClient
from fulfilment.partners.tbb.auth import TokenCache

BASE = "http://tbb.test"
SECRET = "s3cr3t-client-secret-value"
DEADLINE = dt.datetime(2030, 1, 1, 18, tzinfo=dt.UTC)


def ok(data: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data, "meta": {"request_id": "x", "timestamp": "t"}})


def page(items: list[object], *, has_more: object = False) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "data": items, "meta": {"request_id": "x", "timestamp": "t"},
                                     "pagination": {"total": len(items), "limit": 20, "offset": 0, "has_more": has_more}})


def fail(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, headers=headers,
        json={"success": False, "error": {"code": code, "message": code.lower(), "details": {}}, "meta": {}},
    )


def token(value: str = "tok-1", expires_in: int = 3600) -> httpx.Response:
    return ok({"access_token": value, "token_type": "Bearer", "expires_in": expires_in, "expires_at": "x", "scope": "s"})


QUOTE = {
    "quote_id": "qt_1",
    "status": "active",
    "expires_at": "2030-01-01T00:00:00Z",
    "event": {},
    "seats": {"section_name": "101", "row_name": "A", "quantity": 2, "section_name_display": "S", "row_name_display": "R"},
    "pricing": {"unit_price": 175.0, "subtotal": 350.0, "currency": "USD"},
}
ORDER = {
    "order_id": "TBB-20260226-X7K9",
    "status": "awaiting_transfer",
    "quote_id": "qt_1",
    "seats": {"section_name_display": "Section 101", "row_name_display": "Row A", "quantity": 2, "seat_range": "12-13"},
    "pricing": {"unit_price": 175.0, "subtotal": 350.0},
    "delivery": {"delivery_type": "mobile_transfer", "delivery_deadline": "2030-01-01T18:00:00Z",
                 "transfer_email": "transfer-inbox-abc@ticketbuyback.com"},
}


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def client(slept: list[float]) -> TbbClient:
    # Tenacity's real decisions, without real sleeping: the waits are recorded instead.
    return TbbClient(BASE, "partner-a", SECRET, max_attempts=4, max_retry_seconds=10, read_timeout=1,
                     connect_timeout=1, sleep=slept.append)


def request() -> QuoteRequest:
    return QuoteRequest("5496123", "101", "A", 2)


@respx.mock
def test_quote_parses_the_documented_shape_and_sends_headers(client: TbbClient) -> None:
    auth = respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.post(f"{BASE}/v1/quotes").mock(return_value=ok(QUOTE, 201))
    quote = client.create_quote(request(), request_id="11111111-1111-1111-1111-111111111111")
    assert quote.quote_id == "qt_1" and quote.unit_price == Decimal("175.00") and quote.row_name == "A"
    assert quote.expires_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == "Bearer tok-1"
    assert sent.headers["X-Request-ID"] == "11111111-1111-1111-1111-111111111111"
    import json
    assert json.loads(sent.content) == {"event_id": "5496123", "section_name": "101", "row_name": "A", "quantity": 2}
    assert json.loads(auth.calls.last.request.content)["grant_type"] == "client_credentials"


@respx.mock
def test_row_name_is_omitted_when_not_requested(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.post(f"{BASE}/v1/quotes").mock(return_value=ok(QUOTE, 201))
    client.create_quote(QuoteRequest("1", "101", None, 2), request_id="r")
    assert b"row_name" not in route.calls.last.request.content


@respx.mock
def test_one_token_is_shared_by_threads(client: TbbClient) -> None:
    def slow_token(_: httpx.Request) -> httpx.Response:
        time.sleep(0.05)  # widen the window in which threads would stampede
        return token()

    auth = respx.post(f"{BASE}/v1/auth/token").mock(side_effect=slow_token)
    respx.get(f"{BASE}/v1/orders/TBB-1").mock(return_value=ok(ORDER))
    threads = [threading.Thread(target=client.get_order, args=("TBB-1",), kwargs={"request_id": "r"}) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert auth.call_count == 1


@respx.mock
@pytest.mark.parametrize("code", ["TOKEN_EXPIRED", "UNAUTHORIZED"])
def test_refused_token_is_renewed_once_and_the_call_repeated(client: TbbClient, code: str) -> None:
    auth = respx.post(f"{BASE}/v1/auth/token").mock(side_effect=[token("old"), token("new")])
    route = respx.get(f"{BASE}/v1/orders/TBB-1").mock(side_effect=[fail(401, code), ok(ORDER)])
    assert client.get_order("TBB-1", request_id="r").order_id == ORDER["order_id"]
    assert auth.call_count == 2
    assert [c.request.headers["Authorization"] for c in route.calls] == ["Bearer old", "Bearer new"]


@respx.mock
def test_a_second_refusal_is_not_looped_on(client: TbbClient) -> None:
    auth = respx.post(f"{BASE}/v1/auth/token").mock(side_effect=[token("a"), token("b"), token("c")])
    respx.get(f"{BASE}/v1/orders/TBB-1").mock(return_value=fail(401, "UNAUTHORIZED"))
    with pytest.raises(AccountError) as raised:
        client.get_order("TBB-1", request_id="r")
    assert raised.value.code == "UNAUTHORIZED"
    assert auth.call_count == 2


@respx.mock
def test_bad_credentials_are_an_account_error_and_never_show_the_secret(client: TbbClient, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=fail(401, "INVALID_CREDENTIALS"))
    with pytest.raises(AccountError) as raised:
        client.create_quote(request(), request_id="r")
    assert raised.value.code == "INVALID_CREDENTIALS"
    assert SECRET not in str(raised.value) and SECRET not in repr(client) and SECRET not in caplog.text


@respx.mock
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_idempotent_calls_retry_5xx(client: TbbClient, status: int) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.get(f"{BASE}/v1/orders/TBB-1").mock(
        side_effect=[fail(status, "X"), httpx.Response(status, text="<html>oops</html>"), ok(ORDER)]
    )
    assert client.get_order("TBB-1", request_id="r").status == "awaiting_transfer"
    assert route.call_count == 3


@respx.mock
def test_retries_are_bounded(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.get(f"{BASE}/v1/orders/TBB-1").mock(return_value=fail(503, "SERVICE_UNAVAILABLE"))
    with pytest.raises(TransientError):
        client.get_order("TBB-1", request_id="r")
    assert route.call_count == 4  # max_attempts


@respx.mock
def test_retry_after_is_honoured(client: TbbClient, slept: list[float]) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    respx.post(f"{BASE}/v1/quotes").mock(side_effect=[fail(429, "RATE_LIMITED", {"Retry-After": "3"}), ok(QUOTE, 201)])
    client.create_quote(request(), request_id="r")
    assert slept and slept[0] >= 3.0


@respx.mock
def test_retry_after_beyond_the_time_budget_gives_up(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.post(f"{BASE}/v1/quotes").mock(return_value=fail(429, "RATE_LIMITED", {"Retry-After": "60"}))
    with pytest.raises(TransientError) as raised:
        client.create_quote(request(), request_id="r")
    assert raised.value.retry_after == 60.0 and route.call_count == 1


@respx.mock
def test_network_errors_on_idempotent_calls_are_retried(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.get(f"{BASE}/v1/orders").mock(side_effect=[httpx.ReadTimeout("slow"), page([ORDER])])
    assert isinstance(client.find_order_for_quote("qt_1", request_id="r"), OrderFound)
    assert route.calls.last.request.url.params["quote_id"] == "qt_1"


@respx.mock
def test_permanent_errors_are_not_retried(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.post(f"{BASE}/v1/quotes").mock(return_value=fail(404, "EVENT_NOT_FOUND"))
    with pytest.raises(PermanentError):
        client.create_quote(request(), request_id="r")
    assert route.call_count == 1


# ---- POST /v1/orders is never blindly retried ---------------------------------------------


@respx.mock
@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped"), httpx.ReadError("reset"),
     httpx.WriteError("half sent")],
    ids=lambda e: type(e).__name__,
)
def test_order_failures_after_sending_are_unknown_and_not_retried(client: TbbClient, failure: Exception) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.post(f"{BASE}/v1/orders").mock(side_effect=failure)
    with pytest.raises(OutcomeUnknown):
        client.create_order("qt_1", delivery_type="mobile_transfer", delivery_deadline=DEADLINE, request_id="r")
    assert route.call_count == 1


@respx.mock
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_order_5xx_is_unknown_and_not_retried(client: TbbClient, status: int) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.post(f"{BASE}/v1/orders").mock(return_value=fail(status, "X"))
    with pytest.raises(OutcomeUnknown):
        client.create_order("qt_1", delivery_type="mobile_transfer", delivery_deadline=DEADLINE, request_id="r")
    assert route.call_count == 1


@respx.mock
def test_order_is_retried_when_it_never_left(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.post(f"{BASE}/v1/orders").mock(
        side_effect=[httpx.ConnectError("refused"), fail(429, "RATE_LIMITED", {"Retry-After": "1"}), ok(ORDER, 201)]
    )
    order = client.create_order("qt_1", delivery_type="mobile_transfer", delivery_deadline=DEADLINE, request_id="r")
    assert order.transfer_email == "transfer-inbox-abc@ticketbuyback.com" and order.seat_range == "12-13"
    assert route.call_count == 3
    import json
    assert json.loads(route.calls.last.request.content) == {
        "quote_id": "qt_1", "delivery_type": "mobile_transfer", "delivery_deadline": "2030-01-01T18:00:00Z"}


@respx.mock
def test_unreadable_order_success_is_unknown(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    respx.post(f"{BASE}/v1/orders").mock(return_value=httpx.Response(201, text="not json"))
    with pytest.raises(OutcomeUnknown):
        client.create_order("qt_1", delivery_type="pdf", delivery_deadline=DEADLINE, request_id="r")


@respx.mock
def test_lookup_is_absent_only_for_a_complete_well_formed_empty_list(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    respx.get(f"{BASE}/v1/orders").mock(return_value=page([{**ORDER, "quote_id": "qt_other"}]))
    assert client.find_order_for_quote("qt_1", request_id="r") == OrderAbsent()


@respx.mock
def test_lookup_with_two_orders_for_one_quote_is_not_trusted(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    respx.get(f"{BASE}/v1/orders").mock(return_value=page([ORDER, {**ORDER, "order_id": "TBB-2"}]))
    answer = client.find_order_for_quote("qt_1", request_id="r")
    assert isinstance(answer, LookupUnknown) and "TBB-2" in answer.reason


@respx.mock
@pytest.mark.parametrize(
    ("response", "why"),
    [
        (page([], has_more=True), "paginated"),
        (page([], has_more="false"), "paginated"),
        (page([], has_more=None), "paginated"),
        (ok([]), "pagination block"),
        (page(["TBB-1"]), "without a quote_id"),
        (page([{"quote_id": "qt_1", "order_id": "TBB-1"}]), "unreadable order"),
    ],
    ids=["has_more", "has_more_string", "has_more_null", "no_pagination", "not_objects", "unreadable"],
)
def test_lookup_that_may_not_list_every_order_is_unknown_never_absent(
    client: TbbClient, response: httpx.Response, why: str
) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    respx.get(f"{BASE}/v1/orders").mock(return_value=response)
    answer = client.find_order_for_quote("qt_1", request_id="r")
    assert isinstance(answer, LookupUnknown) and why in answer.reason


@respx.mock
def test_lookup_without_the_envelope_is_retried_then_fails_not_absent(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.get(f"{BASE}/v1/orders").mock(return_value=httpx.Response(200, json={"data": []}))
    with pytest.raises(TransientError):
        client.find_order_for_quote("qt_1", request_id="r")
    assert route.call_count == 4


# ---- one overall deadline per call -------------------------------------------------------


@respx.mock
def test_no_request_is_sent_once_the_deadline_has_passed(client: TbbClient) -> None:
    auth = respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.post(f"{BASE}/v1/orders").mock(return_value=ok(ORDER, 201))
    with pytest.raises(DeadlineReached):
        client.create_order("qt_1", delivery_type="pdf", delivery_deadline=DEADLINE, request_id="r",
                            deadline=time.monotonic() - 1)
    assert route.call_count == 0 and auth.call_count == 0


@respx.mock
def test_retries_stop_before_the_deadline(client: TbbClient, slept: list[float]) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    # Retry-After 5 s would outlast a deadline 2 s away: no second try.
    route = respx.post(f"{BASE}/v1/quotes").mock(return_value=fail(503, "X", {"Retry-After": "5"}))
    with pytest.raises(TransientError):
        client.create_quote(request(), request_id="r", deadline=time.monotonic() + 2)
    assert route.call_count == 1 and slept == []


@respx.mock
def test_every_exchange_timeout_is_cut_to_the_time_left(client: TbbClient) -> None:
    respx.post(f"{BASE}/v1/auth/token").mock(return_value=token())
    route = respx.get(f"{BASE}/v1/orders/TBB-1").mock(return_value=ok(ORDER))
    client.get_order("TBB-1", request_id="r", deadline=time.monotonic() + 0.4)
    timeouts = route.calls.last.request.extensions["timeout"]
    assert 0 < timeouts["read"] <= 0.4 and 0 < timeouts["connect"] <= 0.4 and 0 < timeouts["pool"] <= 0.4


def test_waiting_for_a_stalled_token_fetch_ends_at_the_deadline() -> None:
    started = threading.Event()
    release = threading.Event()

    def stalled_fetch(deadline: float | None) -> tuple[str, float]:
        started.set()
        release.wait(10)
        return "tok", 3600.0

    cache = TokenCache(stalled_fetch)
    fetcher = threading.Thread(target=cache.get)
    fetcher.start()
    try:
        assert started.wait(5)
        before = time.monotonic()
        with pytest.raises(DeadlineReached):
            cache.get(time.monotonic() + 0.2)
        assert time.monotonic() - before < 2
    finally:
        release.set()
        fetcher.join()

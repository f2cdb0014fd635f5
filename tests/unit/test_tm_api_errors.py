"""Ticketmaster's error envelope -> typed exceptions: every code of the contract's table, 429
headers, niterun, unknown codes and shapes, and what a refusal means once a cart call (above all
a commit) may have been sent."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import pytest

from fulfilment.partners.base import (
    AccountError,
    NotFound,
    OutcomeUnknown,
    PartnerError,
    PermanentError,
    TransientError,
)
from fulfilment.partners.ticketmaster import assumed
from fulfilment.partners.ticketmaster.errors import (
    CaptchaRequired,
    CartInvalid,
    Maintenance,
    PaymentRefused,
    RateLimited,
    SoldOut,
    TmAccountError,
    TmNotFound,
    TmOutcomeUnknown,
    TmPermanentError,
    TmTransientError,
    UnknownCode,
    error_from_response,
    for_cart_call,
    is_commit_definite,
    parse_expiry,
    scrub,
)

APIKEY = "GkB8Z037ZfqbLCNtZViAgrEegbsrZ6Ne"


def envelope(status: int, code: Any, message: str = "the partner's words", *, http_code: int | None = None,
             severity: str = "ERROR", headers: dict[str, str] | None = None) -> httpx.Response:
    error: dict[str, Any] = {"message": message, "code": code, "http_code": http_code or status, "severity": severity}
    return httpx.Response(status, json={"error": error}, headers=headers)


TABLE = [
    (400, 20052, SoldOut, PermanentError),
    (403, 90001, TmPermanentError, PermanentError),
    (400, 20046, TmPermanentError, PermanentError),
    (400, 10104, TmPermanentError, PermanentError),
    (400, 10161, TmPermanentError, PermanentError),
    (400, 10002, TmPermanentError, PermanentError),
    (401, 10004, CaptchaRequired, AccountError),
    (400, 10031, CaptchaRequired, AccountError),
    (400, 20122, PaymentRefused, AccountError),
    (400, 20129, PaymentRefused, AccountError),
    (400, 20152, PaymentRefused, AccountError),
    (400, 90003, CartInvalid, PermanentError),
    (400, 21001, CartInvalid, PermanentError),
    (503, 20001, Maintenance, TransientError),
    (400, 20001, Maintenance, TransientError),  # the 2017 doc's niterun example says http_code 400
]


@pytest.mark.parametrize(("status", "code", "kind", "base"), TABLE, ids=[f"{c}-{s}" for s, c, _, _ in TABLE])
def test_every_documented_code_maps_to_its_kind(status: int, code: int, kind: type, base: type) -> None:
    error = error_from_response(envelope(status, code, severity="DEBUG"), operation="reserve")
    assert type(error) is kind and isinstance(error, base)
    assert error.code == str(code) and getattr(error, "tm_code", None) == code
    assert error.message == "the partner's words" and error.status == status
    assert getattr(error, "severity", None) == "DEBUG" and getattr(error, "operation", None) == "reserve"


@pytest.mark.parametrize(
    ("status", "kind", "base", "code"),
    [
        (500, TmTransientError, TransientError, "HTTP_500"),
        (502, TmTransientError, TransientError, "HTTP_502"),
        (503, TmTransientError, TransientError, "HTTP_503"),
        (504, TmTransientError, TransientError, "HTTP_504"),
        (404, TmNotFound, NotFound, "HTTP_404"),
        (401, TmAccountError, AccountError, "HTTP_401"),
        (403, TmAccountError, AccountError, "HTTP_403"),
        (405, UnknownCode, PermanentError, "HTTP_405"),
        (406, UnknownCode, PermanentError, "HTTP_406"),
        (429, RateLimited, TransientError, "RATE_LIMITED"),
    ],
)
def test_statuses_without_an_envelope(status: int, kind: type, base: type, code: str) -> None:
    error = error_from_response(httpx.Response(status, text="<html><h1>Gateway says no</h1></html>"))
    assert type(error) is kind and isinstance(error, base) and error.code == code
    assert "non-JSON body" in error.message and "Gateway says no" in error.message


def test_an_unknown_code_is_a_surprise_not_success() -> None:
    error = error_from_response(envelope(400, 55555))
    assert type(error) is UnknownCode and isinstance(error, PermanentError) and error.code == "55555"
    # ... even on a 5xx-looking http_code in a 4xx answer.
    assert type(error_from_response(envelope(409, 55555, http_code=500))) is UnknownCode


def test_codes_as_strings_are_read() -> None:
    assert type(error_from_response(envelope(400, "20052"))) is SoldOut


def test_envelope_without_code_and_json_without_envelope() -> None:
    error = error_from_response(httpx.Response(400, json={"error": {"message": "odd"}}))
    assert type(error) is UnknownCode and error.code == "HTTP_400" and "without a numeric code" in error.message
    error = error_from_response(httpx.Response(400, json={"fault": {"faultstring": "x"}}))
    assert type(error) is UnknownCode and "without an error envelope" in error.message
    error = error_from_response(httpx.Response(400, json=["not", "an", "object"]))
    assert type(error) is UnknownCode


def test_invalid_reserve_request_is_recognised_without_a_code() -> None:
    # Seed 004 gives only the message.
    error = error_from_response(httpx.Response(400, json={"error": {"message": "Invalid  Reserve request data structure "}}))
    assert type(error) is CartInvalid


def test_429_reads_ratelimit_expiry_in_milliseconds_and_the_quotas() -> None:
    expiry = dt.datetime(2030, 1, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)
    response = httpx.Response(429, json={"fault": "quota"}, headers={
        "Ratelimit-Expiry": str(int(expiry.timestamp() * 1000)),
        "Ratelimit-Quota-Allowed": "3600", "Ratelimit-Quota-Used": "3601", "Ratelimit-Quota-Available": "0",
    })
    error = error_from_response(response)
    assert isinstance(error, RateLimited) and isinstance(error, TransientError)
    assert error.retry_at == expiry and error.retry_at.tzinfo is dt.UTC
    assert (error.quota_allowed, error.quota_used, error.quota_available) == (3600, 3601, 0)
    assert error.retry_after is not None and abs(error.retry_after - (expiry.timestamp() - time.time())) < 5


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "0"])
def test_429_without_a_usable_expiry(value: str | None) -> None:
    headers = {} if value is None else {"Ratelimit-Expiry": value}
    error = error_from_response(httpx.Response(429, headers=headers))
    assert isinstance(error, RateLimited) and error.retry_at is None and error.retry_after is None


def test_expiry_is_milliseconds_not_seconds() -> None:
    assert parse_expiry("1893456000000") == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_long_and_secret_bearing_bodies_are_cut_and_scrubbed() -> None:
    page = f"<html>Bad gateway for GET /partners/v1/events/1/cart?apikey={APIKEY}&cart_id=x {'x' * 5000}</html>"
    error = error_from_response(httpx.Response(502, text=page), secrets=[APIKEY])
    assert APIKEY not in str(error) and "apikey=***" in error.message and len(error.message) < 400
    error = error_from_response(envelope(400, 55555, f"unknown key {APIKEY}"), secrets=[APIKEY])
    assert APIKEY not in str(error)


def test_scrub() -> None:
    assert scrub(f"x?apikey={APIKEY}&b=1") == "x?apikey=***&b=1"
    assert scrub("order_token=abc-def&z") == "order_token=***&z"
    assert scrub(f"see {APIKEY} here", [APIKEY]) == "see *** here"


# ---- once a cart call may have been sent ---------------------------------------------------------


@pytest.mark.parametrize("code", sorted(assumed.COMMIT_DEFINITE_CODES))
def test_documented_refusals_of_a_commit_are_definite(code: int) -> None:
    error = error_from_response(envelope(400, code), operation="commit")
    assert is_commit_definite(error)
    assert for_cart_call(error, operation="commit", commit=True, cart_id="c1") is error
    assert getattr(error, "cart_id", None) == "c1"


@pytest.mark.parametrize(
    "response",
    [
        envelope(400, 55555),  # unknown code
        envelope(500, 12345),
        httpx.Response(500, text="oops"),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(503, json={}),
        httpx.Response(504, text=""),
        httpx.Response(400, text="not json"),
        httpx.Response(404, text=""),
        httpx.Response(401, json={"fault": {"faultstring": "Invalid ApiKey"}}),
    ],
    ids=["unknown_code", "500_unknown_code", "500", "502", "503", "504", "400_no_envelope", "404", "401_no_code"],
)
def test_any_other_answer_to_a_commit_is_outcome_unknown(response: httpx.Response) -> None:
    error = for_cart_call(error_from_response(response, operation="commit"), operation="commit", commit=True, cart_id="c1")
    assert isinstance(error, TmOutcomeUnknown) and isinstance(error, OutcomeUnknown)
    assert error.cart_id == "c1" and error.operation == "commit" and error.status == response.status_code


def test_a_429_to_a_commit_is_definite() -> None:
    error = error_from_response(httpx.Response(429))
    assert for_cart_call(error, operation="commit", commit=True, cart_id="c1") is error


@pytest.mark.parametrize("operation", ["reserve", "add_payment", "delete_cart"])
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_to_other_cart_calls_is_unknown(operation: str, status: int) -> None:
    error = for_cart_call(error_from_response(httpx.Response(status)), operation=operation, commit=False, cart_id="c1")
    assert isinstance(error, OutcomeUnknown) and error.code == f"HTTP_{status}"


@pytest.mark.parametrize(
    ("response", "kind"),
    [(envelope(400, 20052), SoldOut), (envelope(503, 20001), Maintenance), (httpx.Response(429), RateLimited),
     (envelope(400, 90003), CartInvalid), (envelope(400, 20122), PaymentRefused), (envelope(400, 55555), UnknownCode),
     (httpx.Response(404), TmNotFound)],
)
def test_documented_refusals_of_other_cart_calls_keep_their_kind(response: httpx.Response, kind: type) -> None:
    error: PartnerError = for_cart_call(error_from_response(response), operation="reserve", commit=False, cart_id=None)
    assert type(error) is kind


# ---- issue 20: what mutation testing found untested ---------------------------------------------


def test_a_commit_without_proof_of_refusal_keeps_the_answers_code_message_and_tm_code() -> None:
    answer = TmTransientError("502", "Bad gateway", status=502)
    answer.tm_code = 10099
    unknown = for_cart_call(answer, operation="commit", commit=True, cart_id="C1")
    assert isinstance(unknown, TmOutcomeUnknown)
    assert (unknown.code, unknown.status, unknown.tm_code, unknown.cart_id) == ("502", 502, 10099, "C1")
    assert unknown.message == "commit answered without proof of refusal: Bad gateway"


def test_a_cart_id_the_error_carries_is_never_replaced() -> None:
    refused = CartInvalid("90003", "Invalid cart", status=400)
    refused.cart_id = "C-from-the-answer"
    assert for_cart_call(refused, operation="add_payment", commit=False, cart_id=None).cart_id == "C-from-the-answer"
    unnamed = CartInvalid("90003", "Invalid cart", status=400)
    assert for_cart_call(unnamed, operation="add_payment", commit=False, cart_id="C2").cart_id == "C2"


def test_an_error_of_another_partner_proves_no_commit_refusal() -> None:
    assert is_commit_definite(PartnerError("SOLD_OUT", "no", status=400)) is False


def test_a_reserve_that_may_have_been_processed_is_unknown_with_the_answers_details() -> None:
    answer = TmTransientError("504", "Gateway timeout", status=504)
    answer.tm_code = 10098
    unknown = for_cart_call(answer, operation="reserve", commit=False, cart_id="C3")
    assert isinstance(unknown, TmOutcomeUnknown)
    assert (unknown.code, unknown.status, unknown.tm_code, unknown.cart_id) == ("504", 504, 10098, "C3")
    assert unknown.operation == "reserve"
    assert unknown.message == "reserve failed after it may have been processed: Gateway timeout"


def test_a_cart_call_failure_that_is_no_ticketmaster_error_is_still_classified() -> None:
    """A failure our own transport raised (no TM code on it): a commit's is an unknown outcome naming
    the cart, a reserve's 5xx too; neither crashes for the missing TM details."""
    for commit, operation in ((True, "commit"), (False, "reserve")):
        classified = for_cart_call(TransientError("TIMEOUT", "no answer in time", status=None), operation=operation,
                                   commit=commit, cart_id="cart-1")
        assert isinstance(classified, TmOutcomeUnknown)
        assert (classified.code, classified.cart_id, classified.tm_code, classified.operation) == (
            "TIMEOUT", "cart-1", None, operation)

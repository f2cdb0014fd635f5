"""The TBB error envelope → typed exceptions, by error.code, for every documented code."""

from __future__ import annotations

import httpx
import pytest

from fulfilment.partners.base import (
    AccountError,
    NotFound,
    PermanentError,
    QuoteAlreadyConsumed,
    QuoteExpired,
    TransientError,
)
from fulfilment.partners.tbb.errors import error_from_response


def envelope(status: int, code: str, message: str = "nope", headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"success": False, "error": {"code": code, "message": message, "details": {}},
            "meta": {"request_id": "r", "timestamp": "2026-01-01T00:00:00Z"}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (404, "EVENT_NOT_FOUND", PermanentError),
        (404, "SECTION_NOT_FOUND", PermanentError),
        (422, "NO_INVENTORY_AVAILABLE", PermanentError),
        (422, "INSUFFICIENT_QUANTITY", PermanentError),
        (422, "EVENT_EXPIRED", PermanentError),
        (400, "VALIDATION_ERROR", PermanentError),
        (422, "INVALID_DELIVERY_DEADLINE", PermanentError),
        (403, "FORBIDDEN", PermanentError),
        (404, "QUOTE_NOT_FOUND", PermanentError),
        (403, "PAYMENT_NOT_CONFIGURED", AccountError),
        (403, "PAYOUT_METHOD_NOT_CONFIGURED", AccountError),
        (401, "INVALID_CREDENTIALS", AccountError),
        (403, "ACCOUNT_SUSPENDED", AccountError),
        (401, "TOKEN_EXPIRED", AccountError),
        (401, "UNAUTHORIZED", AccountError),
        (422, "QUOTE_EXPIRED", QuoteExpired),
        (422, "QUOTE_ALREADY_CONSUMED", QuoteAlreadyConsumed),
        (404, "ORDER_NOT_FOUND", NotFound),
        (500, "INTERNAL_ERROR", TransientError),
        (502, "BAD_GATEWAY", TransientError),
        (503, "SERVICE_UNAVAILABLE", TransientError),
        (504, "GATEWAY_TIMEOUT", TransientError),
        (429, "RATE_LIMITED", TransientError),
    ],
)
def test_documented_codes_map_to_their_kind(status: int, code: str, kind: type) -> None:
    error = error_from_response(envelope(status, code, "the partner's words"))
    assert type(error) is kind
    assert error.code == code
    assert error.message == "the partner's words"
    assert error.status == status


def test_the_code_decides_not_the_status() -> None:
    # A QUOTE_EXPIRED sent with an unusual status is still QUOTE_EXPIRED.
    assert isinstance(error_from_response(envelope(400, "QUOTE_EXPIRED")), QuoteExpired)


def test_retry_after_is_read_from_429() -> None:
    error = error_from_response(envelope(429, "RATE_LIMITED", headers={"Retry-After": "7"}))
    assert isinstance(error, TransientError)
    assert error.retry_after == 7.0


def test_retry_after_that_is_not_a_number_is_ignored() -> None:
    error = error_from_response(envelope(429, "RATE_LIMITED", headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}))
    assert isinstance(error, TransientError) and error.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_non_json_5xx_bodies_are_transient_with_a_readable_message(status: int) -> None:
    error = error_from_response(httpx.Response(status, text="<html><h1>Bad Gateway</h1></html>"))
    assert isinstance(error, TransientError)
    assert error.code == f"HTTP_{status}"
    assert "non-JSON body" in error.message and "Bad Gateway" in error.message


def test_plain_429_without_envelope_is_rate_limited() -> None:
    error = error_from_response(httpx.Response(429, text="slow down", headers={"Retry-After": "2"}))
    assert isinstance(error, TransientError) and error.code == "RATE_LIMITED" and error.retry_after == 2.0


def test_json_without_error_object_is_handled() -> None:
    error = error_from_response(httpx.Response(400, json={"detail": "weird"}))
    assert isinstance(error, PermanentError)
    assert error.code == "HTTP_400" and "without an error envelope" in error.message


def test_unknown_4xx_code_is_permanent_and_keeps_its_code() -> None:
    error = error_from_response(envelope(409, "SOMETHING_NEW"))
    assert isinstance(error, PermanentError) and error.code == "SOMETHING_NEW"


def test_long_bodies_are_cut_in_messages() -> None:
    error = error_from_response(httpx.Response(502, text="x" * 10_000))
    assert len(error.message) < 400


@pytest.mark.parametrize(("status", "code"), [(404, "SOMETHING_NEW"), (400, "ORDER_NOT_FOUND"), (410, "NOT_FOUND")])
def test_not_found_by_its_code_or_by_a_404(status: int, code: str) -> None:
    """A lookup's "no such order" is known by its code whatever the status, or by a 404 whatever the code
    (mutation testing: `or` -> `and`, the code's spelling)."""
    error = error_from_response(envelope(status, code))
    assert type(error) is NotFound and (error.code, error.status) == (code, status)


def test_an_unknown_4xx_code_is_permanent_and_keeps_its_status() -> None:
    error = error_from_response(envelope(409, "SOMETHING_NEW"))
    assert type(error) is PermanentError and (error.code, error.status) == ("SOMETHING_NEW", 409)


@pytest.mark.parametrize(("header", "seconds"), [("0", 0.0), ("-5", 0.0), ("0.5", 0.5)])
def test_retry_after_is_never_negative_and_never_raised(header: str, seconds: float) -> None:
    error = error_from_response(envelope(429, "RATE_LIMITED", headers={"Retry-After": header}))
    assert isinstance(error, TransientError) and error.retry_after == seconds


@pytest.mark.parametrize("body", ['[{"error": {"code": "QUOTE_EXPIRED"}}]', '"QUOTE_EXPIRED"', "42", "null"])
def test_a_json_body_that_is_no_object_is_no_envelope(body: str) -> None:
    """A list, a string, a number or null as the whole body: no code read from it, no crash."""
    error = error_from_response(httpx.Response(422, content=body.encode(), headers={"content-type": "application/json"}))
    assert type(error) is PermanentError and error.code == "HTTP_422"
    assert "without an error envelope" in error.message


def test_a_body_is_cut_after_200_characters_and_marked() -> None:
    whole = error_from_response(httpx.Response(502, text="a" * 200))
    assert whole.message.endswith(": " + "a" * 200)
    cut = error_from_response(httpx.Response(502, text="b" * 201))
    assert cut.message.endswith(": " + "b" * 200 + "…")

"""TBB's error envelope mapped onto the partner error kinds, by `error.code`.

Branch on the code, never on the message.  Unknown codes fall back on the HTTP status.
"""

from __future__ import annotations

import json

import httpx

from fulfilment.partners.base import (
    AccountError,
    NotFound,
    PartnerError,
    PermanentError,
    QuoteAlreadyConsumed,
    QuoteExpired,
    TransientError,
)
from fulfilment.partners.tbb import assumed

PERMANENT_CODES = frozenset(
    {
        "EVENT_NOT_FOUND",
        "SECTION_NOT_FOUND",
        "NO_INVENTORY_AVAILABLE",
        "INSUFFICIENT_QUANTITY",
        "EVENT_EXPIRED",
        "VALIDATION_ERROR",
        "INVALID_DELIVERY_DEADLINE",
        "FORBIDDEN",
        "QUOTE_NOT_FOUND",
        "UNSUPPORTED_GRANT_TYPE",
    }
)
# Both names of "the account has no payout/payment method" are the same condition.
ACCOUNT_CODES = frozenset(
    {"PAYMENT_NOT_CONFIGURED", "PAYOUT_METHOD_NOT_CONFIGURED", "INVALID_CREDENTIALS", "ACCOUNT_SUSPENDED"}
)
# Answered once by re-authenticating (see client.TbbClient._send).
AUTH_RETRY_CODES = frozenset({"TOKEN_EXPIRED", "UNAUTHORIZED"})
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def parse_retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare for APIs; fall back on our own backoff


def error_from_response(response: httpx.Response) -> PartnerError:
    """Build the typed exception for a non-2xx response, whatever its body looks like."""
    status = response.status_code
    code, message = _read_envelope(response)
    if code is None:
        code = "RATE_LIMITED" if status == 429 else f"HTTP_{status}"
    if status in TRANSIENT_STATUSES:
        return TransientError(code, message, status=status, retry_after=parse_retry_after(response))
    if code == "QUOTE_EXPIRED":
        return QuoteExpired(code, message, status=status)
    if code in assumed.ORDER_EXISTS_CODES:
        return QuoteAlreadyConsumed(code, message, status=status)
    if code in ACCOUNT_CODES:
        return AccountError(code, message, status=status)
    if code in PERMANENT_CODES:
        return PermanentError(code, message, status=status)
    if code in {"ORDER_NOT_FOUND", "NOT_FOUND"} or status == 404:
        return NotFound(code, message, status=status)
    if code in AUTH_RETRY_CODES:
        return AccountError(code, message, status=status)
    # An unknown 4xx code: the request was understood and refused; retrying will not help.
    return PermanentError(code, message, status=status)


def _read_envelope(response: httpx.Response) -> tuple[str | None, str]:
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        return None, f"HTTP {response.status_code} with a non-JSON body: {_snippet(text)}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None, f"HTTP {response.status_code} without an error envelope: {_snippet(text)}"
    return error["code"], str(error.get("message") or "")


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"

"""The sandbox's error vocabulary: one table of error code -> (HTTP status, default message).

Handlers raise ``ApiError`` and a single exception handler turns it into the error envelope, so
each code's status lives in exactly one place. Codes marked ASSUMED are not in the public docs.
"""

from __future__ import annotations

from typing import Any

# code -> (status, default message)
ERROR_CODES: dict[str, tuple[int, str]] = {
    # Authentication (documented).
    "INVALID_CREDENTIALS": (401, "The client_id or client_secret is invalid."),
    "UNSUPPORTED_GRANT_TYPE": (400, "Only the client_credentials grant type is supported."),
    "ACCOUNT_SUSPENDED": (403, "This partner account is suspended."),
    "UNAUTHORIZED": (401, "A valid Bearer token is required."),
    "TOKEN_EXPIRED": (401, "The access token has expired. Please re-authenticate."),
    # Payment setup (documented; the newer docs revision calls it PAYOUT_METHOD_NOT_CONFIGURED).
    "PAYMENT_NOT_CONFIGURED": (403, "A Routable payment method must be configured before quotes or orders can be created."),
    "PAYOUT_METHOD_NOT_CONFIGURED": (403, "A Routable payout method must be configured before quotes or orders can be created."),
    # Quotes (documented).
    "EVENT_NOT_FOUND": (404, "The requested event was not found."),
    "SECTION_NOT_FOUND": (404, "The requested section or row was not found."),
    "NO_INVENTORY_AVAILABLE": (422, "No inventory is available for the requested section/row."),
    "INSUFFICIENT_QUANTITY": (422, "The requested quantity exceeds the available inventory."),
    "EVENT_EXPIRED": (422, "The event date has passed."),
    # Orders (documented).
    "QUOTE_NOT_FOUND": (404, "The requested quote was not found."),
    "FORBIDDEN": (403, "This resource belongs to a different partner."),
    "QUOTE_EXPIRED": (422, "The requested quote has expired. Please create a new quote."),
    "QUOTE_ALREADY_CONSUMED": (422, "This quote has already been used to create an order."),
    "VALIDATION_ERROR": (400, "The request is invalid."),
    "INVALID_DELIVERY_DEADLINE": (422, "delivery_deadline must be before the event start time."),
    # ASSUMED: order read endpoints, rate limiting, server errors, routing.
    "ORDER_NOT_FOUND": (404, "The requested order was not found."),
    "RATE_LIMITED": (429, "Too many requests. Retry after the number of seconds in Retry-After."),
    "INTERNAL_ERROR": (500, "An internal error occurred."),
    "BAD_GATEWAY": (502, "Bad gateway."),
    "SERVICE_UNAVAILABLE": (503, "The service is temporarily unavailable."),
    "GATEWAY_TIMEOUT": (504, "The upstream service timed out."),
    "NOT_FOUND": (404, "No such endpoint."),
    "METHOD_NOT_ALLOWED": (405, "Method not allowed on this endpoint."),
}

# Envelope code used for each injected/real 5xx status (ASSUMED).
SERVER_ERROR_CODES: dict[int, str] = {
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


class ApiError(Exception):
    """A contract error; rendered as ``{"success": false, "error": {...}}`` with its status."""

    def __init__(
        self,
        code: str,
        details: dict[str, Any] | None = None,
        *,
        message: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_status, default_message = ERROR_CODES[code]
        self.code = code
        self.status = status if status is not None else default_status
        self.message = message if message is not None else default_message
        self.details: dict[str, Any] = details if details is not None else {}
        self.headers = headers or {}
        super().__init__(f"{self.status} {code}: {self.message}")


def validation_error(errors: list[dict[str, str]]) -> ApiError:
    """400 VALIDATION_ERROR with ``details.errors = [{"field", "message"}, ...]``."""
    return ApiError("VALIDATION_ERROR", {"errors": errors})

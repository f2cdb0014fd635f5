"""Ticketmaster's error envelope mapped onto the partner error kinds of `fulfilment.partners.base`.

The envelope is `{"error": {"message", "code": <int>, "http_code", "severity"}}`.  We branch on
`code` (then on the HTTP status), never on the message -- with one documented exception: the
seed gives "Invalid reserve request data structure" without a code.

Every class here is a subclass of a base kind, so the core can catch the kind it cares about
(TransientError, PermanentError, AccountError, OutcomeUnknown, NotFound) and, where it must
tell them apart, the TM class (RateLimited, Maintenance, SoldOut, CartInvalid, PaymentRefused,
CaptchaRequired, ...).  Every one carries `operation`, `tm_code`, `severity` and `cart_id`.

No message built here holds the apikey, an order token or any other secret: partner text and
body snippets go through `scrub` (an error page may echo the request URL).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import httpx

from fulfilment.partners.base import (
    AccountError,
    DeadlineReached,
    NotFound,
    OutcomeUnknown,
    PartnerError,
    PermanentError,
    TransientError,
)
from fulfilment.partners.ticketmaster import assumed

# ---- the kinds -------------------------------------------------------------------------------


class TmDetails:
    """What every TM error carries besides code/message/status (set by `_with`)."""

    operation: str | None = None
    tm_code: int | None = None
    severity: str | None = None
    cart_id: str | None = None


class TmTransientError(TmDetails, TransientError):
    """Worth trying again later: 5xx, network trouble on a call safe to repeat, an unreadable read."""


class TmPermanentError(TmDetails, PermanentError):
    """The request is wrong or impossible (documented code): fail the purchase with this code."""


class TmAccountError(TmDetails, AccountError):
    """Our account cannot do this now: pause purchases, tell operators."""


class TmNotFound(TmDetails, NotFound):
    """An event, order or endpoint TM does not know."""


class TmOutcomeUnknown(TmDetails, OutcomeUnknown):
    """A cart call may or may not have taken effect: resolve by asking, never by repeating blindly.

    `order_number` is set when an unreadable commit answer still named one (evidence is never dropped).
    """

    order_number: str | None = None


class NotSent(TmTransientError):
    """The connection was never established (connect error, connect/pool timeout): TM cannot have
    acted on the request; sending it again later is safe, for a commit too."""


class RateLimited(TmTransientError):
    """429: a quota of our apikey is used up.  Refused at the gateway, unprocessed.

    `retry_at` (UTC) is when the next quota interval starts (`Ratelimit-Expiry`, epoch ms), or
    None when TM did not say; `retry_after` is the same in seconds from when it was read.
    """

    retry_at: dt.datetime | None = None
    quota_allowed: int | None = None
    quota_used: int | None = None
    quota_available: int | None = None


class Maintenance(TmTransientError):
    """Code 20001: niterun (nightly maintenance, in the event's local time) or the ticketing system
    is down.  Nothing was processed.  Not retried inside a call: the window lasts hours."""


class PollingExpired(TmTransientError):
    """The polling URL of an idempotent read is no longer known to TM: start the read again."""


class MalformedResponse(TmTransientError):
    """A 2xx whose body does not have the documented shape (on a read: worth one more try)."""

    def __init__(self, what: str) -> None:
        super().__init__("MALFORMED_RESPONSE", what)


class UnexpectedResponse(TmTransientError):
    """A status this API never documents for the call (1xx, 3xx, a 202 where nothing polls)."""


class SoldOut(TmPermanentError):
    """20052 "No inventory found to match request" (also: no contiguous seats for the request)."""


class CartInvalid(TmPermanentError):
    """90003 / 21001 / "Invalid reserve request data structure": the cart is stale, expired or not
    ours, or the body is wrong.  Proves nothing was bought *by this request* only: if an earlier
    commit of the cart may have been sent, it may be why the cart is no longer valid."""


class UnknownCode(TmPermanentError):
    """A 4xx whose code (or shape) we do not know: a surprise, shown to operators, never success."""


class PaymentRefused(TmAccountError):
    """20122 not accepted, 20129 no funds, 20152 bad security code: the card/account must be fixed."""


class CaptchaRequired(TmAccountError):
    """10004 captcha required / 10031 captcha invalid: a server-side buyer cannot solve it."""


# ---- the table ------------------------------------------------------------------------------

SOLD_OUT_CODES = frozenset({20052})
CART_INVALID_CODES = frozenset({90003, 21001})
PAYMENT_REFUSED_CODES = frozenset({20122, 20129, 20152})
CAPTCHA_CODES = frozenset({10004, 10031})
MAINTENANCE_CODES = frozenset({20001})
# 90001 not API-transactable, 20046 not sellable in this channel, 10104 invalid delivery method,
# 10161 ticket limit reached, 10002 invalid input data type (2017 doc's example).
PERMANENT_CODES = frozenset({90001, 20046, 10104, 10161, 10002})
KNOWN_CODES = SOLD_OUT_CODES | CART_INVALID_CODES | PAYMENT_REFUSED_CODES | CAPTCHA_CODES | MAINTENANCE_CODES | PERMANENT_CODES

RATE_LIMIT_STATUS = 429


class Envelope:
    """The parts of an error answer we read."""

    __slots__ = ("code", "message", "severity", "http_code")

    def __init__(self, code: int | None, message: str, severity: str | None, http_code: int | None) -> None:
        self.code = code
        self.message = message
        self.severity = severity
        self.http_code = http_code


def read_envelope(response: httpx.Response, secrets: Iterable[str] = ()) -> Envelope:
    """The error envelope of `response`, or a code-less Envelope describing what came instead."""
    status = response.status_code
    text = _text(response)
    try:
        body = json.loads(text) if text else None
    except ValueError:
        return Envelope(None, f"HTTP {status} with a non-JSON body: {snippet(text, secrets)}", None, None)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return Envelope(None, f"HTTP {status} without an error envelope: {snippet(text, secrets)}", None, None)
    code = _int_or_none(error.get("code"))
    message = scrub(str(error.get("message") or ""), secrets)
    severity = error.get("severity") if isinstance(error.get("severity"), str) else None
    if code is None:
        message = f"HTTP {status} with an error envelope without a numeric code: {message or snippet(text, secrets)}"
    return Envelope(code, message, severity, _int_or_none(error.get("http_code")))


def error_from_response(response: httpx.Response, *, operation: str | None = None,
                        secrets: Iterable[str] = ()) -> PartnerError:
    """The typed exception for a non-2xx answer, by the contract's table (no per-call policy:
    see `for_cart_call` for what a cart call's answer means)."""
    secrets = tuple(secrets)
    status = response.status_code
    env = read_envelope(response, secrets)
    code = env.code
    code_str = str(code) if code is not None else ("RATE_LIMITED" if status == RATE_LIMIT_STATUS else f"HTTP_{status}")
    error: PartnerError
    if status == RATE_LIMIT_STATUS:
        error = rate_limited(response, code_str, env.message)
    elif code in MAINTENANCE_CODES:
        # The 2017 doc shows it with http_code 400, the contract with 503: the code decides.
        error = Maintenance(code_str, env.message, status=status)
    elif code in SOLD_OUT_CODES:
        error = SoldOut(code_str, env.message, status=status)
    elif code in CART_INVALID_CODES or ((code is None or code not in KNOWN_CODES) and _is_cart_invalid_text(env.message)):
        error = CartInvalid(code_str, env.message, status=status)
    elif code in PAYMENT_REFUSED_CODES:
        error = PaymentRefused(code_str, env.message, status=status)
    elif code in CAPTCHA_CODES:
        error = CaptchaRequired(code_str, env.message, status=status)
    elif code in PERMANENT_CODES:
        error = TmPermanentError(code_str, env.message, status=status)
    elif status >= 500:
        error = TmTransientError(code_str, env.message, status=status)
    elif status == 404:
        error = TmNotFound(code_str, env.message, status=status)
    elif status in assumed.ACCOUNT_STATUSES:
        error = TmAccountError(code_str, env.message, status=status)
    else:
        error = UnknownCode(code_str, env.message, status=status)
    return _with(error, operation=operation, tm_code=code, severity=env.severity)


def is_commit_definite(error: PartnerError) -> bool:
    """Does this refusal prove that the commit it answers bought nothing?"""
    if isinstance(error, RateLimited):
        return True  # assumed.py: refused by the quota gateway before anything is processed
    tm_code = getattr(error, "tm_code", None)
    if tm_code in assumed.COMMIT_DEFINITE_CODES:
        return True
    return isinstance(error, CartInvalid)  # recognised by its message, without a code


POLLING_GONE = "POLLING_GONE"


def polling_url_gone(error: BaseException) -> bool:
    """Did TM say the polling URL itself is gone (404/410 without a code, assumed.POLLING_GONE_STATUSES)?
    Only then may a stored polling URL be forgotten: any other failure of a poll proves nothing."""
    return isinstance(error, (TmOutcomeUnknown, PollingExpired)) and error.code == POLLING_GONE


def for_cart_call(error: PartnerError, *, operation: str, commit: bool, cart_id: str | None) -> PartnerError:
    """What a refusal means once a cart call (reserve, payment, commit, delete) may have been sent.

    - commit: only a refusal `is_commit_definite` stays what it is; anything else is OutcomeUnknown;
    - reserve, payment, delete: a 5xx (other than niterun) is OutcomeUnknown (it may have been
      processed before failing); documented 4xx codes keep their kind.
    """
    if isinstance(error, TmDetails) and error.cart_id is None:
        error.cart_id = cart_id
    if commit:
        if is_commit_definite(error):
            return error
        return unknown(getattr(error, "code", "UNKNOWN"), f"commit answered without proof of refusal: {error.message}",
                       operation=operation, status=error.status, cart_id=cart_id,
                       tm_code=getattr(error, "tm_code", None))
    if isinstance(error, (RateLimited, Maintenance)):
        return error
    if isinstance(error, TransientError):
        return unknown(error.code, f"{operation} failed after it may have been processed: {error.message}",
                       operation=operation, status=error.status, cart_id=cart_id,
                       tm_code=getattr(error, "tm_code", None))
    return error


def unknown(code: str, message: str, *, operation: str, status: int | None = None, cart_id: str | None = None,
            tm_code: int | None = None, order_number: str | None = None) -> TmOutcomeUnknown:
    error = _with(TmOutcomeUnknown(code, message, status=status), operation=operation, tm_code=tm_code, cart_id=cart_id)
    error.order_number = order_number
    return error


def rate_limited(response: httpx.Response, code: str, message: str, *, now: float | None = None) -> RateLimited:
    """A RateLimited with `retry_at` from `Ratelimit-Expiry` (UTC epoch milliseconds) and the quotas."""
    headers = response.headers
    retry_at = parse_expiry(headers.get("Ratelimit-Expiry"))
    now = time.time() if now is None else now
    retry_after = None if retry_at is None else max(0.0, retry_at.timestamp() - now)
    error = RateLimited(code, message or "quota exceeded", status=response.status_code, retry_after=retry_after)
    error.retry_at = retry_at
    error.quota_allowed = _int_or_none(headers.get("Ratelimit-Quota-Allowed"))
    error.quota_used = _int_or_none(headers.get("Ratelimit-Quota-Used"))
    error.quota_available = _int_or_none(headers.get("Ratelimit-Quota-Available"))
    return error


def parse_expiry(value: str | None) -> dt.datetime | None:
    """`Ratelimit-Expiry`: when the next quota interval starts, as UTC epoch **milliseconds**."""
    if value is None:
        return None
    try:
        millis = int(Decimal(value.strip()))
    except (ArithmeticError, ValueError):
        return None
    if millis <= 0:
        return None
    try:
        return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def deadline_reached(what: str) -> DeadlineReached:
    return DeadlineReached("DEADLINE_REACHED", what)


# ---- secrets out of text ---------------------------------------------------------------------

_SECRET_QUERY = re.compile(r"(?i)\b((?:apikey|api_key|x-api-key|order_token|token)\s*[=:]\s*\"?)[^\s&\"',}]+")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secret values and without anything that looks like `apikey=...`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _SECRET_QUERY.sub(lambda m: m.group(1) + "***", text)


def snippet(text: str, secrets: Iterable[str] = (), limit: int = 200) -> str:
    text = " ".join(scrub(text, secrets).split())
    return text if len(text) <= limit else text[:limit] + "…"


# ---- helpers --------------------------------------------------------------------------------


def _with(error: Any, *, operation: str | None, tm_code: int | None = None, severity: str | None = None,
          cart_id: str | None = None) -> Any:
    error.operation = operation
    error.tm_code = tm_code
    error.severity = severity
    if cart_id is not None:
        error.cart_id = cart_id
    return error


def _text(response: httpx.Response) -> str:
    try:
        return response.text
    except (UnicodeDecodeError, LookupError):
        return response.content.decode("utf-8", "replace")


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _is_cart_invalid_text(message: str) -> bool:
    return assumed.CART_INVALID_MESSAGE in " ".join(message.lower().split())

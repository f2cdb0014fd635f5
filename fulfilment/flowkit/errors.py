"""The kinds of partner failure the core and every flow understand.

A partner's client maps its own errors onto these (partners/<name>/errors.py); the steps and the
flow kit decide what each kind means for a purchase (retry, pause, fail, unknown outcome).
"""

from __future__ import annotations

from fulfilment.outages import partner_unavailable_when


class PartnerError(Exception):
    """Base of every partner failure.  `code` is the partner's code (or our own)."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{code} (HTTP {status}): {message}" if status else f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class TransientError(PartnerError):
    """Worth retrying later: 5xx, 429, network trouble on a call that is safe to repeat."""

    def __init__(self, code: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(code, message, status=status)
        self.retry_after = retry_after


class OutcomeUnknown(PartnerError):
    """A non-idempotent call (create order) may or may not have taken effect."""


class PermanentError(PartnerError):
    """The request itself is wrong or impossible: fail the purchase with this code."""


class AccountError(PartnerError):
    """Our account cannot do this now (payment not configured, bad credentials, suspended).

    Purchases pause instead of failing: the fix is on the account, not the request.
    """


class QuoteExpired(PartnerError):
    """The partner refused the quote as expired; nothing was ordered."""


class QuoteAlreadyConsumed(PartnerError):
    """The quote was used already: an order from it exists (maybe ours from an earlier try)."""


class DeadlineReached(TransientError):
    """The step's deadline came before the call could be (re)tried: nothing was sent by this try."""


class NotFound(PartnerError):
    """The thing asked for does not exist (an order id, on a status read)."""


__all__ = [
    "AccountError", "DeadlineReached", "NotFound", "OutcomeUnknown", "PartnerError", "PermanentError",
    "QuoteAlreadyConsumed", "QuoteExpired", "TransientError",
]


# A partner answering 5xx/429 or out of reach is an outage to log quietly (fulfilment/outages.py).
partner_unavailable_when(TransientError, but=(DeadlineReached,))

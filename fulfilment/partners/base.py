"""A quote/order partner's client interface (TBB's; partners/tbb/flow.py drives it) and its types.

Every call takes `deadline`, a `time.monotonic()` instant by which it must have
returned, whatever it does inside (connect, write, read, authentication, retries):
the step's claim lease ends soon after it, and an answer that comes later must not be
waited for (invariant 8).  A client makes it hard by sending its requests through
`partners/deadline.py` (DeadlineTransport, the request extension DEADLINE): every socket
operation and every chunk of an answer is cut at it.  Lookups are three-valued: found, absent, unknown.

Every partner is a flow (flowkit/flow.py `PartnerFlow`); these are the types of TBB's quote -> order
-> transfer flow (partners/tbb/flow.py).  Adding a partner: README "Adding a partner".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Protocol

# The error kinds are the flow kit's (flowkit/errors.py): partner code names them from here too.
from fulfilment.flowkit.errors import *  # noqa: F403


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    event_id: str
    section_name: str
    row_name: str | None
    quantity: int


@dataclass(frozen=True, slots=True)
class Quote:
    quote_id: str
    expires_at: dt.datetime
    section_name: str
    row_name: str | None
    quantity: int
    unit_price: Decimal
    subtotal: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    status: str  # awaiting_transfer | transfer_complete | transfer_expired | cancelled
    quote_id: str
    transfer_email: str | None
    seat_range: str | None
    row_name: str | None
    unit_price: Decimal | None
    subtotal: Decimal | None


def order_details(order: Order) -> dict[str, str | None]:
    """The order as plain JSON (kept with an orphan order, shown to operators)."""
    return {name: None if value is None else str(value) for name, value in asdict(order).items()}


@dataclass(frozen=True, slots=True)
class OrderFound:
    order: Order


@dataclass(frozen=True, slots=True)
class OrderAbsent:
    """A complete, well-formed answer that lists no order from the quote.

    What it proves is the core's policy, not the partner's: once an order request may
    have reached the partner, a lookup may lag behind it, so this alone proves nothing
    (partners/tbb/flow.py).
    """


@dataclass(frozen=True, slots=True)
class LookupUnknown:
    """The partner's answer does not tell (paginated, malformed, more than one order...)."""

    reason: str


OrderLookup = OrderFound | OrderAbsent | LookupUnknown


ORDER_FINAL_STATUSES = frozenset({"transfer_complete", "transfer_expired", "cancelled"})


class Partner(Protocol):
    name: str

    def create_quote(self, request: QuoteRequest, *, request_id: str, deadline: float) -> Quote: ...

    def create_order(
        self, quote_id: str, *, delivery_type: str, delivery_deadline: dt.datetime, request_id: str, deadline: float
    ) -> Order: ...

    def get_order(self, order_id: str, *, request_id: str, deadline: float) -> Order: ...

    def find_order_for_quote(self, quote_id: str, *, request_id: str, deadline: float) -> OrderLookup: ...

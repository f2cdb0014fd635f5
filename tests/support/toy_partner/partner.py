"""The toy partner itself: quotes at a fixed price and orders at once (one order per quote, in memory),
and its request shape (TBB's fields under `partner: "toy"`)."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Literal

from pydantic import Field

from fulfilment.flowkit.errors import QuoteAlreadyConsumed
from fulfilment.requests import PurchaseRequest

UNIT_PRICE = Decimal("12.50")
QUOTE_SECONDS = 600


class ToyRequest(PurchaseRequest):
    """A purchase through the toy partner: the fields of a TBB request."""

    partner: Literal["toy"] = Field(description='"toy": the toy partner of the tests.')  # type: ignore[assignment]


class ToyPartner:
    def __init__(self) -> None:
        self._orders: dict[str, str] = {}
        self._lock = threading.Lock()

    def quote(self, purchase_id: object) -> tuple[str, dt.datetime, Decimal]:
        return f"TOYQ-{purchase_id}", dt.datetime.now(dt.UTC) + dt.timedelta(seconds=QUOTE_SECONDS), UNIT_PRICE

    def order(self, quote_id: str) -> str:
        with self._lock:
            if quote_id in self._orders:
                raise QuoteAlreadyConsumed("QUOTE_ALREADY_CONSUMED", f"quote {quote_id} was ordered already")
            self._orders[quote_id] = quote_id.replace("TOYQ-", "TOYO-")
            return self._orders[quote_id]

    def find_order(self, quote_id: str) -> str | None:
        return self._orders.get(quote_id)

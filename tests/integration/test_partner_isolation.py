"""One partner's token can never use or read another partner's quotes and orders (real HTTP)."""

from __future__ import annotations

import datetime as dt

import pytest

from fulfilment.partners.base import OrderAbsent, OrderFound, PermanentError, QuoteRequest
from fulfilment.partners.tbb import TbbClient
from tests.support.sandbox import PARTNER_A, PARTNER_B, Sandbox

DEADLINE = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)


def client(sandbox: Sandbox, credentials: tuple[str, str]) -> TbbClient:
    return TbbClient(sandbox.url, *credentials, max_attempts=1)


def test_another_partners_quote_and_order_are_forbidden(sandbox: Sandbox) -> None:
    alice, bob = client(sandbox, PARTNER_A), client(sandbox, PARTNER_B)
    quote = alice.create_quote(QuoteRequest("5496124", "101", None, 1), request_id="iso-1")

    with pytest.raises(PermanentError) as refused:
        bob.create_order(quote.quote_id, delivery_type="pdf", delivery_deadline=DEADLINE, request_id="iso-2")
    assert refused.value.code == "FORBIDDEN"
    assert sandbox.orders(quote_id=quote.quote_id) == []

    order = alice.create_order(quote.quote_id, delivery_type="pdf", delivery_deadline=DEADLINE, request_id="iso-3")
    with pytest.raises(PermanentError) as hidden:
        bob.get_order(order.order_id, request_id="iso-4")
    assert hidden.value.code == "FORBIDDEN"
    assert bob.find_order_for_quote(quote.quote_id, request_id="iso-5") == OrderAbsent()
    assert alice.find_order_for_quote(quote.quote_id, request_id="iso-6") == OrderFound(order)
    [recorded] = sandbox.orders(quote_id=quote.quote_id)
    assert recorded["partner"] == PARTNER_A[0]

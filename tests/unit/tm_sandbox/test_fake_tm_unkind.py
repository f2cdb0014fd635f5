"""The in-memory FakeTicketmaster (``partners/ticketmaster/testing.py``) has the sandbox's unkind
modes as options and fault kinds (issue 16, point 11), off by default like the sandbox's.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from fulfilment.partners.base import AccountError, PartnerError
from fulfilment.partners.ticketmaster.errors import Maintenance, PaymentRefused, TmOutcomeUnknown, TmTransientError
from fulfilment.partners.ticketmaster.payloads import (
    Card,
    Cart,
    Committed,
    Device,
    Operation,
    OrderTickets,
    Payment,
    Polling,
    RenderTicket,
    ReserveRequest,
    ReserveTicket,
)
from fulfilment.partners.ticketmaster.testing import FakeTicketmaster, Fault

T0 = dt.datetime(2026, 3, 10, 18, 0, tzinfo=dt.UTC)
EVENT = "000051048D991EE7"
DEVICE = Device("device-1", "native", "ios")
CALL: dict[str, Any] = {"request_id": "r-1", "deadline": 1e12}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def _fake(**options: Any) -> FakeTicketmaster:
    return FakeTicketmaster(clock=Clock(), **options)


def _request(**place: Any) -> ReserveRequest:
    return ReserveRequest(tickets=(ReserveTicket("000000000001", 1, 1),), **place)


def _payment(cart: Cart, nonce: str = "fake-valid-visa-nonce") -> Payment:
    return Payment(first_name="Tom", last_name="Brown", home_phone="4110001234", email_address="t@example.com",
                   amount=cart.totals.grand if cart.totals else Decimal("0"), currency="USD",
                   card=Card(number=SecretStr(nonce), cin=SecretStr("123")), third_party_account_id="buyer-1")


def _cart(fake: FakeTicketmaster, **place: Any) -> Cart:
    cart = fake.reserve(EVENT, _request(**place), **CALL)
    assert isinstance(cart, Cart)
    return cart


def _paid(fake: FakeTicketmaster, nonce: str = "fake-valid-visa-nonce") -> Cart:
    cart = _cart(fake)
    fake.add_payment(EVENT, cart.cart_id, _payment(cart, nonce), **CALL)
    return cart


def _buy(fake: FakeTicketmaster, source: str = "p-1", nonce: str = "fake-valid-visa-nonce") -> Committed:
    cart = _paid(fake, nonce)
    committed = fake.commit(EVENT, cart.cart_id, source, **CALL)
    assert isinstance(committed, Committed)
    return committed


def _tickets(fake: FakeTicketmaster, committed: Committed) -> OrderTickets:
    tickets = fake.order_tickets(committed.order_token, DEVICE, "buyer-1", **CALL)
    assert isinstance(tickets, OrderTickets)
    return tickets


def _advance(fake: FakeTicketmaster, seconds: float) -> None:
    clock = fake.clock
    assert isinstance(clock, Clock)
    clock.now += dt.timedelta(seconds=seconds)


def test_one_time_nonces() -> None:
    kind = _fake()
    for n in range(3):
        _buy(kind, f"p-{n}")  # off: one nonce pays for every cart
    assert len(kind.orders) == 3
    fake = _fake(one_time_nonces=True)
    _buy(fake, "p-1", nonce="n-1")
    cart = _cart(fake)
    with pytest.raises(PaymentRefused):
        fake.add_payment(EVENT, cart.cart_id, _payment(cart, "n-1"), **CALL)
    assert fake.carts[cart.cart_id].state == "held"
    fake.add_payment(EVENT, cart.cart_id, _payment(cart, "n-2"), **CALL)
    assert fake.carts[cart.cart_id].state == "paid"


def test_a_stalled_or_failed_poll_leaves_the_url_alive() -> None:
    fake = _fake()
    cart = _paid(fake)
    fake.plan("commit", Fault("polling", wait_seconds=0))
    polling = fake.commit(EVENT, cart.cart_id, "p-1", **CALL)
    assert isinstance(polling, Polling)
    fake.plan("poll_commit", "stalled")
    fake.plan("poll_commit", "unknown")
    for _ in range(2):
        with pytest.raises(TmOutcomeUnknown):
            fake.poll(polling.url, expect=Operation.COMMIT, cart_id=cart.cart_id, **CALL)
    answer = fake.poll(polling.url, expect=Operation.COMMIT, cart_id=cart.cart_id, **CALL)
    assert isinstance(answer, Committed) and len(fake.orders) == 1
    managed = fake.order_tickets(answer.order_token, DEVICE, "buyer-1", **CALL)
    assert isinstance(managed, OrderTickets)
    fake.plan("order_tickets", "stalled")
    with pytest.raises(TmTransientError):
        fake.order_tickets(answer.order_token, DEVICE, "buyer-1", **CALL)


def test_a_commit_answered_late_is_made_and_unknown_to_the_client() -> None:
    fake = _fake()
    cart = _paid(fake)
    fake.plan("commit", "answer_late")
    with pytest.raises(TmOutcomeUnknown):
        fake.commit(EVENT, cart.cart_id, "p-1", **CALL)
    assert [o.source_account_id for o in fake.orders.values()] == ["p-1"]
    assert fake.may_have_bought("p-1")


@pytest.mark.parametrize("operation", ["event_details", "unredeemed_orders"])
def test_forbidden_reads_raise_what_the_client_raises_for_a_403(operation: str) -> None:
    fake = _fake()
    fake.plan(operation, "forbidden")
    with pytest.raises(AccountError) as raised:
        if operation == "event_details":
            fake.event_details(EVENT, **CALL)
        else:
            fake.unredeemed_orders(1, **CALL)
    assert isinstance(raised.value, PartnerError) and raised.value.status == 403


def test_hidden_orders_never_show_in_the_unredeemed_list() -> None:
    shown, hidden = _fake(), _fake(unredeemed_hidden=True)
    for fake in (shown, hidden):
        _buy(fake)
        _advance(fake, 3600)
    assert [o.order_source_account_id for o in shown.unredeemed_orders(1, **CALL)] == ["p-1"]  # type: ignore[union-attr]
    assert hidden.unredeemed_orders(1, **CALL) == ()


def test_unavailable_refuses_a_commit_and_leaves_the_cart_paid() -> None:
    fake = _fake()
    cart = _paid(fake)
    fake.plan("commit", "unavailable")
    with pytest.raises(Maintenance):
        fake.commit(EVENT, cart.cart_id, "p-1", **CALL)
    assert fake.carts[cart.cart_id].state == "paid" and not fake.orders
    assert not fake.may_have_bought("p-1")


@pytest.mark.parametrize(("signal", "service_level", "dated", "error"), [
    ("error", "ETICKET", True, True), ("service_level", "SAFETIX", False, False), ("date", "ETICKET", True, False)])
def test_delay_signals(signal: str, service_level: str, dated: bool, error: bool) -> None:
    fake = _fake(delay_signal=signal)
    committed = _buy(fake)
    fake.plan("order_tickets", Fault("delayed", delay_days=2))
    delayed = _tickets(fake, committed)
    assert delayed.service_level == service_level
    assert (delayed.delivery_delay_date is not None) is dated
    entry = delayed.tickets[0].secure_entry
    assert entry is not None and entry.token is None and (entry.error is not None) is error
    _advance(fake, 4 * 86400)
    later = _tickets(fake, committed).tickets[0].secure_entry
    assert later is not None and later.token is not None
    with pytest.raises(ValueError):
        _fake(delay_signal="loud")


def test_empty_barcodes_come_with_tokens_refreshed_by_order_management() -> None:
    fake = _fake(empty_barcodes=True)
    committed = _buy(fake)
    first = _tickets(fake, committed).tickets[0]
    assert first.barcode == "" and first.secure_entry is not None and first.secure_entry.token is not None
    rendered = fake.secure_render("buyer-1", DEVICE, [RenderTicket(EVENT, "101", "A", "1", "")], **CALL)
    assert [t.error.message for t in rendered.errors if t.error] == ["missing.barcode.attribute"]
    again = _tickets(fake, committed).tickets[0].secure_entry
    assert again is not None and again.token is not None
    assert again.token.get_secret_value() != first.secure_entry.token.get_secret_value()


def test_best_available_swaps() -> None:
    kind, swapping = _fake(), _fake(best_available_swaps=True)
    assert _cart(kind, section="101", row="A").items[0].section == "101"
    swapped = _cart(swapping, section="101", row="A").items[0]
    assert (swapped.section, swapped.row) == ("201", "B")
    exact = _cart(swapping, section="101", row="A", accept_best_available=False).items[0]
    assert (exact.section, exact.row) == ("101", "A")


def test_holds_count_down_from_each_answer_and_payment_extends_them() -> None:
    fake = _fake(hold_seconds=300, payment_extension_seconds=150)
    cart = _cart(fake)
    assert cart.hold_time_seconds == 300
    _advance(fake, 100)
    paid = fake.add_payment(EVENT, cart.cart_id, _payment(cart), **CALL)
    assert isinstance(paid, Cart) and paid.hold_time_seconds == 350

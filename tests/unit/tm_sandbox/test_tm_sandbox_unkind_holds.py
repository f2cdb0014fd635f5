"""Issue 16, point 11, mode 9: a hold that counts down.

Every answer's ``hold_time`` is what is left at that answer (the cart's end = the answer's time +
its ``hold_time``), a payment may increase it, and ``hold_time_variance_seconds`` makes even a
reserve answer less than the configured hold.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fulfilment.partners.ticketmaster.sandbox import SandboxConfig
from tests.support.tm_sandbox import TEST_EVENT, InProcess, payment_body


def _end(tm: InProcess, answer: dict[str, Any]) -> datetime:
    """Where the answer says the hold ends: now + its hold_time."""
    return tm.admin.now() + timedelta(seconds=answer["cart"]["hold_time"])


def _hold_until(tm: InProcess, cart_id: str) -> datetime:
    [cart] = [c for c in tm.admin.carts() if c["cart_id"] == cart_id]
    return datetime.fromisoformat(cart["hold_until"].replace("Z", "+00:00"))


def test_each_answer_counts_down_from_its_own_time_and_payment_increases_it(tm: InProcess) -> None:
    cart = tm.partner.cart(TEST_EVENT)
    assert cart["cart"]["hold_time"] == 300
    assert _end(tm, cart) == _hold_until(tm, cart["cart_id"])
    tm.admin.advance(100)
    paid = tm.partner.pay(TEST_EVENT, payment_body(cart)).json()
    assert paid["cart"]["hold_time"] == 300 - 100 + 150  # what is left, increased by the payment
    assert _end(tm, paid) == _hold_until(tm, cart["cart_id"])
    tm.admin.advance(49.5)
    polled = tm.partner.reserve(TEST_EVENT, headers={"X-TM-FORCE-POLLING": "true"}).json()
    tm.admin.advance(30)
    second = tm.partner.poll(polled["polling_url"]).json()
    assert second["cart"]["hold_time"] == 270  # the polled answer: what is left when it is read
    assert _end(tm, second) == _hold_until(tm, second["cart_id"])


def test_hold_time_variance_shaves_a_seeded_share_off_new_carts() -> None:
    holds = []
    for _ in range(2):
        tm = InProcess(SandboxConfig(hold_time_variance_seconds=60, seed=7))
        try:
            carts = [tm.partner.cart(TEST_EVENT) for _ in range(8)]
            holds.append([c["cart"]["hold_time"] for c in carts])
            for cart in carts:
                assert abs((_end(tm, cart) - _hold_until(tm, cart["cart_id"])).total_seconds()) < 1
        finally:
            tm.close()
    assert holds[0] == holds[1]  # seeded
    assert all(240 <= hold <= 300 for hold in holds[0]) and len(set(holds[0])) > 1


def test_hold_time_variance_is_validated_and_read_from_env(tm: InProcess) -> None:
    assert tm.admin.client.patch("/admin/config", json={"hold_time_variance_seconds": -1}).status_code == 400
    assert SandboxConfig.from_env({"TM_SANDBOX_HOLD_TIME_VARIANCE_SECONDS": "30"}).hold_time_variance_seconds == 30
    tm.admin.configure(hold_time_variance_seconds=1000, hold_time_seconds=300)  # more than the hold
    assert all(tm.partner.cart(TEST_EVENT)["cart"]["hold_time"] >= 1 for _ in range(5))  # never less than 1 s
    assert [c["state"] for c in tm.admin.carts()] == ["held"] * 5

"""Issue 16, point 11, mode 10: best-available seat swaps (``best_available_swap_rate``).

A reserve that names section/row with ``accept_best_available`` true (the default) may get another
section/row even when the named seats are free; with false it gets exactly the named seats or 20052.
"""

from __future__ import annotations

from typing import Any

from fulfilment.partners.ticketmaster.sandbox import SandboxConfig
from tests.support.tm_sandbox import TEST_EVENT, InProcess, reserve_body

SOLD_OUT = {"error": {"message": "No inventory found to match request", "code": 20052, "http_code": 400,
                      "severity": "ERROR"}}


def _seats(cart: dict[str, Any]) -> tuple[str, str, str, str]:
    item = cart["cart"]["items"][0]
    return item["section"], item["row"], item["start_seat_number"], item["end_seat_number"]


def test_by_default_the_named_place_is_kept(tm: InProcess) -> None:
    cart = tm.partner.cart(TEST_EVENT, reserve_body(quantity=2, section="101", row="A", begin_seat="3"))
    assert _seats(cart) == ("101", "A", "3", "4")
    assert tm.admin.counts()["best_available_swaps"] == 0


def test_best_available_may_hold_another_row_than_the_one_named(tm: InProcess) -> None:
    tm.admin.swap_best_available()
    cart = tm.partner.cart(TEST_EVENT, reserve_body(quantity=2, section="101", row="A", begin_seat="3"))
    assert _seats(cart)[:2] == ("101", "B")  # the named seats were free
    assert tm.admin.counts()["best_available_swaps"] == 1
    [held] = tm.admin.carts()
    assert (held["section"], held["row"]) == ("101", "B")


def test_best_available_without_a_price_level_may_change_the_price_too(tm: InProcess) -> None:
    tm.admin.swap_best_available()
    named = tm.partner.cart(TEST_EVENT, reserve_body(quantity=1, price_id=None, section="101"))
    assert _seats(named)[0] == "201"
    assert named["cart"]["totals"]["grand"] != 54.41


def test_accept_best_available_false_gets_exactly_the_named_seats_or_20052(tm: InProcess) -> None:
    tm.admin.swap_best_available()
    exact = reserve_body(quantity=2, section="101", row="A", begin_seat="3", accept_best_available=False)
    assert _seats(tm.partner.cart(TEST_EVENT, exact)) == ("101", "A", "3", "4")
    taken = tm.partner.reserve(TEST_EVENT, reserve_body(quantity=2, section="101", row="A", begin_seat="4",
                                                        accept_best_available=False))
    assert taken.status_code == 400 and taken.json() == SOLD_OUT
    assert tm.admin.counts()["best_available_swaps"] == 0 and len(tm.admin.carts()) == 1


def test_a_swap_rate_swaps_a_seeded_share() -> None:
    rows = []
    for _ in range(2):
        tm = InProcess(SandboxConfig(best_available_swap_rate=0.5, seed=11))
        try:
            carts = [tm.partner.cart(TEST_EVENT, reserve_body(quantity=1, section="101", row="A")) for _ in range(8)]
            rows.append([_seats(cart)[1] for cart in carts])
            assert tm.admin.counts()["best_available_swaps"] == rows[-1].count("B")
        finally:
            tm.close()
    assert rows[0] == rows[1] and set(rows[0]) == {"A", "B"}


def test_the_swap_rate_is_validated_and_read_from_env(tm: InProcess) -> None:
    assert tm.admin.client.patch("/admin/config", json={"best_available_swap_rate": 1.1}).status_code == 400
    assert SandboxConfig.from_env({"TM_SANDBOX_BEST_AVAILABLE_SWAP_RATE": "0.25"}).best_available_swap_rate == 0.25

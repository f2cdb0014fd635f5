"""Issue 16, point 11, mode 8: 20001 at noon ("system down/unavailable", not niterun).

``unavailable_next`` / ``unavailable_seconds`` per endpoint (or ``*``): 503 20001 whatever the
event-local hour, nothing done; a commit refused that way leaves its cart held (and paid).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from fulfilment.partners.ticketmaster.sandbox import SandboxConfig
from tests.support.tm_sandbox import T0, TEST_EVENT, InProcess, payment_body

UNAVAILABLE = {"error": {"message": "Ticketing system is down/unavailable/niterun", "code": 20001, "http_code": 503,
                         "severity": "DEBUG"}}


def _availability(tm: InProcess) -> Any:
    return tm.partner.call("GET", f"/partners/v1/events/{TEST_EVENT}/availability")


def test_a_commit_refused_with_20001_at_noon_leaves_the_cart_paid_and_held(tm: InProcess) -> None:
    assert T0.astimezone(ZoneInfo("America/Los_Angeles")).hour == 11  # far from niterun
    cart = tm.partner.cart(TEST_EVENT)
    assert tm.partner.pay(TEST_EVENT, payment_body(cart)).status_code == 200
    tm.admin.unavailable("commit", n=1)

    refused = tm.partner.commit(TEST_EVENT, cart["cart_id"], "p-1")
    assert refused.status_code == 503 and refused.json() == UNAVAILABLE
    [held] = tm.admin.carts()
    assert (held["state"], held["paid"]) == ("paid", True) and held["hold_time"] > 0
    assert tm.admin.orders() == []
    counts = tm.admin.counts()
    assert counts["unavailable_refusals"] == 1 and counts["niterun_refusals"] == 0
    assert counts["faults"]["commit"] == {"unavailable": 1}

    committed = tm.partner.commit(TEST_EVENT, cart["cart_id"], "p-1")
    assert committed.status_code == 200 and len(tm.admin.orders()) == 1


def test_a_span_of_unavailability_on_the_sandbox_clock(tm: InProcess) -> None:
    tm.admin.unavailable("reserve", seconds=120)
    assert tm.partner.reserve(TEST_EVENT).status_code == 503  # the span starts here
    assert _availability(tm).status_code == 200  # another endpoint
    tm.admin.advance(119)
    assert tm.partner.reserve(TEST_EVENT).json() == UNAVAILABLE
    tm.admin.advance(1)
    assert tm.partner.reserve(TEST_EVENT).status_code == 200
    assert tm.admin.counts()["unavailable_refusals"] == 2
    assert tm.admin.carts()[0]["state"] == "held"


def test_a_wildcard_makes_every_endpoint_unavailable_even_outside_events(tm: InProcess) -> None:
    order = tm.partner.buy(TEST_EVENT)
    tm.admin.unavailable("*", n=3)
    assert _availability(tm).status_code == 503
    assert tm.partner.order(order["order_token"]).status_code == 503
    assert tm.partner.call("GET", "/partners/v1/orders/unredeemed", params={"days_from_purchase": "1"}).status_code == 503
    assert tm.partner.order(order["order_token"]).status_code == 200


def test_unavailable_rules_are_validated(tm: InProcess) -> None:
    for rule in ({"unavailable_next": -1}, {"unavailable_seconds": -5}, {"unavailable_seconds": "10"}):
        assert tm.admin.client.put("/admin/faults", json={"commit": rule}).status_code == 400, rule


def test_unkind_fault_rules_come_from_env_at_start_and_back_after_a_reset() -> None:
    env = {"TM_SANDBOX_FAULTS": '{"reserve": {"unavailable_seconds": 60}, "poll_commit": {"stall_next": 1, '
                                '"stall_ms": 10}, "commit": {"answer_after_next": 1, "answer_after_ms": 10}}'}
    tm = InProcess(SandboxConfig.from_env(env))
    try:
        for _ in range(2):
            assert tm.partner.reserve(TEST_EVENT).status_code == 503
            tm.admin.advance(60)
            assert tm.partner.reserve(TEST_EVENT).status_code == 200
            rules = tm.admin.faults()["rules"]
            assert rules["poll_commit"]["stall_next"] == 1 and rules["commit"]["answer_after_next"] == 1
            tm.admin.reset()  # the start-up rules again, the span starting afresh
    finally:
        tm.close()

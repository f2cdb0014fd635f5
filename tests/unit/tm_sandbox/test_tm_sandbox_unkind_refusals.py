"""Issue 16, point 11, modes 4 and 5: event details answering 404/403 (a deprecated call), the
unredeemed list answering 403 (not allow-listed) or never listing an order.
"""

from __future__ import annotations

import pytest

from tests.support.tm_sandbox import TEST_EVENT, InProcess

DETAILS = f"/partners/v1/events/{TEST_EVENT}"
ENVELOPES = {
    404: {"error": {"message": "API endpoint or event not found", "code": 90000, "http_code": 404,
                    "severity": "ERROR"}},
    403: {"error": {"message": "Access denied: this apikey or client IP is not allowed to call this endpoint",
                    "code": 10003, "http_code": 403, "severity": "ERROR"}},
}


@pytest.mark.parametrize("status", [404, 403])
def test_event_details_answers_the_status_for_the_next_calls_then_recovers(tm: InProcess, status: int) -> None:
    tm.admin.refuse("event_details", status, n=2)
    for _ in range(2):
        refused = tm.partner.call("GET", DETAILS)
        assert refused.status_code == status and refused.json() == ENVELOPES[status]
        assert "Ratelimit-Quota-Allowed" in refused.headers  # an answer of TM's, after the quota
    answer = tm.partner.call("GET", DETAILS)
    assert answer.status_code == 200 and answer.json()["event"]["id"] == TEST_EVENT
    assert tm.admin.faults()["counters"] == {"event_details": {"status": 2, f"status_{status}": 2}}


def test_event_details_refused_for_good_leaves_the_purchase_calls_alone(tm: InProcess) -> None:
    tm.admin.refuse("event_details", 403)
    for _ in range(3):
        assert tm.partner.call("GET", DETAILS).status_code == 403
    order = tm.partner.buy(TEST_EVENT)  # reserve, payment and commit do not depend on it
    assert tm.partner.order(order["order_token"]).status_code == 200


def test_status_rules_are_validated(tm: InProcess) -> None:
    for rule in ({"status": 500}, {"status": True}, {"status_rate": 2}, {"status_next": -1}):
        assert tm.admin.client.put("/admin/faults", json={"event_details": rule}).status_code == 400, rule


# --- the unredeemed-orders list ------------------------------------------------------------------------

UNREDEEMED = "/partners/v1/orders/unredeemed"


def _listed(tm: InProcess) -> list[str | None]:
    answer = tm.partner.call("GET", UNREDEEMED, params={"days_from_purchase": "1"})
    assert answer.status_code == 200, answer.text
    return [order["order_source_account_id"] for order in answer.json()["data"]]


def test_the_unredeemed_list_answers_403_when_not_allow_listed(tm: InProcess) -> None:
    tm.partner.buy(TEST_EVENT, source_account_id="p-1")
    tm.admin.refuse("unredeemed", 403)
    for _ in range(2):
        refused = tm.partner.call("GET", UNREDEEMED, params={"days_from_purchase": "1"})
        assert refused.status_code == 403 and refused.json() == ENVELOPES[403]
    tm.admin.clear_faults()
    assert _listed(tm) == ["p-1"]


def test_orders_hidden_from_the_unredeemed_list_never_appear(tm: InProcess) -> None:
    tm.partner.buy(TEST_EVENT, source_account_id="p-shown")
    tm.admin.hide_from_unredeemed()
    tm.partner.buy(TEST_EVENT, source_account_id="p-hidden")
    tm.admin.advance(3600)
    assert _listed(tm) == ["p-shown"]
    # The order exists all the same (order management, the admin list).
    hidden = [o for o in tm.admin.orders() if o["source_account_id"] == "p-hidden"]
    assert [o["unredeemed_hidden"] for o in hidden] == [True]
    assert tm.partner.order(hidden[0]["order_token"]).status_code == 200
    tm.admin.hide_from_unredeemed(0.0)
    assert _listed(tm) == ["p-shown"]  # chosen at commit: hidden for good


def test_a_hide_rate_hides_a_seeded_share(tm: InProcess) -> None:
    tm.admin.hide_from_unredeemed(0.5)
    for n in range(20):
        tm.partner.buy(TEST_EVENT, source_account_id=f"p-{n}")
    hidden = sorted(o["source_account_id"] for o in tm.admin.orders() if o["unredeemed_hidden"])
    assert 0 < len(hidden) < 20
    assert sorted(_listed(tm)) == sorted(o["source_account_id"] for o in tm.admin.orders() if not o["unredeemed_hidden"])
    tm.admin.reset()
    tm.admin.hide_from_unredeemed(0.5)
    for n in range(20):
        tm.partner.buy(TEST_EVENT, source_account_id=f"p-{n}")
    assert sorted(o["source_account_id"] for o in tm.admin.orders() if o["unredeemed_hidden"]) == hidden
    assert tm.admin.client.patch("/admin/config", json={"unredeemed_hide_rate": 1.5}).status_code == 400

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

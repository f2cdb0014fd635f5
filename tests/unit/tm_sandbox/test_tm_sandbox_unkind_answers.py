"""Issue 16, point 11, mode 2: commit answers that arrive after the lease.

``answer_after_next``/``answer_after_rate``/``answer_after_ms``: the commit is made at once, its
answer (200, or 202 with a polling URL) is sent only ``answer_after_ms`` later; counted in
``late_answers``. Refusals are never delayed and use nothing up.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.support.tm_sandbox import T0, TEST_EVENT, InProcess, Partner, TMSandboxProcess, payment_body


def _paid(partner: Partner) -> dict[str, Any]:
    cart = partner.cart(TEST_EVENT)
    assert partner.pay(TEST_EVENT, payment_body(cart)).status_code == 200
    return cart


def test_a_commit_answered_after_the_client_gave_up_is_made_at_once_over_http(tmp_path: Any) -> None:
    with TMSandboxProcess({"TM_SANDBOX_CLOCK_START": T0.isoformat()}, log_path=tmp_path / "sandbox.log") as sandbox:
        partner, admin = sandbox.partner, sandbox.admin
        cart = _paid(partner)
        admin.answer_late(1, 2000)
        impatient = Partner(httpx.Client(base_url=sandbox.url, timeout=0.3))
        with pytest.raises(httpx.ReadTimeout):
            impatient.commit(TEST_EVENT, cart["cart_id"], "p-late-answer")
        impatient.client.close()
        # The answer is still on its way, the order exists already.
        [order] = admin.orders()
        assert order["source_account_id"] == "p-late-answer" and order["cart_id"] == cart["cart_id"]
        assert admin.counts()["late_answers"] == {"commit": 1}
        # A retry is not a concurrent call (the late one left the cart) but a recommit: 90003.
        retry = partner.commit(TEST_EVENT, cart["cart_id"], "p-late-answer")
        assert retry.status_code == 400 and retry.json()["error"]["code"] == 90003
        counts = admin.counts()
        assert counts["concurrent_calls"] == 0 and counts["recommits"] == 1
        assert len(admin.orders()) == 1


def test_a_patient_client_gets_the_late_answer_with_order_number_and_token(tm: InProcess) -> None:
    cart = _paid(tm.partner)
    tm.admin.answer_late(1, 300)
    started = time.monotonic()
    answer = tm.partner.commit(TEST_EVENT, cart["cart_id"], "p-1")
    assert time.monotonic() - started >= 0.3
    assert answer.status_code == 200
    [order] = tm.admin.orders()
    assert (answer.json()["order_number"], answer.json()["order_token"]) == (order["order_number"], order["order_token"])


def test_a_polled_commit_answer_arrives_late_and_its_url_serves_the_order(tm: InProcess) -> None:
    cart = _paid(tm.partner)
    tm.admin.answer_late(1, 300)
    started = time.monotonic()
    answer = tm.partner.commit(TEST_EVENT, cart["cart_id"], "p-1", headers={"X-TM-FORCE-POLLING": "true"})
    assert time.monotonic() - started >= 0.3
    assert answer.status_code == 202
    tm.admin.advance(5)
    polled = tm.partner.poll(answer.json()["polling_url"])
    assert polled.status_code == 200 and polled.json()["order_number"] == tm.admin.orders()[0]["order_number"]
    assert tm.admin.counts()["late_answers"] == {"commit": 1}


def test_refusals_are_answered_at_once_and_use_nothing_up(tm: InProcess) -> None:
    unpaid = tm.partner.cart(TEST_EVENT)
    tm.admin.answer_late(1, 5000)
    started = time.monotonic()
    refused = tm.partner.commit(TEST_EVENT, unpaid["cart_id"])
    assert refused.status_code == 400 and time.monotonic() - started < 4
    assert tm.admin.faults()["rules"]["commit"]["answer_after_next"] == 1
    assert tm.admin.counts()["late_answers"] == {}


def test_answer_after_rate_applies_to_any_endpoint_and_is_validated(tm: InProcess) -> None:
    tm.admin.set_faults({"reserve": {"answer_after_rate": 1.0, "answer_after_ms": 50}})
    tm.partner.cart(TEST_EVENT)
    tm.partner.cart(TEST_EVENT)
    assert tm.admin.counts()["late_answers"] == {"reserve": 2}
    for rule in ({"answer_after_ms": 0}, {"answer_after_rate": 1.5}, {"answer_after_next": -1}):
        assert tm.admin.client.put("/admin/faults", json={"commit": rule}).status_code == 400, rule

"""Issue 16, point 11, mode 1: polls that stall or answer 5xx, and polling URLs that die.

A stalled poll hangs past the client's read timeout (over real HTTP: httpx raises ReadTimeout) and
the same URL answers the next poll correctly; injected 5xx on polls leave the URL alive; a rule on
``poll_commit`` stalls only the polls of commits; ``polling_ttl_seconds`` makes a URL answer 410 and
``DELETE /admin/polling/{id}`` makes it answer 404.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.support.tm_sandbox import DEVICE, T0, TEST_EVENT, InProcess, Partner, TMSandboxProcess, payment_body

FORCE = {"X-TM-FORCE-POLLING": "true"}


def _polled_commit(partner: Partner, source: str = "p-1") -> tuple[dict[str, Any], str]:
    """A paid cart committed with forced polling: (the cart, the commit's polling URL)."""
    cart = partner.cart(TEST_EVENT)
    assert partner.pay(TEST_EVENT, payment_body(cart)).status_code == 200
    answer = partner.commit(TEST_EVENT, cart["cart_id"], source, headers=FORCE)
    assert answer.status_code == 202, answer.text
    return cart, answer.json()["polling_url"]


def test_a_stalled_poll_times_out_and_the_same_url_answers_afterwards_over_http(tmp_path: Any) -> None:
    env = {"TM_SANDBOX_CLOCK_START": T0.isoformat()}
    with TMSandboxProcess(env, log_path=tmp_path / "sandbox.log") as sandbox:
        partner, admin = sandbox.partner, sandbox.admin
        _, url = _polled_commit(partner)
        admin.advance(5)
        admin.stall_polls(1, 1500, operation="commit")
        impatient = Partner(httpx.Client(base_url=sandbox.url, timeout=0.3))
        with pytest.raises(httpx.ReadTimeout):
            impatient.poll(url)
        answer = partner.poll(url)  # the same URL, next poll: the commit's answer
        assert answer.status_code == 200, answer.text
        [order] = admin.orders()
        assert answer.json()["order_number"] == order["order_number"]
        assert partner.poll(url).json()["order_number"] == order["order_number"]  # a re-read
        assert admin.faults()["counters"] == {"poll_commit": {"stall": 1}}
        assert len(admin.orders()) == 1
        impatient.client.close()


def test_a_poll_rule_of_one_operation_stalls_only_its_polls(tm: InProcess) -> None:
    partner, admin = tm.partner, tm.admin
    order = partner.buy(TEST_EVENT)
    managed = partner.order(order["order_token"], headers=FORCE)
    assert managed.status_code == 202
    _, commit_url = _polled_commit(partner, "p-2")
    admin.advance(5)
    admin.stall_polls(1, 400, operation="commit")

    assert partner.poll(managed.json()["polling_url"]).status_code == 200  # not a commit's URL: no stall
    assert admin.faults()["counters"] == {}
    started = time.monotonic()
    assert partner.poll(commit_url).status_code == 200
    assert time.monotonic() - started >= 0.4
    assert admin.faults()["counters"] == {"poll_commit": {"stall": 1}}
    assert partner.poll(commit_url).status_code == 200  # stall_next used up
    assert admin.faults()["counters"] == {"poll_commit": {"stall": 1}}


def test_a_plain_poll_rule_covers_every_operation_and_a_stall_then_answers(tm: InProcess) -> None:
    _, url = _polled_commit(tm.partner)
    tm.admin.advance(5)
    tm.admin.stall_polls(1, 200)
    started = time.monotonic()
    answer = tm.partner.poll(url)
    assert time.monotonic() - started >= 0.2
    assert answer.status_code == 200 and answer.json()["order_number"] == tm.admin.orders()[0]["order_number"]
    assert tm.admin.faults()["counters"] == {"poll": {"stall": 1}}


@pytest.mark.parametrize("rule", [{"fail_next": 2, "error_statuses": [502, 503]}, {"error_rate": 1.0}])
def test_injected_5xx_on_polls_leave_the_url_alive(tm: InProcess, rule: dict[str, Any]) -> None:
    partner, admin = tm.partner, tm.admin
    _, url = _polled_commit(partner)
    admin.advance(5)
    admin.set_faults({"poll_commit": rule})
    assert partner.poll(url).status_code in (500, 502, 503)
    assert partner.poll(url).status_code in (500, 502, 503)
    admin.clear_faults()
    answer = partner.poll(url)
    assert answer.status_code == 200 and answer.json()["order_number"] == admin.orders()[0]["order_number"]
    [job] = admin.polling_jobs()
    assert job["delivered"] == 1 and job["polls"] == 1  # the 5xx never reached the job


def test_an_expired_polling_url_answers_410_and_a_forgotten_one_404(tm: InProcess) -> None:
    partner, admin = tm.partner, tm.admin
    admin.configure(polling_ttl_seconds=60)
    _, url = _polled_commit(partner, "p-ttl")
    admin.advance(59)
    assert partner.poll(url).status_code == 200
    admin.advance(2)
    gone = partner.poll(url)
    assert gone.status_code == 410
    assert gone.json() == {"error": {"message": "Polling request expired", "code": 90006, "http_code": 410,
                                     "severity": "ERROR"}}
    assert partner.poll(url).status_code == 410  # for good
    assert admin.polling_jobs()[0]["expired_polls"] == 2

    admin.configure(polling_ttl_seconds=0)
    managed = partner.order(admin.orders()[0]["order_token"], DEVICE, headers=FORCE)
    other = managed.json()["polling_url"]
    admin.forget_poll(other)
    missing = partner.poll(other)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 90005
    assert admin.client.delete("/admin/polling/NOPE").status_code == 404


def test_poll_fault_rules_are_validated(tm: InProcess) -> None:
    for rules in ({"poll_commit": {"stall_next": 1, "stall_ms": 0}}, {"poll_payment": {"stall_next": 1}},
                  {"poll": {"stall_next": -1}}, {"poll": {"status_next": 1}}, {"poll_commit": {"status_rate": 1}}):
        refused = tm.admin.client.put("/admin/faults", json=rules)
        assert refused.status_code == 400, rules
    assert tm.admin.faults()["rules"] == {}
    assert tm.admin.client.patch("/admin/config", json={"polling_ttl_seconds": -1}).status_code == 400


def test_a_wildcard_status_rule_never_answers_a_poll(tm: InProcess) -> None:
    _, url = _polled_commit(tm.partner)
    tm.admin.advance(5)
    tm.admin.set_faults({"*": {"status_rate": 1.0, "status": 404}})
    assert tm.partner.call("GET", f"/partners/v1/events/{TEST_EVENT}").status_code == 404
    assert tm.partner.poll(url).status_code == 200  # a 404 there would say the URL is gone

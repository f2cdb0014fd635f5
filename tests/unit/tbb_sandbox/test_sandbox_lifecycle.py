"""Order status over time: simulated transfer outcomes, deadline expiry, forced status."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sandbox_testkit import Sandbox

from fulfilment.partners.sandbox_kit.clock import parse_iso_utc
from fulfilment.partners.tbb.sandbox.lifecycle import draw_outcome, due_transition, normalise_policy


def _status(sandbox: Sandbox, order_id: str) -> dict:
    return sandbox.get(f"/v1/orders/{order_id}").json()["data"]


@pytest.mark.parametrize(
    "outcome, final",
    [("complete", "transfer_complete"), ("expire", "transfer_expired"), ("cancel", "cancelled"),
     ({"cancelled": 1}, "cancelled")],
)
def test_transfer_outcome_after_delay(make_sandbox, outcome, final: str) -> None:
    sandbox = make_sandbox(transfer_after_seconds=30, transfer_outcome=outcome)
    order = sandbox.order(sandbox.quote_id()).json()["data"]
    sandbox.clock.advance(29.9)
    assert _status(sandbox, order["order_id"])["status"] == "awaiting_transfer"
    sandbox.clock.advance(0.1)
    data = _status(sandbox, order["order_id"])
    assert data["status"] == final
    # updated_at is when the transition happened, not when we looked; stable on re-read.
    assert parse_iso_utc(data["updated_at"]) == parse_iso_utc(order["created_at"]) + timedelta(seconds=30)
    sandbox.clock.advance(100)
    assert _status(sandbox, order["order_id"]) == data


def test_deadline_passing_expires_the_order(make_sandbox) -> None:
    sandbox = make_sandbox(transfer_after_seconds=None, token_ttl_seconds=86400)
    deadline = sandbox.clock.now + timedelta(hours=2)
    order = sandbox.order(sandbox.quote_id(), deadline=deadline.strftime("%Y-%m-%dT%H:%M:%SZ")).json()["data"]
    sandbox.clock.advance(3600)
    assert _status(sandbox, order["order_id"])["status"] == "awaiting_transfer"
    sandbox.clock.advance(3600)
    data = _status(sandbox, order["order_id"])
    assert data["status"] == "transfer_expired"
    assert data["updated_at"] == order["delivery"]["delivery_deadline"]


def test_deadline_before_simulated_transfer_wins(make_sandbox) -> None:
    sandbox = make_sandbox(transfer_after_seconds=7200, transfer_outcome="complete", token_ttl_seconds=86400)
    deadline = (sandbox.clock.now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    order = sandbox.order(sandbox.quote_id(), deadline=deadline).json()["data"]
    sandbox.clock.advance(7300)
    assert _status(sandbox, order["order_id"])["status"] == "transfer_expired"


def test_lifecycle_is_visible_in_lists_and_admin(make_sandbox) -> None:
    sandbox = make_sandbox(transfer_after_seconds=1, transfer_outcome="complete")
    quote_id = sandbox.quote_id()
    sandbox.order(quote_id)
    sandbox.clock.advance(1)
    assert sandbox.get("/v1/orders", params={"quote_id": quote_id}).json()["data"][0]["status"] == "transfer_complete"
    admin = sandbox.client.get("/admin/orders", params={"status": "transfer_complete"}).json()
    assert admin["count"] == 1


def test_runtime_policy_change_applies_to_pending_orders(make_sandbox) -> None:
    sandbox = make_sandbox(transfer_after_seconds=30)
    order_id = sandbox.order(sandbox.quote_id()).json()["data"]["order_id"]
    r = sandbox.client.patch("/admin/config", json={"transfer_outcome": "cancel", "transfer_after_seconds": 5})
    assert r.status_code == 200 and r.json()["transfer_outcome"] == "cancel"
    sandbox.clock.advance(5)
    assert _status(sandbox, order_id)["status"] == "cancelled"


def test_forced_status_is_final(make_sandbox) -> None:
    sandbox = make_sandbox(transfer_after_seconds=10, transfer_outcome="complete")
    order_id = sandbox.order(sandbox.quote_id()).json()["data"]["order_id"]
    sandbox.clock.advance(3)
    r = sandbox.client.post(f"/admin/orders/{order_id}/status", json={"status": "cancelled"})
    assert r.status_code == 200
    assert r.json()["order"]["status"] == "cancelled" and r.json()["order"]["status_forced"] is True
    data = _status(sandbox, order_id)
    assert data["status"] == "cancelled"
    assert parse_iso_utc(data["updated_at"]) == sandbox.clock.now
    sandbox.clock.advance(30)
    assert _status(sandbox, order_id)["status"] == "cancelled"


def test_forced_status_errors(sandbox: Sandbox) -> None:
    order_id = sandbox.order(sandbox.quote_id()).json()["data"]["order_id"]
    assert sandbox.client.post(f"/admin/orders/{order_id}/status", json={"status": "lost"}).status_code == 400
    assert sandbox.client.post(f"/admin/orders/{order_id}/status", json={}).status_code == 400
    assert sandbox.client.post("/admin/orders/TBB-X/status", json={"status": "cancelled"}).status_code == 404


def test_weighted_policy_distribution() -> None:
    rng = random.Random(7)
    policy = {"transfer_complete": 0.8, "transfer_expired": 0.1, "cancelled": 0.1}
    counts = Counter(draw_outcome(policy, rng) for _ in range(5000))
    assert set(counts) == {"transfer_complete", "transfer_expired", "cancelled"}
    assert 0.76 < counts["transfer_complete"] / 5000 < 0.84


def test_weighted_policy_over_the_api_is_deterministic_per_seed(make_sandbox) -> None:
    def run() -> list[str]:
        sandbox = make_sandbox(transfer_after_seconds=0, seats_per_row=100, seed=42,
                               transfer_outcome={"transfer_complete": 0.5, "cancelled": 0.5})
        ids = [sandbox.order(sandbox.quote_id(quantity=1)).json()["data"]["order_id"] for _ in range(20)]
        return [_status(sandbox, i)["status"] for i in ids]

    first, second = run(), run()
    assert first == second
    assert set(first) == {"transfer_complete", "cancelled"}


@pytest.mark.parametrize("bad", ["sometimes", {"won": 1}, {"cancelled": -1}, {"cancelled": 0}, 3])
def test_bad_policies_are_rejected(bad) -> None:
    with pytest.raises(ValueError):
        normalise_policy(bad)


def test_due_transition_rules() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    deadline = t0 + timedelta(seconds=100)
    assert due_transition(t0, deadline, 30, t0 + timedelta(seconds=29)) is None
    assert due_transition(t0, deadline, 30, t0 + timedelta(seconds=30)) == ("outcome", t0 + timedelta(seconds=30))
    assert due_transition(t0, deadline, 200, t0 + timedelta(seconds=150)) == ("deadline", deadline)
    assert due_transition(t0, deadline, None, t0 + timedelta(seconds=99)) is None
    assert due_transition(t0, deadline, None, t0 + timedelta(seconds=100)) == ("deadline", deadline)


def test_bad_config_patches_are_rejected(sandbox: Sandbox) -> None:
    for patch in ({"quote_ttl_seconds": 0}, {"token_ttl_seconds": "1"}, {"transfer_after_seconds": -1},
                  {"transfer_outcome": "maybe"}, {"nope": 1}, {"payment_error_code": "X"}):
        assert sandbox.client.patch("/admin/config", json=patch).status_code == 400, patch
    assert sandbox.client.get("/admin/config").json()["quote_ttl_seconds"] == 3600

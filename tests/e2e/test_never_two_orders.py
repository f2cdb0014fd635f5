"""Invariant 1 against a partner as hostile as a real one, through real workers, the
scheduler and the sandbox over HTTP (issue 7): the order commits but its answer is lost,
the order lookup lags behind the commit, the quote expires on our clock meanwhile, and
the partner may check expiry before consumption.  Absence is never concluded from an
empty lookup or our clock: every purchase ends with exactly one order."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from models import PurchaseTransition
from tests.support.factories import request
from tests.support.pipeline import Pipeline, in_states, partner_orders, start_pipeline, wait_until
from tests.support.sandbox import Sandbox

LOOKUP_LAG = 12.0  # seconds an order stays invisible to GET /v1/orders?quote_id= after its commit
QUOTE_TTL = 2.0  # the quote expires (on both clocks) long before the lookup catches up


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    env = {**app_env, "QUOTE_SAFETY_MARGIN_SECONDS": "0.3", "REDRIVE_AFTER_SECONDS": "1",
           "ORDER_RESOLVE_ATTEMPTS": "15", "ORDER_RESOLVE_MAX_INTERVAL_SECONDS": "2"}
    running = start_pipeline(env, log_dir, name="two-orders")
    yield running
    running.stop()


@pytest.fixture
def hostile(clean_sandbox: Sandbox) -> Iterator[Sandbox]:
    original = clean_sandbox.configure()
    clean_sandbox.configure(quote_ttl_seconds=QUOTE_TTL)
    yield clean_sandbox
    clean_sandbox.configure(quote_ttl_seconds=original["quote_ttl_seconds"])


def history(purchase_id: uuid.UUID) -> list[PurchaseTransition]:
    with session_scope() as session:
        return list(session.scalars(select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
                                    .order_by(PurchaseTransition.id)))


def assert_one_order_and_never_requoted(hostile: Sandbox, ids: list[uuid.UUID], pipeline: Pipeline) -> None:
    done = wait_until(ids, in_states("awaiting_transfer", "transfer_complete", "failed", "needs_attention",
                                     "stalled"), timeout=120, pipeline=pipeline)
    hostile.clear_faults()
    for purchase in done.values():
        orders = partner_orders(hostile, purchase.id)
        assert len(orders) == 1, f"{purchase.id}: {len(orders)} partner orders: {orders}"
        assert purchase.state in ("awaiting_transfer", "transfer_complete"), (purchase.state, purchase.last_error)
        assert purchase.order_id == orders[0]["order_id"]
        assert purchase.quotes_taken == 1, "re-quoted while an order existed"
        path = [t.to_state for t in history(purchase.id) if t.kind == "transition"]
        assert "order_unknown" in path
        assert "received" not in path[1:], f"went back to quoting: {path}"


def test_a_lost_answer_and_a_lagging_lookup_never_lead_to_a_second_order(
    pipeline: Pipeline, hostile: Sandbox
) -> None:
    # The order commits, its answer is dropped; the lookup shows nothing for 12 s; the retry
    # of the same quote answers QUOTE_ALREADY_CONSUMED, then the quote expires on our clock.
    hostile.set_faults({"create_order": {"drop_after_commit_rate": 1.0},
                        "list_orders": {"lookup_lag_seconds": LOOKUP_LAG}})
    ids = [pipeline.submit(request(event_id="5496124", section_name="101")) for _ in range(3)]
    assert_one_order_and_never_requoted(hostile, ids, pipeline)
    counters = hostile.faults()
    assert counters["totals"].get("lookup_lag", 0) >= 1, counters  # the lag really hid orders


def test_a_retry_answered_quote_expired_proves_nothing_when_expiry_is_checked_first(
    pipeline: Pipeline, hostile: Sandbox
) -> None:
    # Every order request waits 1.5 s at the partner before it is handled: the first commits
    # (its answer dropped), the retry of the same quote is handled after the 2 s quote expired,
    # and a partner that checks expiry before consumption answers it QUOTE_EXPIRED.
    hostile.set_faults({"create_order": {"drop_after_commit_rate": 1.0, "latency_ms": 1500,
                                         "expiry_checked_first": True},
                        "list_orders": {"lookup_lag_seconds": LOOKUP_LAG}})
    ids = [pipeline.submit(request(event_id="5496124", section_name="102")) for _ in range(3)]
    assert_one_order_and_never_requoted(hostile, ids, pipeline)
    # The partner really answered a retry QUOTE_EXPIRED where it would otherwise have said consumed.
    assert hostile.faults()["totals"].get("expiry_checked_first", 0) >= 1, hostile.faults()


def test_an_unknown_outcome_that_cannot_be_resolved_stops_for_a_person_with_the_evidence(
    pipeline: Pipeline, hostile: Sandbox
) -> None:
    # The lookup never lists the order (it misses every time): after ORDER_RESOLVE_ATTEMPTS the
    # purchase waits for a person in needs_attention, with the evidence; it never orders again.
    hostile.set_faults({"create_order": {"drop_after_commit_rate": 1.0},
                        "list_orders": {"lookup_miss_rate": 1.0}})
    purchase_id = pipeline.submit(request(event_id="5496124", section_name="103"))
    time.sleep(0.5)
    purchase = wait_until([purchase_id], in_states("needs_attention", "awaiting_transfer", "failed"), timeout=150,
                          pipeline=pipeline)[purchase_id]
    hostile.clear_faults()
    assert purchase.state == "needs_attention", (purchase.state, purchase.last_error)
    assert purchase.failure_code == "ORDER_OUTCOME_UNKNOWN"
    assert purchase.order_evidence == "exists"
    assert "already consumed" in (purchase.failure_message or "")
    assert len(partner_orders(hostile, purchase_id)) == 1
    assert purchase.quotes_taken == 1

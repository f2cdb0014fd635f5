"""No partner call outlives its lease (invariant 8), through real worker processes, the scheduler,
RabbitMQ, Postgres and both sandboxes over HTTP.

The partner answers the order (TBB) or the commit (Ticketmaster) a piece at a time, each piece far
inside the read timeout, for longer than the claim lease.  httpx alone would wait for the whole
answer, past the lease, while the scheduler handed the purchase to another worker.  Each call is
cut at its step's deadline instead: the purchase goes to "outcome unknown" under its own claim (not
re-driven as a worker that never reported back, no late answer), is resolved by asking the partner,
and ends with exactly one order (a Ticketmaster one without its token waits for a person).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from fulfilment.partners.ticketmaster.flow import source_account_id
from models import PurchaseTransition
from tests.support.factories import request, tm_request
from tests.support.pipeline import Pipeline, in_states, partner_orders, start_pipeline, wait_until
from tests.support.sandbox import Sandbox
from tests.support.tm_sandbox import TMSandboxProcess

LEASE = 8.0  # CLAIM_LEASE_SECONDS
STEP = 3.0  # STEP_DEADLINE_SECONDS
# 40 pieces 0.3 s apart: a 12 s answer (longer than the lease), each piece far inside the 5 s read timeout.
TRICKLE = {"trickle_ms": 300, "trickle_chunks": 40}


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    env = {**app_env, "CLAIM_LEASE_SECONDS": str(LEASE), "STEP_DEADLINE_SECONDS": str(STEP),
           "REDRIVE_AFTER_SECONDS": "1", "ORDER_RESOLVE_MAX_INTERVAL_SECONDS": "2", "TM_READ_TIMEOUT": "5"}
    running = start_pipeline(env, log_dir, processes=1, name="call-deadlines")
    yield running
    running.stop()


def history(purchase_id: uuid.UUID) -> list[PurchaseTransition]:
    with session_scope() as session:
        return list(session.scalars(select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
                                    .order_by(PurchaseTransition.id)))


def assert_cut_before_the_lease(purchase_id: uuid.UUID) -> None:
    """The step that sent the order recorded its unknown outcome itself, within its deadline."""
    steps = history(purchase_id)
    assert not [t for t in steps if t.kind == "late_answer"], [(t.kind, t.reason) for t in steps]
    transitions = [t for t in steps if t.kind == "transition"]
    ordering = next(t for t in transitions if t.to_state == "ordering")
    unknown = next(t for t in transitions if t.to_state == "order_unknown")
    assert unknown.from_state == "ordering" and "never reported back" not in unknown.reason, unknown.reason
    took = (unknown.created_at - ordering.created_at).total_seconds()
    # Cut at the step's deadline (3 s), far from the 12 s the answer takes: margin for a busy machine.
    assert took < LEASE - 2, f"the order call ended {took:.1f} s after the intent"


def test_a_tbb_order_answered_slower_than_the_lease_ends_at_the_deadline_with_one_order(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    clean_sandbox.set_faults({"create_order": TRICKLE})
    ids = [pipeline.submit(request()) for _ in range(2)]
    done = wait_until(ids, in_states("awaiting_transfer", "transfer_complete", "failed", "needs_attention", "stalled"),
                      timeout=90, pipeline=pipeline)
    assert clean_sandbox.faults()["counters"]["create_order"]["trickle"] >= 2
    clean_sandbox.clear_faults()
    for purchase in done.values():
        assert purchase.state in ("awaiting_transfer", "transfer_complete"), (purchase.state, purchase.last_error)
        orders = partner_orders(clean_sandbox, purchase.id)
        assert len(orders) == 1, orders
        assert purchase.order_id == orders[0]["order_id"]
        assert_cut_before_the_lease(purchase.id)


def test_a_tm_commit_answered_slower_than_the_lease_ends_at_the_deadline_with_one_order(
    pipeline: Pipeline, clean_tm_sandbox: TMSandboxProcess
) -> None:
    # The commit's answer, and the order token in it, never arrives within the lease: the order is
    # found among the unredeemed ones and, without its token, held for a person (as after a
    # commit-then-drop; README, Ticketmaster), never committed again.
    clean_tm_sandbox.admin.set_faults({"commit": TRICKLE})
    ids = [pipeline.submit(tm_request()) for _ in range(2)]
    done = wait_until(ids, in_states("tickets_issued", "failed", "needs_attention", "stalled"), timeout=90,
                      pipeline=pipeline)
    assert clean_tm_sandbox.admin.faults()["counters"]["commit"]["trickle"] >= 2
    clean_tm_sandbox.admin.clear_faults()
    per_source = clean_tm_sandbox.admin.counts()["orders_per_source_account"]
    for purchase in done.values():
        assert (purchase.state, purchase.failure_code) == ("needs_attention", "ORDER_TOKEN_UNKNOWN"), \
            (purchase.state, purchase.last_error)
        assert per_source.get(source_account_id(purchase.id), 0) == 1, per_source
        assert_cut_before_the_lease(purchase.id)

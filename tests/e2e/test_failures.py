"""Faults and refusals through the real pipeline: transient, permanent, unknown outcome."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from fulfilment.db import session_scope
from models import PurchaseTransition
from tests.support.factories import request
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.sandbox import Sandbox

FINAL = ("transfer_complete", "transfer_expired", "cancelled", "failed", "needs_attention", "stalled")


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    running = start_pipeline(app_env, log_dir, name="failures")
    yield running
    running.stop()


def path_of(purchase_id) -> list[str]:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return [t.to_state for t in session.scalars(
            select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
            .order_by(PurchaseTransition.id))]


def test_transient_faults_at_a_high_rate_still_complete_every_purchase(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    clean_sandbox.set_faults({"*": {"error_rate": 0.3, "rate_limit_rate": 0.15, "retry_after_seconds": 0.2,
                                    "plain_body_rate": 0.5}})
    ids = [pipeline.submit(request(section_name="102")) for _ in range(10)]
    done = wait_until(ids, in_states(*FINAL), timeout=150, pipeline=pipeline)
    counters = clean_sandbox.faults()
    clean_sandbox.clear_faults()

    assert {p.state for p in done.values()} == {"transfer_complete"}, {str(k): v.state for k, v in done.items()}
    for purchase in done.values():
        assert len(clean_sandbox.orders(quote_id=purchase.quote_id)) == 1
    injected = str(counters)
    assert "429" in injected or "rate_limit" in injected  # the faults really happened


def test_unknown_order_outcome_is_resolved_to_the_one_existing_order(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    # Every order is committed by the sandbox, then the connection drops before the answer.
    clean_sandbox.set_faults({"create_order": {"drop_after_commit_rate": 1.0}})
    ids = [pipeline.submit(request(section_name="103")) for _ in range(5)]
    done = wait_until(ids, in_states("awaiting_transfer", *FINAL), timeout=90, pipeline=pipeline)
    clean_sandbox.clear_faults()
    for purchase in done.values():
        assert purchase.state in ("awaiting_transfer", "transfer_complete"), (purchase.state, purchase.last_error)
        orders = clean_sandbox.orders(quote_id=purchase.quote_id)
        assert len(orders) == 1 and orders[0]["order_id"] == purchase.order_id
        assert path_of(purchase.id)[:5] == ["received", "quoted", "ordering", "order_unknown", "awaiting_transfer"]
        # Never re-quoted once the order may have existed.
        assert purchase.quotes_taken == 1


def test_unknown_outcome_where_nothing_was_committed_orders_once_with_the_same_quote(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    # 5xx on create_order: the order call's outcome is unknown to the client, but nothing was committed.
    clean_sandbox.set_faults({"create_order": {"fail_next": 3, "error_statuses": [502, 503, 504]}})
    purchase_id = pipeline.submit(request(section_name="201"))
    purchase = wait_until([purchase_id], in_states("awaiting_transfer", *FINAL), pipeline=pipeline)[purchase_id]
    assert purchase.state in ("awaiting_transfer", "transfer_complete")
    assert purchase.quotes_taken == 1
    assert len(clean_sandbox.orders(quote_id=purchase.quote_id)) == 1
    assert "order_unknown" in path_of(purchase_id)


def _deadline(days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"event_id": "9999999"}, "EVENT_NOT_FOUND"),
        ({"section_name": "999"}, "SECTION_NOT_FOUND"),
        ({"event_id": "5490001", "section_name": "102", "quantity": 1}, "NO_INVENTORY_AVAILABLE"),
        ({"event_id": "5490001", "section_name": "101", "row_name": "A", "quantity": 3}, "INSUFFICIENT_QUANTITY"),
        ({"event_id": "5490000", "section_name": "101"}, "EVENT_EXPIRED"),
        ({"event_id": "5496123", "delivery_deadline": _deadline(45)}, "INVALID_DELIVERY_DEADLINE"),
        ({"max_unit_price": "10.00"}, "PRICE_ABOVE_LIMIT"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_permanent_errors_fail_the_purchase_with_the_code(
    pipeline: Pipeline, clean_sandbox: Sandbox, overrides: dict, code: str
) -> None:
    purchase_id = pipeline.submit(request(**overrides))
    purchase = wait_until([purchase_id], in_states(*FINAL), pipeline=pipeline)[purchase_id]
    assert purchase.state == "failed"
    assert purchase.failure_code == code
    assert purchase.failure_message
    if code == "INVALID_DELIVERY_DEADLINE":
        assert clean_sandbox.orders(quote_id=purchase.quote_id) == []

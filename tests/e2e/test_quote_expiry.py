"""Short quote TTLs force re-quotes; no order is ever placed on an expired quote."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.factories import request
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.sandbox import Sandbox


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    env = {**app_env, "QUOTE_SAFETY_MARGIN_SECONDS": "0.3", "MAX_REQUOTES": "40"}
    running = start_pipeline(env, log_dir, name="expiry")
    yield running
    running.stop()


@pytest.fixture
def short_quotes(clean_sandbox: Sandbox) -> Iterator[Sandbox]:
    original = clean_sandbox.configure()  # PATCH with nothing: read the current config
    clean_sandbox.configure(quote_ttl_seconds=1.0)
    yield clean_sandbox
    clean_sandbox.configure(quote_ttl_seconds=original["quote_ttl_seconds"])


def test_expired_quotes_are_requoted_and_never_ordered(pipeline: Pipeline, short_quotes: Sandbox) -> None:
    # Orders arrive after their 1 s quote has expired: the sandbox answers QUOTE_EXPIRED.
    short_quotes.set_faults({"create_order": {"latency_ms": 1200}})
    ids = [pipeline.submit(request(section_name="202")) for _ in range(6)]
    time.sleep(5)
    short_quotes.clear_faults()  # now orders get through inside the quote's life
    done = wait_until(ids, in_states("awaiting_transfer", "transfer_complete", "failed"), timeout=120,
                      pipeline=pipeline)

    assert {p.state for p in done.values()} <= {"awaiting_transfer", "transfer_complete"}
    for purchase in done.values():
        assert purchase.quotes_taken >= 2, "the short TTL should have forced at least one re-quote"
        [order] = short_quotes.orders(quote_id=purchase.quote_id)
        assert order["order_id"] == purchase.order_id
    assert short_quotes.stats()["orders_on_expired_quote"] == 0
    for order in short_quotes.orders():
        assert order["created_on_expired_quote"] is False


def test_quotes_inside_the_safety_margin_are_replaced_before_ordering(
    pipeline: Pipeline, clean_sandbox: Sandbox
) -> None:
    # TTL below the safety margin: every quote is too close to expiry to order on.
    clean_sandbox.configure(quote_ttl_seconds=0.2)
    try:
        purchase_id = pipeline.submit(request(section_name="301"))
        purchase = wait_until([purchase_id], in_states("failed"), timeout=60, pipeline=pipeline)[purchase_id]
    finally:
        clean_sandbox.configure(quote_ttl_seconds=3600)
    assert purchase.failure_code == "REQUOTE_LIMIT"
    assert purchase.quotes_taken == 41  # the first quote and MAX_REQUOTES=40 re-quotes
    assert clean_sandbox.orders(quote_id=purchase.quote_id) == []

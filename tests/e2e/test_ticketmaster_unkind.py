"""Ticketmaster as the real API behaves, with worker processes, the scheduler process, RabbitMQ and
Postgres (issue 16): each unkind sandbox mode ends with one order and the tickets issued, or a clear
hold where that is the right answer, and no leaked cart.  The same modes step by step, in one process:
tests/integration/test_tm_unkind.py."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fulfilment.partners.ticketmaster.flow import source_account_id
from tests.support.factories import tm_request
from tests.support.pipeline import Pipeline, in_states, start_pipeline, wait_until
from tests.support.tm_sandbox import TMSandboxProcess, fresh_nonce


@pytest.fixture(scope="module")
def pipeline(app_env: dict[str, str], log_dir: Path) -> Iterator[Pipeline]:
    running = start_pipeline({**app_env, "TM_UNAVAILABLE_RETRY_SECONDS": "1"}, log_dir, name="tm-unkind")
    yield running
    running.stop()


@pytest.fixture
def tm(clean_tm_sandbox: TMSandboxProcess) -> TMSandboxProcess:
    return clean_tm_sandbox


def orders(tm: TMSandboxProcess, purchase_id: uuid.UUID) -> int:
    per_source: dict[str, int] = tm.admin.counts()["orders_per_source_account"]
    return per_source.get(source_account_id(purchase_id), 0)


def issued(pipeline: Pipeline, tm: TMSandboxProcess, *bodies: dict[str, Any], timeout: float = 120) -> None:
    ids = [pipeline.submit(body) for body in bodies]
    wait_until(ids, in_states("tickets_issued"), pipeline=pipeline, timeout=timeout)
    assert [orders(tm, purchase_id) for purchase_id in ids] == [1] * len(ids)
    counts = tm.admin.counts()
    assert counts["concurrent_calls"] == 0 and counts["leaked_carts"] == 0 and counts["commits_on_expired_carts"] == 0


def test_a_stalled_then_failing_commit_poll_ends_with_the_tickets_and_one_order(pipeline: Pipeline,
                                                                                 tm: TMSandboxProcess) -> None:
    # The issue's own run: commit 202, a poll 202 again, then a poll stalled past the step's deadline.
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=1)
    tm.admin.stall_polls(1, stall_ms=12_000, operation="commit")
    issued(pipeline, tm, tm_request())
    tm.admin.set_faults({"poll_commit": {"fail_next": 4, "error_statuses": [502, 503, 504]}})
    issued(pipeline, tm, tm_request())
    assert tm.admin.counts()["requests"]["commit"] == 2


def test_one_time_nonces_each_request_pays_with_its_own(pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    tm.admin.one_time_nonces(True)
    issued(pipeline, tm, *[tm_request(payment_nonce=fresh_nonce()) for _ in range(3)])
    assert tm.admin.counts()["nonces_reused"] == 0


def test_deprecated_event_details_refused_or_skipped(pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    # The barcode-only event: no other purchase of this module's workers asked for (and cached) it.
    barcode_event = {"event_id": "0B004D43F86C478F", "ticket_type_id": "000042800007", "price_level_id": "8",
                     "max_unit_price": "200"}
    tm.admin.refuse("event_details", 404)
    issued(pipeline, tm, tm_request(**barcode_event))
    assert tm.admin.counts()["faults"]["event_details"] == {"status": 1, "status_404": 1}  # asked once, refused
    tm.admin.refuse("event_details", 403)
    issued(pipeline, tm, tm_request(event_start="2027-03-01T03:00:00Z", event_timezone="America/Los_Angeles",
                                    **barcode_event))
    # The second purchase never asked: no 403 counted.
    assert tm.admin.counts()["faults"]["event_details"] == {"status": 1, "status_404": 1}


def test_20001_at_noon_is_waited_out_in_seconds_with_the_same_cart(pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    tm.admin.niterun("off")
    tm.admin.unavailable("commit", n=1)
    zone = next(name for name in ("America/Los_Angeles", "Europe/London", "Asia/Tokyo")
                if 3 <= dt.datetime.now(ZoneInfo(name)).hour <= 22)
    issued(pipeline, tm, tm_request(event_start="2027-03-01T03:00:00Z", event_timezone=zone))
    counts = tm.admin.counts()
    assert (counts["requests"]["reserve"], counts["requests"]["commit"], counts["unavailable_refusals"]) == (1, 2, 1)


def test_seats_as_asked_and_holds_that_count_down(pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    tm.admin.swap_best_available(1.0)
    tm.admin.configure(hold_time_variance_seconds=120)
    issued(pipeline, tm, tm_request(section_name="101", row_name="A", quantity=2), tm_request())
    assert tm.admin.counts()["best_available_swaps"] == 0


def test_empty_barcodes_and_a_fans_device(pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    tm.admin.empty_barcodes()
    issued(pipeline, tm, tm_request(quantity=2, device={"device_id": "fan-1", "device_type": "native",
                                                        "device_os": "android"}))


def test_a_commit_answered_after_its_lease_is_held_with_its_order_never_bought_twice(
        pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    # Answered after the call had to end (its lease): the token is lost with the connection. The order
    # is found among unredeemed orders and held for a person (`fulfil resolve --order-token-file`).
    tm.admin.answer_late(1, answer_after_ms=14_000)
    purchase_id = pipeline.submit(tm_request())
    [held] = wait_until([purchase_id], in_states("needs_attention"), pipeline=pipeline, timeout=120).values()
    assert held.failure_code == "ORDER_TOKEN_UNKNOWN" and held.order_evidence == "exists"
    assert orders(tm, purchase_id) == 1 and tm.admin.counts()["requests"]["commit"] == 1


def test_safetix_delays_shown_by_one_signal_only_are_never_issued_without_tokens(
        pipeline: Pipeline, tm: TMSandboxProcess) -> None:
    from sqlalchemy import text

    from fulfilment.db import session_scope
    from tests.support.tm_pipeline import tickets

    ids = []
    for signal in ("service_level", "date"):
        tm.admin.delay_safetix(signal, until=tm.admin.now() + dt.timedelta(hours=2))
        purchase_id = pipeline.submit(tm_request(quantity=2))
        wait_until([purchase_id], lambda p: p.state == "awaiting_tickets" and bool(
            (p.partner_data or {}).get("delay_notified") or "without a token" in (p.last_error or "")),
            pipeline=pipeline, timeout=90)
        assert tickets(purchase_id) == []  # nothing issued as final without its tokens
        ids.append(purchase_id)
    tm.admin.advance(3 * 3600)  # the delay ends on TM's clock; ours cannot be moved: the waits end now
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET next_action_at = now() WHERE id = ANY(:ids)"), {"ids": ids})
    issued_at = wait_until(ids, in_states("tickets_issued"), pipeline=pipeline, timeout=90)
    assert len(issued_at) == 2 and all(t.token_encrypted for pid in ids for t in tickets(pid))
    assert [orders(tm, purchase_id) for purchase_id in ids] == [1, 1]


def test_an_unredeemed_list_that_refuses_or_never_lists_proves_nothing(pipeline: Pipeline,
                                                                         tm: TMSandboxProcess) -> None:
    # The commit is made and its answer dropped (the token never sent): only the list could show it.
    tm.admin.set_faults({"commit": {"drop_next": 1}, "unredeemed": {"status": 403, "status_rate": 1.0}})
    refused = pipeline.submit(tm_request())
    [held] = wait_until([refused], in_states("needs_attention"), pipeline=pipeline, timeout=180).values()
    assert held.failure_code == "ORDER_OUTCOME_UNKNOWN" and held.order_evidence == "may_exist"
    tm.admin.clear_faults()
    tm.admin.hide_from_unredeemed(1.0)
    tm.admin.set_faults({"commit": {"drop_next": 1}})
    hidden = pipeline.submit(tm_request())
    [held] = wait_until([hidden], in_states("needs_attention"), pipeline=pipeline, timeout=180).values()
    assert held.failure_code == "ORDER_OUTCOME_UNKNOWN"
    assert [orders(tm, refused), orders(tm, hidden)] == [1, 1]  # held, never bought again
    assert tm.admin.counts()["requests"]["commit"] == 2

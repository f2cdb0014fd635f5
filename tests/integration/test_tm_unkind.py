"""Ticketmaster as the real API behaves (issue 16): each unkind sandbox mode against the real steps,
real Postgres and the sandbox over HTTP, re-driven by the scheduler's `redrive_due`.  Each ends with
one order and the tickets issued, or a clear pause or hold where that is the right answer, and no
leaked cart.  The same modes with worker processes: tests/e2e/test_ticketmaster_unkind.py."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import Next
from fulfilment.flowkit.flow import Partners
from fulfilment.partners.registry import build_partners
from fulfilment.settings import Settings, get_settings
from fulfilment.state_machine import State
from fulfilment.step_names import StepName
from fulfilment.steps import runner
from tests.support.database import wait_for_state
from tests.support.factories import reload, tm_request
from tests.support.tm_pipeline import Driver, finished, history, orders_of, tickets
from tests.support.tm_sandbox import TMSandboxProcess, fresh_nonce


def issued_once(tm: TMSandboxProcess, purchase_id: uuid.UUID, purchase: Any) -> None:
    assert purchase.state == State.TICKETS_ISSUED, (purchase.state, purchase.failure_code, purchase.last_error)
    assert len(orders_of(tm, purchase_id)) == 1
    counts = tm.admin.counts()
    assert counts["concurrent_calls"] == 0 and counts["leaked_carts"] == 0
    assert counts["commits_on_expired_carts"] == 0


def run(tm: TMSandboxProcess, settings: Settings | None = None, *, timeout: float = 90,
        **request: Any) -> tuple[uuid.UUID, Any]:
    settings = settings or get_settings()
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        purchase_id = driver.take_in(tm_request(**request))
        return purchase_id, driver.until(purchase_id, finished, timeout=timeout)
    finally:
        built.close()


def due_now(purchase_id: uuid.UUID) -> None:
    """As if its parked wait had passed (the sandbox clock was moved; ours cannot be)."""
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET next_action_at = now() WHERE id = :id"), {"id": purchase_id})


# ---- polls that stall or fail: the polling URL is never dropped ----------------------------------------

def test_a_commit_poll_that_stalls_past_the_steps_deadline_is_polled_again_and_issues_the_tickets(
        tm: TMSandboxProcess, partners: Partners) -> None:
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=1)
    tm.admin.stall_polls(1, stall_ms=12_000, operation="commit")  # past STEP_DEADLINE_SECONDS (10)
    purchase_id, purchase = run(tm)
    issued_once(tm, purchase_id, purchase)
    counts = tm.admin.counts()
    assert counts["requests"]["commit"] == 1
    print(counts)
    assert counts["faults"]["poll_commit"].get("stall", 0) >= 1 or counts["faults"]["poll"].get("stall", 0) >= 1


def test_a_commit_poll_answering_5xx_keeps_its_url_and_issues_the_tickets(tm: TMSandboxProcess,
                                                                            partners: Partners) -> None:
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=1)
    tm.admin.set_faults({"poll_commit": {"fail_next": 6, "error_statuses": [502, 503]}})
    purchase_id, purchase = run(tm)
    issued_once(tm, purchase_id, purchase)
    assert tm.admin.counts()["requests"]["commit"] == 1


def test_a_commit_still_processing_is_never_held_for_its_number_of_polls(tm: TMSandboxProcess) -> None:
    # Many more polls than ORDER_RESOLVE_ATTEMPTS: counted against the cart's window, not polls.
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=0)
    tm.admin.set_faults({"poll_commit": {"fail_next": 8, "error_statuses": [503]}})
    settings = get_settings().model_copy(update={"order_resolve_attempts": 2, "order_resolve_max_interval_seconds": 0.2,
                                                 "redrive_after_seconds": 0.2})
    purchase_id, purchase = run(tm, settings)
    issued_once(tm, purchase_id, purchase)
    assert purchase.failure_code is None


def test_a_gone_polling_url_is_forgotten_and_the_order_looked_up_never_committed_again(
        tm: TMSandboxProcess, partners: Partners) -> None:
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=1)
    settings = get_settings()
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        purchase_id = driver.take_in(tm_request())
        driver.until(purchase_id, lambda p: p.state == State.ORDER_UNKNOWN)
        commits = [job for job in tm.admin.polling_jobs() if job["endpoint"] == "commit"]
        assert commits
        for job in commits:
            tm.admin.forget_poll(job["poll_id"])
        purchase = driver.until(purchase_id, finished, timeout=60)
    finally:
        built.close()
    # The order exists (committed); its token was never read: held for a person, never bought again.
    assert purchase.state == State.NEEDS_ATTENTION and purchase.failure_code == "ORDER_TOKEN_UNKNOWN"
    assert len(orders_of(tm, purchase_id)) == 1 and tm.admin.counts()["requests"]["commit"] == 1


# ---- answers that come late --------------------------------------------------------------------------

def test_a_commit_answered_after_the_claim_passed_on_still_issues_the_tickets(tm: TMSandboxProcess) -> None:
    """The commit is made at once and answered 4 s later; meanwhile its lease is taken over and
    another worker finds the order among unredeemed orders, without its token (held for a person).
    The late answer brings the token: the purchase goes on to its tickets, never held, never twice."""
    tm.admin.answer_late(1, answer_after_ms=4_000)
    _late_answer_taken_over(tm)


def test_a_commit_answered_202_after_the_claim_passed_on_keeps_its_polling_url(tm: TMSandboxProcess) -> None:
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=1)
    tm.admin.answer_late(1, answer_after_ms=4_000)
    purchase_id = _late_answer_taken_over(tm)
    assert any("answered 202 late: polling URL" in (h.reason or "") for h in history(purchase_id))


def _late_answer_taken_over(tm: TMSandboxProcess) -> uuid.UUID:
    settings = get_settings()
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        raw = tm_request()
        from fulfilment.requests import purchase_id_for

        purchase_id = purchase_id_for(raw["request_id"])
        def first_worker() -> None:  # reserves (polling if TM says 202), pays, commits: then waits 4 s
            driver.take_in(raw)
            driver.until(purchase_id, lambda p: State(p.state) not in (State.RECEIVED, State.QUOTED), timeout=30)

        first = threading.Thread(target=first_worker)
        first.start()
        wait_for_state(purchase_id, State.ORDERING)
        time.sleep(0.5)  # the commit is in flight, answered in 4 s
        with session_scope() as session:  # its lease passes (a pause, a slow network): another worker steps in
            session.execute(text("UPDATE purchases SET claimed_until = now() - interval '1 second', "
                                 "next_action_at = now() WHERE id = :id"), {"id": purchase_id})
        other = Driver(built, settings.model_copy(update={"order_resolve_attempts": 1}))
        other.mine.add(purchase_id)
        runner.run_step(StepName.RESOLVE, purchase_id, partner=built, settings=other.settings, message_id="takeover",
                        send=lambda following, pid: None)
        first.join(40)
        assert not first.is_alive()
        purchase = driver.until(purchase_id, finished, timeout=60)
    finally:
        built.close()
    issued_once(tm, purchase_id, purchase)
    assert tm.admin.counts()["requests"]["commit"] == 1
    return purchase_id


def test_a_commit_answered_after_the_steps_deadline_is_found_and_held_with_its_order_number(
        tm: TMSandboxProcess, partners: Partners) -> None:
    # The answer comes after the call had to end (its lease): lost with the connection.  The order is
    # found among unredeemed orders; a person gets its token from support (`fulfil resolve`).
    tm.admin.answer_late(1, answer_after_ms=12_000)
    purchase_id, purchase = run(tm)
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_TOKEN_UNKNOWN")
    assert len(orders_of(tm, purchase_id)) == 1 and tm.admin.counts()["requests"]["commit"] == 1


# ---- payment nonces pay once ---------------------------------------------------------------------------

def test_one_time_nonces_each_purchase_pays_with_its_own(tm: TMSandboxProcess, partners: Partners) -> None:
    tm.admin.one_time_nonces(True)
    for _ in range(2):
        purchase_id, purchase = run(tm, payment_nonce=fresh_nonce())
        issued_once(tm, purchase_id, purchase)
    assert tm.admin.counts()["nonces_reused"] == 0


def test_one_static_nonce_for_every_purchase_is_refused_from_the_second_on(tm: TMSandboxProcess) -> None:
    tm.admin.one_time_nonces(True)
    settings = get_settings().model_copy(update={"tm_payment_source": "static",
                                                 "tm_payment_nonce": get_settings().tm_apikey.__class__(  # type: ignore[union-attr]
                                                     "fake-valid-visa-nonce")})
    first_id, first = run(tm, settings, payment_nonce=None)
    issued_once(tm, first_id, first)
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        second_id = driver.take_in(tm_request(payment_nonce=None))
        second = driver.until(second_id, lambda p: p.state == State.PAUSED)
    finally:
        built.close()
    assert "20122" in (second.last_error or "") and tm.admin.counts()["nonces_reused"] == 1
    assert orders_of(tm, second_id) == [] and tm.admin.counts()["leaked_carts"] == 0


def test_a_payment_setup_refused_by_field_pauses_the_purchase_never_fails_it(tm: TMSandboxProcess) -> None:
    # TM_PAYMENT_CIN unset: `cin` is left out (never sent empty) and the sandbox names the missing field.
    settings = get_settings().model_copy(update={"tm_payment_cin": None})
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        ids = [driver.take_in(tm_request()) for _ in range(2)]
        paused = [driver.until(pid, lambda p: p.state == State.PAUSED) for pid in ids]
    finally:
        built.close()
    assert all("PAYMENT_SETUP" in (p.last_error or "") and "cin" in (p.last_error or "") for p in paused)
    assert all(p.failure_code is None for p in paused)
    assert tm.admin.orders() == [] and tm.admin.counts()["leaked_carts"] == 0


# ---- the deprecated event details -----------------------------------------------------------------------

def test_with_the_events_start_and_zone_in_the_request_no_event_details_call_is_made(tm: TMSandboxProcess,
                                                                                       partners: Partners) -> None:
    purchase_id, purchase = run(tm, event_start="2027-03-01T03:00:00Z", event_timezone="America/Los_Angeles")
    issued_once(tm, purchase_id, purchase)
    assert tm.admin.counts()["requests"].get("event_details", 0) == 0
    assert all(t.refresh_due_at is not None for t in tickets(purchase_id))


def test_event_details_answering_404_or_403_never_fails_a_purchase(tm: TMSandboxProcess, partners: Partners) -> None:
    for status in (404, 403):
        tm.admin.refuse("event_details", status)
        purchase_id, purchase = run(tm)
        issued_once(tm, purchase_id, purchase)
        # What needs the start says so: no refresh can be scheduled without it.
        assert "event's start is unknown" in [h.reason for h in history(purchase_id)][-1]
        tm.admin.reset()


# ---- the unredeemed list ---------------------------------------------------------------------------------

def test_an_unredeemed_list_answering_403_proves_nothing(tm: TMSandboxProcess) -> None:
    tm.admin.set_faults({"commit": {"drop_next": 1}, "unredeemed": {"status": 403, "status_rate": 1.0}})
    settings = get_settings().model_copy(update={"order_resolve_attempts": 2, "order_absence_grace_seconds": 0.0})
    purchase_id, purchase = run(tm, settings)
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_OUTCOME_UNKNOWN")
    assert len(orders_of(tm, purchase_id)) == 1 and tm.admin.counts()["requests"]["commit"] == 1


def test_an_unredeemed_list_that_never_shows_the_order_proves_nothing(tm: TMSandboxProcess) -> None:
    tm.admin.hide_from_unredeemed(1.0)
    tm.admin.set_faults({"commit": {"drop_next": 1}})
    settings = get_settings().model_copy(update={"order_resolve_attempts": 2})
    purchase_id, purchase = run(tm, settings)
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_OUTCOME_UNKNOWN")
    assert len(orders_of(tm, purchase_id)) == 1 and tm.admin.counts()["requests"]["commit"] == 1


# ---- SafeTix delays, barcodes -----------------------------------------------------------------------------

def _delayed_then_issued(tm: TMSandboxProcess, signal: str) -> None:
    until = tm.admin.now() + dt.timedelta(hours=2)
    tm.admin.delay_safetix(signal, until=until)
    settings = get_settings()
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        purchase_id = driver.take_in(tm_request(quantity=2))
        waiting = driver.until(purchase_id, lambda p: p.state == State.AWAITING_TICKETS
                               and "without a token" in (p.last_error or "") or p.state == State.AWAITING_TICKETS
                               and bool((p.partner_data or {}).get("delay_notified")), timeout=40)
        assert waiting.state == State.AWAITING_TICKETS and tickets(purchase_id) == []
        tm.admin.advance(3 * 3600)
        due_now(purchase_id)
        purchase = driver.until(purchase_id, finished, timeout=40)
    finally:
        built.close()
    issued_once(tm, purchase_id, purchase)
    assert all(t.token_encrypted for t in tickets(purchase_id))


def test_a_delay_signalled_only_by_service_level_is_never_issued_without_tokens(tm: TMSandboxProcess) -> None:
    _delayed_then_issued(tm, "service_level")


def test_a_delay_signalled_only_by_the_delay_date_is_never_issued_without_tokens(tm: TMSandboxProcess) -> None:
    _delayed_then_issued(tm, "date")


def test_tickets_with_empty_barcodes_are_issued_and_refreshed_through_order_management(
        tm: TMSandboxProcess, partners: Partners) -> None:
    tm.admin.empty_barcodes()
    purchase_id, purchase = run(tm, quantity=2, device={"device_id": "fan-phone-1", "device_type": "native",
                                                         "device_os": "ios"})
    issued_once(tm, purchase_id, purchase)
    stored = tickets(purchase_id)
    assert len(stored) == 2 and all(t.barcode is None and t.token_encrypted for t in stored)
    from fulfilment.steps import refresh

    fresh = refresh.refresh_tickets(purchase_id, partners=partners, settings=get_settings(), on_demand=True,
                                    device={"device_id": "fan-phone-2", "device_type": "native", "device_os": "ios"})
    assert fresh == 2
    assert tm.admin.counts()["requests"].get("securerender", 0) == 0


# ---- 20001 at noon, holds that count down, seats as asked -----------------------------------------------

def test_20001_at_noon_waits_minutes_and_keeps_the_paid_cart(tm: TMSandboxProcess) -> None:
    tm.admin.niterun("off")
    tm.admin.unavailable("commit", n=1)
    settings = get_settings().model_copy(update={"tm_unavailable_retry_seconds": 1.0})
    # An event whose local time is outside 00:00-02:00 right now (else 20001 is niterun).
    zone = next(name for name in ("America/Los_Angeles", "Europe/London", "Asia/Tokyo")
                if 3 <= dt.datetime.now(ZoneInfo(name)).hour <= 22)
    purchase_id, purchase = run(tm, settings, event_start="2027-03-01T03:00:00Z", event_timezone=zone)
    issued_once(tm, purchase_id, purchase)
    counts = tm.admin.counts()
    assert counts["requests"]["reserve"] == 1 and counts["requests"]["payment"] == 1  # the same cart, committed later
    assert counts["requests"]["commit"] == 2 and counts["unavailable_refusals"] == 1


def test_a_hold_that_counts_down_is_read_from_each_answer(tm: TMSandboxProcess, partners: Partners) -> None:
    tm.admin.configure(hold_time_seconds=600, hold_time_variance_seconds=300)
    # The reserve answers 4 s after it was sent; the payment's answer extends the hold: the cart's end is
    # the payment's sending + its hold_time, not the reserve's sending + it (4 s too early).
    tm.admin.set_faults({"reserve": {"latency_ms": 4000}})
    purchase_id, purchase = run(tm)
    issued_once(tm, purchase_id, purchase)
    [cart] = [c for c in tm.admin.carts() if c["state"] == "committed"]
    tm_end = dt.datetime.fromisoformat(cart["hold_until"].replace("Z", "+00:00"))
    ours = reload(purchase_id).quote_expires_at
    assert ours is not None
    # Never later than TM's own end of the hold (the last answer's hold_time counted from when its call
    # was sent), and not much earlier either (a hold shaved by up to 300 s is read, not assumed).
    assert tm_end - dt.timedelta(seconds=2) <= ours <= tm_end + dt.timedelta(seconds=1)


def test_best_available_never_pays_for_other_seats_than_asked(tm: TMSandboxProcess, partners: Partners) -> None:
    tm.admin.swap_best_available(1.0)
    purchase_id, purchase = run(tm, section_name="101", row_name="A", quantity=2)
    issued_once(tm, purchase_id, purchase)
    assert all((t.section, t.row) == ("101", "A") for t in tickets(purchase_id))
    assert tm.admin.counts()["best_available_swaps"] == 0  # accept_best_available false was sent
    assert tm.admin.counts()["requests"]["payment"] == 1


def test_operators_finish_a_purchase_whose_token_came_from_support(tm: TMSandboxProcess, partners: Partners) -> None:
    from fulfilment import operator

    tm.admin.set_faults({"commit": {"drop_next": 1}})
    purchase_id, purchase = run(tm)
    assert purchase.failure_code == "ORDER_TOKEN_UNKNOWN"
    [order] = orders_of(tm, purchase_id)
    key = get_settings().ticket_key
    assert key is not None
    done = operator.resolve_with_token(str(purchase_id), order_id=order["order_number"],
                                       order_token=key.__class__(order["order_token"]), operator="alice",
                                       ticket_key=key)
    assert done.to_state == State.AWAITING_TICKETS
    assert order["order_token"] not in str(reload(purchase_id).partner_data)
    driver = Driver(partners)
    driver.mine.add(purchase_id)
    driver.send(Next(StepName.TICKETS), purchase_id)
    issued_once(tm, purchase_id, driver.until(purchase_id, finished))


# ---- a database write that fails after the partner said yes -------------------------------------------

def test_an_order_answer_whose_database_connection_broke_is_written_on_a_fresh_one(tm: TMSandboxProcess,
                                                                                    partners: Partners) -> None:
    """The commit is answered 2 s after it was made.  Its write waits on a row lock, and that very
    connection is cut under it (a reset, a failover mid-write).  The answer (order number, token) is
    written again on a fresh connection: the purchase goes on to its tickets, never resolved as
    unknown, never held."""
    tm.admin.answer_late(1, answer_after_ms=2_000)
    settings = get_settings()
    driver = Driver(partners, settings)
    raw = tm_request()
    from fulfilment.requests import purchase_id_for
    from tests.support.database import cut_the_write_of

    purchase_id = purchase_id_for(raw["request_id"])
    first = threading.Thread(target=driver.take_in, args=(raw,))
    first.start()
    wait_for_state(purchase_id, State.ORDERING)
    cut_the_write_of(purchase_id)  # the worker's write of the answer, mid-write
    first.join(40)
    assert not first.is_alive()
    purchase = driver.until(purchase_id, finished, timeout=60)
    issued_once(tm, purchase_id, purchase)
    assert [h.to_state for h in history(purchase_id) if h.kind == "transition"][:4] == [
        "received", "quoted", "ordering", "awaiting_tickets"]


# ---- carts are deleted on every path that ends a purchase before its order ------------------------------

def test_a_purchase_failed_for_its_delivery_deadline_deletes_its_paid_cart(tm: TMSandboxProcess) -> None:
    settings = get_settings().model_copy(update={"order_after_quote_inline": False})
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        purchase_id = driver.take_in(tm_request())
        assert reload(purchase_id).state == State.QUOTED
        driver.queue.clear()  # the order step's message comes after the deadline has come too close
        late = settings.model_copy(update={"min_delivery_lead_seconds": 10 * 86400.0})
        runner.run_step(StepName.ORDER, purchase_id, partner=built, settings=late, message_id="late-order",
                        send=lambda following, pid: None)
    finally:
        built.close()
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code) == (State.FAILED, "DELIVERY_DEADLINE_TOO_CLOSE")
    assert [cart["state"] for cart in tm.admin.carts()] == ["deleted"]
    assert tm.admin.orders() == [] and tm.admin.counts()["leaked_carts"] == 0


def test_fulfil_cancel_deletes_the_cancelled_purchases_cart(tm: TMSandboxProcess, configured: dict[str, str]) -> None:
    import subprocess
    import sys

    settings = get_settings().model_copy(update={"order_after_quote_inline": False})
    built = build_partners(settings)
    try:
        purchase_id = Driver(built, settings).take_in(tm_request())
    finally:
        built.close()
    assert reload(purchase_id).state == State.QUOTED
    done = subprocess.run([sys.executable, "-m", "fulfilment.cli", "cancel", str(purchase_id), "--reason",
                           "the buyer changed their mind", "--operator", "alice"],
                          env=configured, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert reload(purchase_id).state == State.FAILED
    assert [cart["state"] for cart in tm.admin.carts()] == ["deleted"]
    assert tm.admin.counts()["leaked_carts"] == 0

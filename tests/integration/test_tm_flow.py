"""A Ticketmaster purchase through the real steps (steps/runner.py), real Postgres and the TM
sandbox over HTTP, re-driven by the scheduler's own `redrive_due`: what each TM answer leads to.

The worker processes, RabbitMQ and the scheduler process are in tests/e2e/test_ticketmaster.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from fulfilment import ticket_crypto
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import Next
from fulfilment.flowkit.flow import Partners
from fulfilment.partners.registry import build_partners
from fulfilment.partners.ticketmaster import flow as tm_flow
from fulfilment.settings import get_settings
from fulfilment.state_machine import State
from fulfilment.step_names import StepName
from fulfilment.steps import intake
from models import OutboxEvent, Purchase, PurchaseTransition
from tests.support.factories import reload, request, tm_request
from tests.support.tm_pipeline import Driver, events, finished, history, orders_of, tickets, valid_events
from tests.support.tm_sandbox import BARCODE_EVENT, DELAY_EVENT, TMSandboxProcess


def test_a_ticketmaster_purchase_ends_with_its_tickets_issued(tm: TMSandboxProcess, partners: Partners) -> None:
    driver = Driver(partners)
    raw = tm_request(quantity=2)
    purchase_id = driver.take_in(raw)
    purchase = driver.until(purchase_id, finished)

    assert purchase.state == State.TICKETS_ISSUED, purchase.last_error
    assert purchase.partner == "ticketmaster"
    [order] = orders_of(tm, purchase_id)
    assert purchase.order_id == order["order_number"]
    assert order["third_party_account_id"] == raw["third_party_account_id"]
    assert [t["state"] for t in tm.admin.carts()] == ["committed"]
    # The path, through the core's states.
    assert [h.to_state for h in history(purchase_id) if h.kind == "transition"] == [
        "received", "quoted", "ordering", "awaiting_tickets", "tickets_issued"]
    # Tickets stored with their tokens encrypted, the order token too; refresh due at start - 20 h.
    stored = tickets(purchase_id)
    assert [(t.section, t.row) for t in stored] == [(s["section"], s["row"]) for s in order["tickets"]]
    key = get_settings().ticket_key
    assert key is not None
    for ticket in stored:
        assert ticket.token_encrypted and "." not in ticket.token_encrypted[:5]
        assert ticket_crypto.decrypt(key, ticket.token_encrypted).get_secret_value()
        assert ticket.refresh_due_at == ticket.event_start - dt.timedelta(hours=20)  # type: ignore[operator]
    assert order["order_token"] not in str(purchase.partner_data)
    assert ticket_crypto.decrypt(key, purchase.partner_data["order_token"]).get_secret_value() == order["order_token"]
    # The requesting service learns the tickets from the event.
    # In the outbox (Postgres) the tokens are sealed; the relay opens them as it publishes.
    with session_scope() as session:
        stored_events = " ".join(str(e.payload) for e in session.scalars(
            select(OutboxEvent).where(OutboxEvent.purchase_id == purchase_id)))
    issued = [e for e in valid_events(purchase_id) if e["type"] == "purchase.tickets_issued"]
    assert issued and all(t["token"] not in stored_events for t in issued[0]["tickets"])
    assert len(issued) == 1
    assert sorted(t["barcode"] for t in issued[0]["tickets"]) == sorted(t["barcode"] for t in order["tickets"])
    assert all(t["token"] for t in issued[0]["tickets"])
    assert issued[0]["order"]["order_id"] == order["order_number"]
    counts = tm.admin.counts()
    assert counts["concurrent_calls"] == 0 and counts["leaked_carts"] == 0


def test_tbb_purchases_are_unchanged_beside_ticketmaster(tm: TMSandboxProcess, partners: Partners,
                                                         clean_sandbox: Any) -> None:
    driver = Driver(partners)
    tbb_id = driver.take_in(request())
    tm_id = driver.take_in(tm_request())
    assert driver.until(tbb_id, lambda p: p.state == State.TRANSFER_COMPLETE).partner == "tbb"
    assert driver.until(tm_id, finished).state == State.TICKETS_ISSUED


def test_a_cart_above_the_price_limit_is_deleted_and_the_purchase_fails(tm: TMSandboxProcess,
                                                                        partners: Partners) -> None:
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request(max_unit_price="54.40"))  # the all-in price is 54.41
    purchase = driver.until(purchase_id, finished)
    assert (purchase.state, purchase.failure_code) == (State.FAILED, "PRICE_ABOVE_LIMIT")
    assert "54.41" in (purchase.failure_message or "")
    assert [cart["state"] for cart in tm.admin.carts()] == ["deleted"]
    assert tm.admin.orders() == []


def test_sold_out_fails_with_the_partners_code(tm: TMSandboxProcess, partners: Partners) -> None:
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request(quantity=9, max_unit_price="60"))  # the ticket limit is 8
    purchase = driver.until(purchase_id, finished)
    assert purchase.state == State.FAILED
    assert purchase.failure_code is not None and tm.admin.orders() == []


def test_a_refused_payment_pauses_the_purchase_and_deletes_its_cart(tm: TMSandboxProcess,
                                                                    configured: dict[str, str]) -> None:
    settings = get_settings()
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        purchase_id = driver.take_in(tm_request(payment_nonce="fake-processor-declined-visa-nonce"))
        purchase = driver.until(purchase_id, lambda p: p.state == State.PAUSED)
        assert "account cannot" in (history(purchase_id)[-1].reason)
        assert [cart["state"] for cart in tm.admin.carts()] == ["deleted"]
        assert tm.admin.orders() == []
        assert purchase.next_action_at is not None
    finally:
        built.close()


def test_forced_polling_is_continued_from_postgres_never_sent_again(tm: TMSandboxProcess,
                                                                    partners: Partners) -> None:
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=1)
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request())
    purchase = driver.until(purchase_id, finished, timeout=60)
    assert purchase.state == State.TICKETS_ISSUED, purchase.last_error
    counts = tm.admin.counts()
    assert counts["polling_answers"] >= 3  # reserve, commit, order management (payment never polls here)
    assert counts["polls_before_wait"] == 0
    assert (counts["requests"]["reserve"], counts["requests"]["commit"]) == (1, 1), (
        counts, tm.admin.carts(), [(h.to_state, h.reason) for h in history(purchase_id)])
    assert len(orders_of(tm, purchase_id)) == 1
    # Parked in Postgres between polls: the URL without the apikey was stored, never the key.
    with session_scope() as session:
        stored = " ".join(t.reason for t in session.scalars(select(PurchaseTransition)))
    assert "tm-sandbox-apikey" not in stored


def test_commit_then_drop_is_resolved_without_a_second_order(tm: TMSandboxProcess, partners: Partners) -> None:
    tm.admin.set_faults({"commit": {"drop_next": 1}})
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request())
    purchase = driver.until(purchase_id, finished, timeout=60)
    # The order exists (TM lists it among unredeemed orders) but its token never reached us.
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_TOKEN_UNKNOWN")
    assert len(orders_of(tm, purchase_id)) == 1
    # The unredeemed list (as in TM's 2017 example) gives no order number: the evidence is kept.
    assert purchase.order_evidence == "exists"
    assert "1 order(s) from this purchase" in (purchase.failure_message or "")
    assert tm.admin.counts()["requests"]["commit"] == 1


def test_a_5xx_on_commit_is_never_answered_with_another_commit(tm: TMSandboxProcess, partners: Partners) -> None:
    tm.admin.set_faults({"commit": {"fail_next": 1, "error_statuses": [502]}})
    settings = get_settings().model_copy(update={"order_resolve_attempts": 2})
    driver = Driver(partners, settings)
    purchase_id = driver.take_in(tm_request())
    purchase = driver.until(purchase_id, finished, timeout=60)
    # The 502 was injected before anything was done: no order exists, but nothing proves it.
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_OUTCOME_UNKNOWN")
    assert tm.admin.counts()["requests"]["commit"] == 1
    assert orders_of(tm, purchase_id) == []


def test_a_quota_reset_minutes_away_parks_the_purchase_without_failing_it(tm: TMSandboxProcess,
                                                                         partners: Partners) -> None:
    reset = tm.admin.force_quota(seconds=600)
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request())
    driver.run_queue()
    purchase = reload(purchase_id)
    assert purchase.state == State.RECEIVED and purchase.claimed_until is None
    assert purchase.next_action_at is not None
    wait = (purchase.next_action_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert 500 < wait <= 600, (wait, reset)
    assert "429" in (purchase.last_error or "") or "quota" in (purchase.last_error or "").lower()
    tm.admin.lift_quota()


def test_niterun_parks_the_purchase_until_two_in_the_events_time_zone(tm: TMSandboxProcess,
                                                                      partners: Partners) -> None:
    tm.admin.niterun("on")
    # An event whose local time is inside 00:00-02:00 now (20001 outside it means "unavailable": minutes,
    # tests/integration/test_tm_unkind.py), whatever the hour this test runs at.
    zone = next(name for name in (f"Etc/GMT{offset:+d}" for offset in range(-14, 13))
                if dt.datetime.now(ZoneInfo(name)).hour == 0)
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request(event_start="2027-03-01T03:00:00Z", event_timezone=zone))
    driver.run_queue()
    purchase = reload(purchase_id)
    assert purchase.state == State.RECEIVED and purchase.next_action_at is not None
    wake = purchase.next_action_at.astimezone(ZoneInfo(zone))
    assert (wake.hour, wake.minute) == (2, 0)
    assert dt.timedelta(0) < purchase.next_action_at - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=2)


def test_delayed_tickets_are_announced_once_then_fetched_at_the_delay_date(tm: TMSandboxProcess,
                                                                           configured: dict[str, str]) -> None:
    now = [dt.datetime.now(dt.UTC)]
    settings = get_settings()
    built = build_partners(settings)
    flow = built.flows["ticketmaster"]
    assert isinstance(flow, tm_flow.TicketmasterFlow)
    flow._clock = lambda: now[0]
    try:
        driver = Driver(built)
        purchase_id = driver.take_in(tm_request(event_id=DELAY_EVENT, price_level_id="7", max_unit_price="102"))
        purchase = driver.until(purchase_id, lambda p: p.state == State.AWAITING_TICKETS and p.claimed_until is None
                                and p.next_action_at is not None
                                and p.next_action_at > dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        delayed = [e for e in events(purchase_id) if e["type"] == "purchase.tickets_delayed"]
        assert len(delayed) == 1
        delay = delayed[0]["tickets_delay"]
        retrievable = dt.datetime.fromisoformat(delay["retrievable_from"])
        assert abs((purchase.next_action_at - retrievable).total_seconds()) < 5  # type: ignore[operator]
        # Asked again before the date (a stray nudge): no second announcement.
        with session_scope() as session:
            session.get_one(Purchase, purchase_id).next_action_at = dt.datetime.now(dt.UTC)
        driver.send(Next(StepName.TICKETS), purchase_id)
        driver.run_queue()
        assert len([e for e in events(purchase_id) if e["type"] == "purchase.tickets_delayed"]) == 1
        # The delay date comes (for the sandbox and for us): the tokens are fetched.
        tm.admin.set_clock(retrievable + dt.timedelta(minutes=1))
        now[0] = retrievable + dt.timedelta(minutes=1)
        with session_scope() as session:
            session.get_one(Purchase, purchase_id).next_action_at = dt.datetime.now(dt.UTC)
        purchase = driver.until(purchase_id, finished)
        assert purchase.state == State.TICKETS_ISSUED
        assert all(t.token_encrypted for t in tickets(purchase_id))
        assert [e["type"] for e in valid_events(purchase_id)][-3:] == [
            "purchase.awaiting_tickets", "purchase.tickets_delayed", "purchase.tickets_issued"]
    finally:
        built.close()


def test_barcode_only_tickets_are_issued_without_tokens_or_refreshes(tm: TMSandboxProcess, partners: Partners) -> None:
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request(event_id=BARCODE_EVENT, ticket_type_id="000042800007",
                                            price_level_id="8", max_unit_price="200"))
    purchase = driver.until(purchase_id, finished)
    assert purchase.state == State.TICKETS_ISSUED, purchase.last_error
    [ticket] = tickets(purchase_id)
    assert ticket.barcode and ticket.render_type == "barcode"
    assert ticket.token_encrypted is None and ticket.refresh_due_at is None  # nothing to refresh
    [issued] = [e for e in valid_events(purchase_id) if e["type"] == "purchase.tickets_issued"]
    assert issued["tickets"][0]["token"] is None and issued["tickets"][0]["barcode"] == ticket.barcode


def test_with_the_absence_policy_an_unknown_commit_reserves_again_once_its_cart_is_gone(
        tm: TMSandboxProcess, configured: dict[str, str]) -> None:
    # The operator's explicit policy (off by default): the cart's hold has ended (TM cannot commit it any
    # more) longer ago than the grace, and the unredeemed list still shows no order from it.
    tm.admin.configure(hold_time_seconds=4, payment_extension_seconds=0)
    tm.admin.set_faults({"commit": {"fail_next": 1, "error_statuses": [502]}})
    settings = get_settings().model_copy(update={"order_absence_grace_seconds": 1.0, "tm_min_hold_seconds": 0.0,
                                                 "quote_safety_margin_seconds": 0.5})
    built = build_partners(settings)
    try:
        driver = Driver(built, settings)
        raw = tm_request()
        purchase_id = driver.take_in(raw)
        # The first cart's payment used the request's nonce (a nonce pays once): the new cart waits for one.
        purchase = driver.until(purchase_id, lambda p: p.state == State.PAUSED, timeout=60)
        assert "PAYMENT_NONCE_USED" in (purchase.last_error or "")
        assert tm.admin.counts()["requests"]["commit"] == 1
        # The requesting service sends the same request again with a fresh nonce: taken, and it goes on.
        assert intake.accept({**raw, "payment_nonce": "fake-valid-nonce-second"}, settings=settings) is None
        purchase = driver.until(purchase_id, finished, timeout=60)
    finally:
        built.close()
    assert purchase.state == State.TICKETS_ISSUED, purchase.last_error
    assert len(orders_of(tm, purchase_id)) == 1 and tm.admin.counts()["requests"]["commit"] == 2
    assert any("ORDER_ABSENCE_GRACE_SECONDS policy" in h.reason for h in history(purchase_id))
    assert tm.admin.counts()["commits_on_expired_carts"] == 0


def test_a_commit_answered_5xx_and_processed_later_is_found_never_committed_again(
        tm: TMSandboxProcess, partners: Partners) -> None:
    # The real-world case the sandbox now models: the 5xx said nothing, the order appears 2 s later,
    # and the unredeemed list lags 4 s behind it.
    tm.admin.set_faults({"commit": {"late_next": 1, "late_ms": 2000, "error_statuses": [502]}})
    tm.admin.configure(unredeemed_lag_seconds=4)
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request())
    purchase = driver.until(purchase_id, finished, timeout=60)
    assert (purchase.state, purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_TOKEN_UNKNOWN")
    counts = tm.admin.counts()
    assert counts["commits_processed_late"] == 1 and counts["requests"]["commit"] == 1
    assert len(orders_of(tm, purchase_id)) == 1
    # Looked up while the list did not show it yet (absence proved nothing, nothing was re-sent), then found.
    assert counts["requests"]["unredeemed"] >= 2


def test_carts_held_too_briefly_are_deleted_and_reserved_again_up_to_the_limit(
        tm: TMSandboxProcess, partners: Partners) -> None:
    # Every cart is held 3 s: less than TM_MIN_HOLD_SECONDS (5) + the safety margin. Each is deleted and
    # another reserved, MAX_REQUOTES times at most; none is committed, none is left to lapse.
    tm.admin.configure(hold_time_seconds=3, payment_extension_seconds=0)
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request())
    purchase = driver.until(purchase_id, finished, timeout=60)
    assert (purchase.state, purchase.failure_code) == (State.FAILED, "REQUOTE_LIMIT")
    carts = tm.admin.carts()
    assert len(carts) == get_settings().max_requotes + 1
    assert {cart["state"] for cart in carts} == {"deleted"}
    assert tm.admin.orders() == [] and tm.admin.counts()["leaked_carts"] == 0


def test_a_quota_429_on_the_poll_of_a_commit_is_waited_out_never_taken_for_a_refused_commit(
        tm: TMSandboxProcess, partners: Partners) -> None:
    # The commit answers 202; while its answer waits behind the polling URL, the quota runs out and the
    # poll itself is refused 429. That refusal says nothing of the commit: reserving again (and committing
    # another cart) could buy twice. The purchase waits for the quota and polls the same URL again.
    tm.admin.configure(polling_rate=1.0, polling_wait_seconds=1)
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request())
    driver.until(purchase_id, lambda p: p.state == State.ORDER_UNKNOWN)
    # Longer than the step's deadline (10 s): the client does not wait it out within the call.
    tm.admin.force_quota(seconds=14)
    purchase = driver.until(purchase_id, finished, timeout=60)
    assert purchase.state == State.TICKETS_ISSUED, purchase.last_error
    counts = tm.admin.counts()
    assert counts["rate_limited"] >= 1, counts
    assert counts["requests"]["commit"] == 1 and counts["requests"]["reserve"] == 1
    assert len(orders_of(tm, purchase_id)) == 1


def test_a_refusal_after_the_order_exists_holds_the_purchase_for_a_person(
        tm: TMSandboxProcess, partners: Partners) -> None:
    # Order management refuses the order token (here: one TM never issued): the order exists all the same,
    # so the purchase is neither failed nor paused but held, with TM's code.
    driver = Driver(partners)
    purchase_id = driver.take_in(tm_request())  # quoted and ordered in line; the tickets step is a message
    driver.queue.clear()  # not delivered yet: the scheduler re-drives it below
    assert reload(purchase_id).state == State.AWAITING_TICKETS
    key = get_settings().ticket_key
    assert key is not None
    with session_scope() as session:
        purchase = session.get_one(Purchase, purchase_id)
        purchase.partner_data = {**(purchase.partner_data or {}),
                                 "order_token": ticket_crypto.encrypt(key, "not-a-token-tm-issued")}
    purchase = driver.until(purchase_id, finished)
    assert purchase.state == State.NEEDS_ATTENTION and purchase.failure_code, purchase.last_error
    assert purchase.order_id and len(orders_of(tm, purchase_id)) == 1

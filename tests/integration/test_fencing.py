"""Fencing and the proof of absence (issue 7, invariants 1 and 8) with the real steps, real
Postgres and the TBB sandbox over HTTP.

A worker whose partner call outlives its claim (a slow partner, a stalled token fetch, a
process frozen by the OS) comes back with an answer for a purchase that moved on: the
answer must never move it, must be recorded, and an order id in it must never be lost.
The "freeze" is a wrapper around the real client: after the real call, before the answer
reaches the step, the world moves on (the lease lapses, another worker takes over).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import release_and_retry
from fulfilment.partners.base import DeadlineReached, OutcomeUnknown, Partner, PartnerError, QuoteExpired, QuoteRequest
from fulfilment.partners.registry import build_tbb, get_partner
from fulfilment.partners.tbb.flow import TbbFlow
from fulfilment.settings import Settings, get_settings
from fulfilment.state_machine import StaleTransition, State
from fulfilment.steps import order, quote
from fulfilment.steps.resume import CannotResume, resume
from models import OrphanOrder, OutboxEvent, PartnerQuote, Purchase, PurchaseTransition
from tests.support.factories import reload, stored_purchase
from tests.support.partner_wrap import OneCall
from tests.support.sandbox import Sandbox


@pytest.fixture
def settings() -> Settings:
    return get_settings()


@pytest.fixture
def tbb(configured: dict[str, str]) -> Partner:
    return get_partner()


@pytest.fixture
def sandbox_(clean_sandbox: Sandbox) -> Iterator[Sandbox]:
    yield clean_sandbox


def lease_lapses(purchase_id: uuid.UUID) -> None:
    """The claim's lease ends (its owner is frozen), as the scheduler would then see it."""
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET claimed_until = now() - interval '1 millisecond', "
                             "next_action_at = least(next_action_at, now()) WHERE id = :id"), {"id": purchase_id})


def history(purchase_id: uuid.UUID, kind: str | None = None) -> list[PurchaseTransition]:
    with session_scope() as session:
        rows = session.scalars(select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
                               .order_by(PurchaseTransition.id)).all()
    return [row for row in rows if kind is None or row.kind == kind]


def sandbox_orders(sandbox: Sandbox, purchase_id: uuid.UUID) -> list[dict[str, Any]]:
    with session_scope() as session:
        quote_ids = list(session.scalars(select(PartnerQuote.quote_id).where(PartnerQuote.purchase_id == purchase_id)))
    return [o for q in quote_ids for o in sandbox.orders(quote_id=q)]


class Frozen(OneCall):
    """The real partner, but the named call's answer (or error) is held back while `meanwhile` runs."""

    def __init__(self, real: Partner, operation: str, meanwhile: Callable[[], None]) -> None:
        super().__init__(real, operation, self._frozen)
        self._meanwhile: Callable[[], None] | None = meanwhile

    def _frozen(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        finally:
            if self._meanwhile is not None:
                meanwhile, self._meanwhile = self._meanwhile, None
                meanwhile()


def quoted(settings: Settings, partner: Partner, **overrides: Any) -> uuid.UUID:
    purchase_id = stored_purchase(**overrides)
    assert quote.quote(purchase_id, partner=TbbFlow(partner), settings=settings) is not None
    assert reload(purchase_id).state == State.QUOTED
    return purchase_id


def test_a_late_confirmation_of_the_recorded_order_is_noted_not_applied_twice(
    settings: Settings, tbb: Partner, sandbox_: Sandbox
) -> None:
    purchase_id = quoted(settings, tbb)

    def another_worker_resolves() -> None:
        lease_lapses(purchase_id)
        order.resolve_order(purchase_id, partner=TbbFlow(tbb), settings=settings)  # finds the order by lookup

    order.place_order(purchase_id, partner=TbbFlow(Frozen(tbb, "create_order", another_worker_resolves)), settings=settings,
                      message_id="msg-late-worker")
    purchase = reload(purchase_id)
    assert purchase.state == State.AWAITING_TRANSFER
    assert len(sandbox_orders(sandbox_, purchase_id)) == 1
    [late] = history(purchase_id, "late_answer")
    assert f"late answer from order, not applied: order {purchase.order_id} created, already recorded" in late.reason
    assert late.message_id == "msg-late-worker"  # which delivery it came from


def test_a_late_quote_expired_never_requotes_a_purchase_ordering_with_another_quote(
    settings: Settings, tbb: Partner, sandbox_: Sandbox
) -> None:
    """The ABA of issue 7: a late QUOTE_EXPIRED for quote Q1 arrives while another worker is
    ordering with Q2; `UPDATE … WHERE state = 'ordering'` used to match that newer attempt."""
    purchase_id = quoted(settings, tbb)
    grace = settings.model_copy(update={"order_absence_grace_seconds": 0.001})
    first_quote = reload(purchase_id).quote_id
    in_flight, go_on = threading.Event(), threading.Event()

    class Holds:  # the second worker's partner: its order call is in flight until told to go on
        name = tbb.name

        def __getattr__(self, name: str) -> Any:
            return getattr(tbb, name)

        def create_order(self, *args: Any, **kwargs: Any) -> Any:
            in_flight.set()
            assert go_on.wait(30)
            return tbb.create_order(*args, **kwargs)

    second = threading.Thread(target=order.place_order, args=(purchase_id,),
                              kwargs={"partner": TbbFlow(Holds()), "settings": settings})

    def moved_on_to_a_second_quote() -> None:
        lease_lapses(purchase_id)
        with session_scope() as session:  # the first quote expired on our clock meanwhile
            session.execute(text("UPDATE purchases SET quote_expires_at = now() - interval '1 second' WHERE id = :id"),
                            {"id": purchase_id})
        # Another worker: no order found, and the operator's grace policy allows a re-quote.
        assert order.resolve_order(purchase_id, partner=TbbFlow(tbb), settings=grace) is not None
        assert quote.quote(purchase_id, partner=TbbFlow(tbb), settings=settings) is not None
        second.start()
        assert in_flight.wait(30)  # ORDERING with Q2, its request in flight

    try:
        assert order.place_order(purchase_id, partner=TbbFlow(Frozen(_Refusing(tbb), "create_order",
                                                             moved_on_to_a_second_quote)), settings=settings) is None
        during = reload(purchase_id)
        assert during.state == State.ORDERING and during.quote_id != first_quote, "the late answer moved it"
    finally:
        go_on.set()
        second.join(30)
    purchase = reload(purchase_id)
    assert purchase.state == State.AWAITING_TRANSFER and purchase.quotes_taken == 2
    [only] = sandbox_orders(sandbox_, purchase_id)
    assert only["order_id"] == purchase.order_id and only["quote_id"] == purchase.quote_id
    [late] = history(purchase_id, "late_answer")
    assert "QUOTE_EXPIRED" in late.reason and late.to_state == "ordering"
    with session_scope() as session:
        event = session.scalars(select(OutboxEvent).where(OutboxEvent.transition_id == late.id)).one()
    assert event.routing_key == "purchase.late_answer"


class _Refusing:
    """The real partner, except that create_order answers QUOTE_EXPIRED without ordering."""

    def __init__(self, real: Partner) -> None:
        self.name = real.name
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def create_order(self, quote_id: str, **kwargs: Any) -> Any:
        raise QuoteExpired("QUOTE_EXPIRED", f"quote {quote_id} expired", status=422)


def test_a_late_order_for_a_purchase_that_moved_on_is_kept_as_an_orphan_and_raised(
    settings: Settings, tbb: Partner, sandbox_: Sandbox
) -> None:
    """The grace policy trusts the lookup; a lookup lagging longer than the grace makes a second
    order possible — which is why it is off by default.  Even then no order id is lost."""
    purchase_id = quoted(settings, tbb)
    grace = settings.model_copy(update={"order_absence_grace_seconds": 0.001})
    sandbox_.set_faults({"list_orders": {"lookup_lag_seconds": 600}})

    def moved_on_and_ordered_again() -> None:
        lease_lapses(purchase_id)
        with session_scope() as session:
            session.execute(text("UPDATE purchases SET quote_expires_at = now() - interval '1 second' WHERE id = :id"),
                            {"id": purchase_id})
        assert order.resolve_order(purchase_id, partner=TbbFlow(tbb), settings=grace) is not None  # lookup lags: "absent"
        quote.quote(purchase_id, partner=TbbFlow(tbb), settings=settings)
        order.place_order(purchase_id, partner=TbbFlow(tbb), settings=settings)
        assert reload(purchase_id).state == State.AWAITING_TRANSFER

    order.place_order(purchase_id, partner=TbbFlow(Frozen(tbb, "create_order", moved_on_and_ordered_again)), settings=settings)
    purchase = reload(purchase_id)
    orders = sandbox_orders(sandbox_, purchase_id)
    assert len(orders) == 2  # the policy's risk, made visible:
    with session_scope() as session:
        [orphan] = session.scalars(select(OrphanOrder).where(OrphanOrder.purchase_id == purchase_id)).all()
    assert {orphan.order_id, purchase.order_id} == {o["order_id"] for o in orders}
    assert orphan.details["order_id"] == orphan.order_id and orphan.resolved_at is None
    [raised] = history(purchase_id, "orphan_order")
    with session_scope() as session:
        event = session.scalars(select(OutboxEvent).where(OutboxEvent.transition_id == raised.id)).one()
    assert event.routing_key == "purchase.orphan_order"
    assert event.payload["orphan_order"]["order_id"] == orphan.order_id


def test_a_late_confirmation_for_a_purchase_still_resolving_that_quote_is_applied(
    settings: Settings, tbb: Partner, sandbox_: Sandbox
) -> None:
    purchase_id = quoted(settings, tbb)
    sandbox_.set_faults({"list_orders": {"lookup_lag_seconds": 600}})

    def another_worker_finds_it_consumed() -> None:
        lease_lapses(purchase_id)
        order.resolve_order(purchase_id, partner=TbbFlow(tbb), settings=settings)  # lookup lags; retry: consumed

    order.place_order(purchase_id, partner=TbbFlow(Frozen(tbb, "create_order", another_worker_finds_it_consumed)),
                      settings=settings)
    purchase = reload(purchase_id)
    assert purchase.state == State.AWAITING_TRANSFER, (purchase.state, purchase.last_error)
    [only] = sandbox_orders(sandbox_, purchase_id)
    assert purchase.order_id == only["order_id"]
    assert "a late answer" in history(purchase_id, "transition")[-1].reason


def test_a_stale_release_leaves_the_new_owners_lease_alone(settings: Settings, tbb: Partner) -> None:
    purchase_id = stored_purchase()
    with session_scope() as session:
        first = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=60)
    assert first is not None
    lease_lapses(purchase_id)
    with session_scope() as session:
        second = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=60)
    assert second is not None and second.claim_token != first.claim_token
    outcome = release_and_retry(first, PartnerError("X", "late failure"), settings)
    assert isinstance(outcome, StaleTransition)
    assert (outcome.purchase_id, outcome.expected) == (purchase_id, State.RECEIVED)
    [late] = history(purchase_id, "late_answer")
    assert late.reason == ("late answer from quote_purchase, not applied: transient failure, not retried by this "
                           f"worker: {PartnerError('X', 'late failure')}")
    after = reload(purchase_id)
    assert after.claim_token == second.claim_token and after.claimed_until is not None
    with session_scope() as session:
        assert session.execute(select(Purchase.claimed_until > text("now()")).where(Purchase.id == purchase_id)).scalar()
        assert not state_machine.reschedule(session, first, next_action_in=1)
    with pytest.raises(StaleTransition), session_scope() as session:
        state_machine.transition(session, first, State.FAILED, reason="late")


def test_a_transient_failure_gives_the_lease_back_and_asks_for_a_retry_when_the_partner_said(
    settings: Settings,
) -> None:
    """release_and_retry on a live claim: the lease is given back (the error kept, the scheduler's
    re-drive set after the broker's longest backoff) and the retry carries the error and the partner's
    Retry-After."""
    from fulfilment.flowkit.fencing import RetryLater, retry_in

    purchase_id = stored_purchase()
    with session_scope() as session:
        claimed = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=60)
    assert claimed is not None
    error = PartnerError("RATE_LIMITED", "slow down")
    error.retry_after = 7.0  # type: ignore[attr-defined]
    outcome = release_and_retry(claimed, error, settings)
    assert isinstance(outcome, RetryLater)
    assert (str(outcome), outcome.retry_after) == (str(error), 7.0)
    after = reload(purchase_id)
    assert (after.claim_token, after.claimed_until, after.last_error) == (None, None, str(error))
    waits = (after.next_action_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert retry_in(settings) - 30 < waits <= retry_in(settings)
    with session_scope() as session:
        again = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=60)
    assert again is not None
    plain = release_and_retry(again, PartnerError("X", "boom"), settings)
    assert isinstance(plain, RetryLater) and plain.retry_after is None


def test_a_wait_in_postgres_keeps_its_reason_cut_at_2000_characters(settings: Settings) -> None:
    from fulfilment.flowkit.fencing import park

    purchase_id = stored_purchase()
    with session_scope() as session:
        claimed = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=60)
    assert claimed is not None
    why = "the partner said: " + "wait. " * 500
    assert len(why) > 2000 and park(claimed, next_action_in=30, error=why, message_id="m")
    after = reload(purchase_id)
    assert after.last_error == why[:2000] and after.claim_token is None


def test_a_deadline_exactly_the_lead_away_is_already_too_close(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """MIN_DELIVERY_LEAD_SECONDS is the least lead an order may have: at exactly that lead, none is placed."""
    import types

    from fulfilment.flowkit import fencing

    frozen = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Frozen:  # type: ignore[override]
            return frozen  # type: ignore[return-value]

    monkeypatch.setattr(fencing, "dt", types.SimpleNamespace(datetime=Frozen, UTC=dt.UTC, timedelta=dt.timedelta))
    lead = dt.timedelta(seconds=settings.min_delivery_lead_seconds)
    for deadline, too_close in ((frozen + lead, True), (frozen + lead + dt.timedelta(microseconds=1), False)):
        assert fencing.too_close_to_deadline(Purchase(delivery_deadline=deadline), settings) is too_close


def test_history_names_the_attempt_even_when_claim_and_transition_share_a_session(
    settings: Settings, tbb: Partner
) -> None:
    purchase_id = stored_purchase()
    quote.quote(purchase_id, partner=TbbFlow(tbb), settings=settings)
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET quote_expires_at = now() + interval '1 second' WHERE id = :id"),
                        {"id": purchase_id})
    # Inside the safety margin: place_order claims and re-quotes in one transaction.
    assert order.place_order(purchase_id, partner=TbbFlow(tbb), settings=settings) is not None
    assert history(purchase_id)[-1].to_state == "received"
    assert history(purchase_id)[-1].attempt == 1


def test_no_quote_once_the_delivery_deadline_is_too_close(settings: Settings, tbb: Partner, sandbox_: Sandbox) -> None:
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=settings.min_delivery_lead_seconds / 2))
    purchase_id = stored_purchase(delivery_deadline=soon.strftime("%Y-%m-%dT%H:%M:%SZ"))
    before = sandbox_.stats()["requests"].get("create_quote", 0)
    assert quote.quote(purchase_id, partner=TbbFlow(tbb), settings=settings) is None
    purchase = reload(purchase_id)
    assert purchase.state == State.FAILED and purchase.failure_code == "DELIVERY_DEADLINE_TOO_CLOSE"
    assert "MIN_DELIVERY_LEAD_SECONDS" in (purchase.failure_message or "")
    assert sandbox_.stats()["requests"].get("create_quote", 0) == before


def test_no_order_once_the_delivery_deadline_came_too_close_while_it_waited(
    settings: Settings, tbb: Partner, sandbox_: Sandbox
) -> None:
    purchase_id = quoted(settings, tbb)
    with session_scope() as session:  # it sat paused or stalled until the deadline came near
        session.execute(text("UPDATE purchases SET delivery_deadline = now() + interval '10 seconds' WHERE id = :id"),
                        {"id": purchase_id})
    assert order.place_order(purchase_id, partner=TbbFlow(tbb), settings=settings) is None
    purchase = reload(purchase_id)
    assert purchase.state == State.FAILED and purchase.failure_code == "DELIVERY_DEADLINE_TOO_CLOSE"
    assert sandbox_orders(sandbox_, purchase_id) == []


def test_an_old_dead_letter_never_releases_a_purchase_held_for_a_person(settings: Settings) -> None:
    purchase_id = stored_purchase()
    with session_scope() as session:
        state_machine.transition(session, session.get_one(Purchase, purchase_id), State.NEEDS_ATTENTION,
                                 reason="orphan order", changes={"failure_code": "ORPHAN_ORDER"})
    with pytest.raises(CannotResume, match="needs attention"):
        resume(purchase_id, settings=settings, reason="dlq replay", checked_by_person=False)
    assert reload(purchase_id).state == State.NEEDS_ATTENTION
    resumed = resume(purchase_id, settings=settings, reason="fulfil retry after checking")
    assert resumed.to_state == State.ORDER_UNKNOWN


# ---- one deadline per call, against the sandbox over HTTP ---------------------------------


@pytest.fixture
def client(configured: dict[str, str]) -> Iterator[Any]:
    fresh = build_tbb(get_settings())  # its own token cache
    yield fresh
    fresh.close()


def test_a_stalled_token_endpoint_cannot_hold_a_call_past_its_deadline(client: Any, sandbox_: Sandbox) -> None:
    sandbox_.set_faults({"auth_token": {"stall_next": 1, "stall_ms": 4000}})
    started = time.monotonic()
    with pytest.raises(PartnerError):
        client.create_quote(QuoteRequest("5496123", "101", None, 1), request_id="r", deadline=started + 1.0)
    assert time.monotonic() - started < 2.0
    time.sleep(3.2)  # let the stalled request finish before the next test uses the sandbox


def test_an_order_answer_slower_than_the_deadline_is_unknown_not_waited_for(client: Any, sandbox_: Sandbox) -> None:
    q = client.create_quote(QuoteRequest("5496123", "101", None, 1), request_id="r")
    sandbox_.set_faults({"create_order": {"respond_after_commit_ms": 2500}})
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown):
        client.create_order(q.quote_id, delivery_type="pdf", request_id="r", deadline=started + 1.0,
                            delivery_deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    assert time.monotonic() - started < 2.0
    time.sleep(2)
    assert len(sandbox_.orders(quote_id=q.quote_id)) == 1  # it did commit: exactly why it is "unknown"


def test_no_call_starts_after_its_deadline(client: Any) -> None:
    with pytest.raises(DeadlineReached):
        client.get_order("TBB-X", request_id="r", deadline=time.monotonic() - 0.1)


def test_an_unknown_order_outcome_for_a_purchase_taken_over_meanwhile_sends_no_resolution(
    settings: Settings, tbb: Partner, sandbox_: Sandbox
) -> None:
    """The order answers 502 (unclear) after the claim passed to another worker: the step moves
    nothing, notes the late answer, and hands no resolution on (the new owner resolves it)."""
    purchase_id = quoted(settings, tbb)
    sandbox_.set_faults({"create_order": {"fail_next": 3, "error_statuses": [502]}})

    def another_worker_takes_over() -> None:
        lease_lapses(purchase_id)
        with session_scope() as session:
            assert state_machine.claim(session, purchase_id, [State.ORDERING], lease_seconds=60) is not None

    following = order.place_order(purchase_id, partner=TbbFlow(Frozen(tbb, "create_order", another_worker_takes_over)),
                                  settings=settings, message_id="order-msg")
    assert following is None
    purchase = reload(purchase_id)
    assert purchase.state == State.ORDERING  # the new owner's to resolve
    assert [h.message_id for h in history(purchase_id, "late_answer")] == ["order-msg"]
    assert sandbox_orders(sandbox_, purchase_id) == []


def test_a_stalled_order_lookup_cannot_hold_the_resolution_past_its_step_deadline(
    settings: Settings, tbb: Partner, sandbox_: Sandbox
) -> None:
    """The lookup by quote stalls far longer than the step may run: it is cut at the step's deadline
    (STEP_DEADLINE_SECONDS), the outcome stays unknown, and nothing is ordered meanwhile."""
    purchase_id = quoted(settings, tbb)
    sandbox_.set_faults({"create_order": {"fail_next": 3, "error_statuses": [503]}})
    order.place_order(purchase_id, partner=TbbFlow(tbb), settings=settings)
    assert reload(purchase_id).state == State.ORDER_UNKNOWN
    short = settings.model_copy(update={"step_deadline_seconds": 1.0})
    sandbox_.set_faults({"list_orders": {"stall_next": 1, "stall_ms": 9000}, "create_order": {"fail_next": 3}})
    lease_lapses(purchase_id)
    started = time.monotonic()
    order.resolve_order(purchase_id, partner=TbbFlow(tbb), settings=short)
    took = time.monotonic() - started
    assert took < 7.0  # cut near the 1 s deadline, not the 9 s stall (room for a loaded machine)
    assert reload(purchase_id).state == State.ORDER_UNKNOWN
    assert sandbox_orders(sandbox_, purchase_id) == []
    time.sleep(max(0.0, 9.5 - took))  # let the stalled request finish before the next test uses the sandbox


def without_prices(real: Partner) -> OneCall:
    """The real partner, but the orders its lookup finds come without pricing (TBB's order reads may
    leave it out: partners/tbb/payloads.py)."""
    import dataclasses

    from fulfilment.partners.base import OrderFound

    def stripped(call: Any, *args: Any, **kwargs: Any) -> Any:
        found = call(*args, **kwargs)
        if isinstance(found, OrderFound):
            return OrderFound(dataclasses.replace(found.order, unit_price=None, subtotal=None))
        return found

    return OneCall(real, "find_order_for_quote", stripped)


def test_an_order_found_without_prices_keeps_the_quoted_ones(settings: Settings, tbb: Partner, sandbox_: Sandbox) -> None:
    purchase_id = quoted(settings, tbb)
    quoted_prices = (reload(purchase_id).unit_price, reload(purchase_id).subtotal)
    sandbox_.set_faults({"create_order": {"drop_next": 1}})  # committed, the answer lost
    order.place_order(purchase_id, partner=TbbFlow(tbb), settings=settings)
    assert reload(purchase_id).state == State.ORDER_UNKNOWN
    lease_lapses(purchase_id)
    order.resolve_order(purchase_id, partner=TbbFlow(without_prices(tbb)), settings=settings)
    purchase = reload(purchase_id)
    [only] = sandbox_orders(sandbox_, purchase_id)
    assert (purchase.state, purchase.order_id) == (State.AWAITING_TRANSFER, only["order_id"])
    assert (purchase.unit_price, purchase.subtotal) == quoted_prices


# ---- keep_answer: a partner's answer written on a fresh connection when the database fails under it ----


class _Outage:
    """Stands in for outages.DATABASE: the lines it would log."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def failed(self, line: str) -> None:
        self.lines.append(line)


def _failing(times: int, error: BaseException, calls: list[int]) -> Callable[[], str]:
    def write() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "written"
    return write


def test_an_answer_write_that_fails_for_another_reason_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from fulfilment.flowkit import fencing

    monkeypatch.setattr(fencing, "DATABASE", _Outage())
    calls: list[int] = []
    with pytest.raises(StaleTransition):
        fencing.keep_answer(_failing(5, StaleTransition(uuid.uuid4(), State.ORDERING), calls), what="order X")
    assert len(calls) == 1 and fencing.DATABASE.lines == []


def test_a_lost_connection_is_tried_again_with_a_growing_pause_and_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import psycopg
    import tenacity.nap

    from fulfilment.flowkit import fencing

    outage, pauses = _Outage(), []
    monkeypatch.setattr(fencing, "DATABASE", outage)
    monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=pauses.append))  # tenacity's pauses only
    calls: list[int] = []
    assert fencing.keep_answer(_failing(7, psycopg.OperationalError("server closed the connection"), calls),
                               what="order X") == "written"
    assert len(calls) == 8 and pauses == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert outage.lines[0] == ("order X not written yet (database connection failed: OperationalError); "
                               "trying again on a fresh connection") and len(outage.lines) == 7


def test_a_connection_lost_for_longer_than_the_retry_window_raises_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from fulfilment.flowkit import fencing

    monkeypatch.setattr(fencing, "DATABASE", _Outage())
    monkeypatch.setattr(fencing, "ANSWER_WRITE_RETRY_SECONDS", 0.5)
    calls: list[int] = []
    with pytest.raises(psycopg.OperationalError):  # itself, not tenacity's RetryError: the message is retried
        fencing.keep_answer(_failing(10_000, psycopg.OperationalError("no route to host"), calls), what="order X")
    assert len(calls) > 1

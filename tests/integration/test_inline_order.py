"""The order step that follows a recorded quote runs at once in the same thread
(ORDER_AFTER_QUOTE_INLINE, fulfilment/steps/runner.py), with the real steps, real Postgres and
the TBB sandbox over HTTP; if it cannot finish there, its message takes over."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.flowkit.fencing import Claim, Next, RetryLater, step_started
from fulfilment.partners.base import Partner
from fulfilment.partners.registry import get_partner
from fulfilment.partners.tbb.flow import TbbFlow
from fulfilment.settings import Settings, get_settings
from fulfilment.state_machine import State
from fulfilment.steps import intake, order, runner
from fulfilment.steps.runner import StepName
from models import PurchaseTransition
from tests.support.factories import reload, request, stored_purchase
from tests.support.partner_wrap import OneCall
from tests.support.sandbox import Sandbox

Sent = list[tuple[Next, uuid.UUID]]


@pytest.fixture
def tbb(configured: dict[str, str], clean_sandbox: Sandbox) -> Partner:
    return get_partner()


def settings(inline: bool, *, quote_inline: bool = True) -> Settings:
    return get_settings().model_copy(update={"order_after_quote_inline": inline,
                                             "quote_after_intake_inline": quote_inline})


def after_intake(purchase_id: uuid.UUID, partner: Partner, *, quote_inline: bool, order_inline: bool) -> Sent:
    """What the intake actor does once it stored a new purchase (workers/intake.py)."""
    sent: Sent = []
    runner.deliver(Next(StepName.QUOTE), purchase_id, after=runner.INTAKE, partner=TbbFlow(partner),
                   settings=settings(order_inline, quote_inline=quote_inline), message_id="intake-msg",
                   send=lambda following, pid: sent.append((following, pid)))
    return sent


def quote_step(purchase_id: uuid.UUID, partner: Partner, inline: bool) -> Sent:
    sent: Sent = []
    runner.run_step(StepName.QUOTE, purchase_id, partner=TbbFlow(partner), settings=settings(inline), message_id="quote-msg",
                    send=lambda following, pid: sent.append((following, pid)))
    return sent


def history(purchase_id: uuid.UUID) -> list[PurchaseTransition]:
    with session_scope() as session:
        return list(session.scalars(select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
                                    .order_by(PurchaseTransition.id)))


def path(purchase_id: uuid.UUID) -> list[tuple[str, str | None]]:
    with session_scope() as session:
        return [(t.to_state, t.message_id) for t in session.scalars(
            select(PurchaseTransition).where(PurchaseTransition.purchase_id == purchase_id)
            .order_by(PurchaseTransition.id))]


def test_the_order_is_placed_in_line_after_the_quote(tbb: Partner) -> None:
    purchase_id = stored_purchase()
    assert quote_step(purchase_id, tbb, inline=True) == []  # nothing left to send
    assert reload(purchase_id).state == "awaiting_transfer"
    assert path(purchase_id)[1:] == [("quoted", "quote-msg"), ("ordering", "quote-msg"),
                                     ("awaiting_transfer", "quote-msg")]


def test_without_the_setting_the_order_step_is_sent_as_a_message(tbb: Partner) -> None:
    purchase_id = stored_purchase()
    assert quote_step(purchase_id, tbb, inline=False) == [(Next("place_order"), purchase_id)]
    assert reload(purchase_id).state == "quoted"


def test_after_intake_the_quote_and_the_order_run_in_line(tbb: Partner) -> None:
    purchase_id = stored_purchase()
    assert after_intake(purchase_id, tbb, quote_inline=True, order_inline=True) == []
    assert reload(purchase_id).state == "awaiting_transfer"
    assert path(purchase_id)[1:] == [("quoted", "intake-msg"), ("ordering", "intake-msg"),
                                     ("awaiting_transfer", "intake-msg")]


def test_a_purchase_born_claimed_is_quoted_and_ordered_without_a_claim_statement(
    tbb: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the intake actor does with QUOTE_AFTER_INTAKE_INLINE: the purchase is stored under a
    claim (no other worker or the scheduler can take it meanwhile) and handed to the quote step."""
    started = step_started()
    created = intake.receive(request(), settings=settings(True), message_id="intake-msg",
                             hold_claim_for=settings(True).claim_lease_seconds)
    assert created is not None and created.state == "received" and created.claim_token is not None
    assert created.attempts == 1  # as if claimed
    with session_scope() as session:
        assert state_machine.claim(session, created.id, [State.RECEIVED], lease_seconds=60) is None

    claims: list[Claim | None] = []
    real = runner.STEPS[StepName.QUOTE]

    def quote_step(*args: Any, claim: Claim | None = None, **kwargs: Any) -> Next | None:
        claims.append(claim)
        return real(*args, claim=claim, **kwargs)

    monkeypatch.setitem(runner.STEPS, StepName.QUOTE, quote_step)
    sent: Sent = []
    runner.deliver(Next(StepName.QUOTE, claim=Claim(created, started)), created.id, after=runner.INTAKE,
                   partner=TbbFlow(tbb), settings=settings(True), message_id="intake-msg",
                   send=lambda following, pid: sent.append((following, pid)))
    assert sent == [] and claims == [Claim(created, started)]
    assert reload(created.id).state == "awaiting_transfer"
    assert path(created.id) == [("received", "intake-msg"), ("quoted", "intake-msg"), ("ordering", "intake-msg"),
                                ("awaiting_transfer", "intake-msg")]


def test_a_born_claim_taken_over_before_the_quote_is_recorded_moves_nothing(tbb: Partner) -> None:
    created = intake.receive(request(), settings=settings(True), hold_claim_for=60)
    assert created is not None
    with session_scope() as session:  # the lease lapsed and another worker claimed it
        session.execute(text("UPDATE purchases SET claim_token = gen_random_uuid() WHERE id = :id"), {"id": created.id})
    sent: Sent = []
    runner.deliver(Next(StepName.QUOTE, claim=Claim(created, step_started())), created.id, after=runner.INTAKE,
                   partner=TbbFlow(tbb), settings=settings(True), message_id="intake-msg",
                   send=lambda following, pid: sent.append((following, pid)))
    assert sent == [] and reload(created.id).state == "received"
    late = history(created.id)[-1]
    assert (late.kind, late.message_id) == ("late_answer", "intake-msg")
    assert late.reason.startswith("late answer from quote_purchase, not applied: quote ")
    assert late.reason.endswith(" USD, not used") and " at " in late.reason


def test_after_intake_the_quote_alone_runs_in_line_if_the_order_is_a_message(tbb: Partner) -> None:
    purchase_id = stored_purchase()
    assert after_intake(purchase_id, tbb, quote_inline=True, order_inline=False) == [(Next("place_order"), purchase_id)]
    stored = reload(purchase_id)
    assert stored.state == "quoted" and stored.claimed_until is None  # no claim kept for a message


def test_without_the_setting_intake_sends_the_quote_step(tbb: Partner) -> None:
    purchase_id = stored_purchase()
    assert after_intake(purchase_id, tbb, quote_inline=False, order_inline=True) == [
        (Next("quote_purchase"), purchase_id)]
    assert reload(purchase_id).state == "received"


def test_a_transient_quote_failure_after_intake_sends_the_quote_step_after_the_retry_delay(
    tbb: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def partner_busy(*args: Any, **kwargs: Any) -> None:
        raise RetryLater(RuntimeError("503"), retry_after=2.0)

    purchase_id = stored_purchase()
    monkeypatch.setitem(runner.STEPS, StepName.QUOTE, partner_busy)
    bounded = min(2.0, get_settings().actor_max_backoff_ms / 1000)  # never more than our maximum backoff
    assert after_intake(purchase_id, tbb, quote_inline=True, order_inline=True) == [
        (Next("quote_purchase", bounded), purchase_id)]


def test_a_re_quote_after_an_order_step_is_always_a_message(tbb: Partner) -> None:
    """Only intake -> quote and quote -> order run in line: the order step's re-quote (after
    QUOTE_EXPIRED) is sent, so a message never chains quote after order after quote."""
    assert not runner.runs_inline(StepName.ORDER, Next(StepName.QUOTE), settings(True))
    assert not runner.runs_inline(runner.INTAKE, Next(StepName.QUOTE, 1.0), settings(True))
    assert runner.runs_inline(runner.INTAKE, Next(StepName.QUOTE), settings(True))


def test_a_handed_over_step_that_does_not_run_in_line_gives_its_claim_back_and_keeps_its_delay(tbb: Partner) -> None:
    """A following step with a delay is sent, never run in line: the claim handed with it is given
    back (the message claims at once; the scheduler's re-drive after REDRIVE_AFTER_SECONDS if it never
    comes), and the message keeps the step's delay."""
    import datetime as dt

    purchase_id = stored_purchase()
    with session_scope() as session:
        claimed = state_machine.claim(session, purchase_id, [State.RECEIVED], lease_seconds=60)
    assert claimed is not None
    sent: Sent = []
    handed = Next(StepName.ORDER, 2.0, claim=Claim(claimed, step_started()))
    runner.deliver(handed, purchase_id, after=StepName.QUOTE, partner=TbbFlow(tbb), settings=settings(True),
                   message_id="quote-msg", send=lambda following, pid: sent.append((following, pid)))
    assert sent == [(Next("place_order", 2.0), purchase_id)]
    stored = reload(purchase_id)
    assert (stored.state, stored.claim_token, stored.claimed_until) == ("received", None, None)
    waits = (stored.next_action_at - dt.datetime.now(dt.UTC)).total_seconds()
    redrive = get_settings().redrive_after_seconds
    assert redrive - 30 < waits <= redrive


def test_a_step_that_fails_in_line_is_handed_to_its_message(tbb: Partner, monkeypatch: pytest.MonkeyPatch) -> None:
    def database_gone(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the database went away")

    purchase_id = stored_purchase()
    monkeypatch.setitem(runner.STEPS, StepName.ORDER, database_gone)
    assert quote_step(purchase_id, tbb, inline=True) == [(Next("place_order"), purchase_id)]
    stored = reload(purchase_id)
    assert stored.state == "quoted"
    # The claim the quote step handed over is given back, so the message claims it at once.
    assert stored.claimed_until is None and stored.claim_token is None


def test_the_quote_step_hands_its_claim_to_the_order_step(
    tbb: Partner, clean_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[Claim | None] = []
    real = runner.STEPS[StepName.ORDER]

    def order_step(*args: Any, claim: Claim | None = None, **kwargs: Any) -> Next | None:
        handed.append(claim)
        stored = reload(purchase_id)
        # QUOTED with the quote step's lease still held: no other worker can take it meanwhile.
        assert stored.state == "quoted" and stored.claimed_until is not None
        assert claim is not None and stored.claim_token == claim.purchase.claim_token
        return real(*args, claim=claim, **kwargs)

    purchase_id = stored_purchase()
    monkeypatch.setitem(runner.STEPS, StepName.ORDER, order_step)
    assert quote_step(purchase_id, tbb, inline=True) == []
    assert len(handed) == 1 and reload(purchase_id).state == "awaiting_transfer"
    assert len(clean_sandbox.orders(quote_id=str(reload(purchase_id).quote_id))) == 1


def test_a_claim_taken_over_before_the_order_step_orders_nothing(
    tbb: Partner, clean_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handed-over claim fences the order step like its own claim would: if another worker
    took the purchase over meanwhile (the lease lapsed), no intent is recorded, no order sent."""
    def taken_over(*args: Any, claim: Claim, **kwargs: Any) -> Next | None:
        with session_scope() as session:
            session.execute(text("UPDATE purchases SET claim_token = gen_random_uuid() WHERE id = :id"),
                            {"id": purchase_id})
        return order.place_order(*args, claim=claim, **kwargs)

    purchase_id = stored_purchase()
    monkeypatch.setitem(runner.STEPS, StepName.ORDER, taken_over)
    assert quote_step(purchase_id, tbb, inline=True) == []
    stored = reload(purchase_id)
    assert stored.state == "quoted"
    assert clean_sandbox.orders(quote_id=str(stored.quote_id)) == []


def test_a_transient_failure_in_line_sends_the_step_after_the_retry_delay(
    tbb: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def partner_busy(*args: Any, **kwargs: Any) -> None:
        raise RetryLater(RuntimeError("429"), retry_after=7.0)

    purchase_id = stored_purchase()
    monkeypatch.setitem(runner.STEPS, StepName.ORDER, partner_busy)
    bounded = min(7.0, get_settings().actor_max_backoff_ms / 1000)  # never more than our maximum backoff
    assert quote_step(purchase_id, tbb, inline=True) == [(Next("place_order", bounded), purchase_id)]


def test_a_claim_handed_over_for_the_wrong_purchase_or_state_is_refused(tbb: Partner) -> None:
    created = intake.receive(request(), settings=settings(True), hold_claim_for=60)
    assert created is not None
    other = stored_purchase()
    with pytest.raises(ValueError, match="claim handed over"):
        order.place_order(created.id, partner=TbbFlow(tbb), settings=settings(True), claim=Claim(created, step_started()))
    with pytest.raises(ValueError, match="claim handed over"):
        runner.STEPS[StepName.QUOTE](other, partner=TbbFlow(tbb), settings=settings(True), claim=Claim(created, step_started()))
    assert reload(created.id).state == "received" and reload(other).state == "received"


def test_an_order_confirmation_whose_write_loses_its_connection_is_written_on_a_fresh_one(
        tbb: Partner, clean_sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 16 (both partners): the partner confirms the order after 2 s; its write waits on a row
    lock and that very connection is cut (a reset, a failover mid-write).  The confirmation is written
    again on a fresh connection: awaiting_transfer with the order, never resolved as unknown."""
    import threading

    from tests.support.database import cut_the_write_of, wait_for_state

    clean_sandbox.set_faults({"create_order": {"respond_after_commit_ms": 2000}})
    purchase_id = stored_purchase()
    worker = threading.Thread(target=after_intake, args=(purchase_id, tbb),
                              kwargs={"quote_inline": True, "order_inline": True})
    worker.start()
    wait_for_state(purchase_id, State.ORDERING)
    cut_the_write_of(purchase_id)  # the worker's write of the confirmation, mid-write
    worker.join(40)
    assert not worker.is_alive()
    purchase = reload(purchase_id)
    assert purchase.state == State.AWAITING_TRANSFER and purchase.order_id, (purchase.state, purchase.last_error)
    assert [h.to_state for h in history(purchase_id)][-2:] == ["ordering", "awaiting_transfer"]
    # The one line of the database's outage names the answer still to write.
    assert any(f"order {purchase.order_id} not written yet (database connection failed" in r.getMessage()
               for r in caplog.records if r.name == "fulfilment.outage"), [r.getMessage() for r in caplog.records]


class DeadlinesOf(OneCall):
    """The real partner; the `deadline` each call of `operation` was given is noted."""

    def __init__(self, real: Partner, operation: str) -> None:
        super().__init__(real, operation, self._noted)
        self.seen: list[float | None] = []
        self.args: list[tuple[Any, ...]] = []

    def _noted(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(kwargs.get("deadline"))
        self.args.append(args)
        return call(*args, **kwargs)


class AnswersLate(OneCall):
    """The real partner; the answer (or error) of `operation` reaches the caller only when `left`
    seconds remain before the deadline the call was given."""

    def __init__(self, real: Partner, operation: str, *, left: float) -> None:
        super().__init__(real, operation, self._late)
        self._left = left

    def _late(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        import time

        try:
            return call(*args, **kwargs)
        finally:
            time.sleep(max(0.0, kwargs["deadline"] - self._left - time.monotonic()))


def _order_requests(sandbox: Sandbox) -> int:
    return int(sandbox.stats()["requests"].get("create_order", 0))


def _quoted(tbb: Partner) -> uuid.UUID:
    purchase_id = stored_purchase()
    assert quote_step(purchase_id, tbb, inline=False) == [(Next("place_order"), purchase_id)]
    return purchase_id


def test_an_unclear_order_answer_is_sent_again_at_once_while_the_step_and_the_quote_have_time(
        tbb: Partner, clean_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The order answers 502 (nothing done): the same single-use quote is sent again within the step,
    after one short pause, and ordered once (partners/tbb/flow.py, `_order`; real clocks)."""
    from fulfilment.partners.tbb import flow as tbb_flow

    pauses: list[float] = []
    monkeypatch.setattr(tbb_flow, "pause", pauses.append)
    purchase_id = _quoted(tbb)
    clean_sandbox.set_faults({"create_order": {"fail_next": 1, "error_statuses": [502]}})
    sent_before = _order_requests(clean_sandbox)
    deadlines = DeadlinesOf(tbb, "create_order")
    order.place_order(purchase_id, partner=TbbFlow(deadlines), settings=settings(False), message_id="order-msg")
    assert pauses == [tbb_flow.RESEND_PAUSE_SECONDS]
    assert _order_requests(clean_sandbox) - sent_before == 2
    # Both sends are bounded by the step's deadline (none may outlive the claim's lease).
    assert len(deadlines.seen) == 2 and deadlines.seen[0] is not None and deadlines.seen[0] == deadlines.seen[1]
    purchase = reload(purchase_id)
    assert purchase.state == State.AWAITING_TRANSFER
    assert [o["order_id"] for o in clean_sandbox.orders(quote_id=str(purchase.quote_id))] == [purchase.order_id]


def test_an_unclear_order_answer_is_not_sent_again_when_the_step_has_no_time_left(
        tbb: Partner, clean_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Less than a pause left before the step's deadline (the quote has an hour): no pause, no re-send;
    the outcome is unknown and resolved by the next step."""
    from fulfilment.partners.tbb import flow as tbb_flow

    pauses: list[float] = []
    monkeypatch.setattr(tbb_flow, "pause", pauses.append)
    purchase_id = _quoted(tbb)
    clean_sandbox.set_faults({"create_order": {"fail_next": 1, "error_statuses": [502]}})
    sent_before = _order_requests(clean_sandbox)
    # The 502 is answered at once, but reaches the step only when less than a pause is left before its
    # deadline (a slow network on the way back): whatever the machine's load, the send itself had time.
    slow = AnswersLate(tbb, "create_order", left=tbb_flow.RESEND_PAUSE_SECONDS * 0.4)
    short = settings(False).model_copy(update={"step_deadline_seconds": 3.0})
    following = order.place_order(purchase_id, partner=TbbFlow(slow), settings=short, message_id="order-msg")
    assert following == Next(StepName.RESOLVE)  # the resolution is sent at once, not left to the scheduler
    assert pauses == []
    assert _order_requests(clean_sandbox) - sent_before == 1
    unknown = reload(purchase_id)
    assert unknown.state == State.ORDER_UNKNOWN and "(HTTP 502)" in (unknown.last_error or "")
    assert path(purchase_id)[-1] == ("order_unknown", "order-msg")

    # The resolution: the lookup finds no order, the quote is still good, so the same quote is sent
    # again (and again: every answer unclear).  Its last lookup allowed: held for a person, saying why.
    monkeypatch.undo()
    monkeypatch.setattr(tbb_flow, "pause", pauses.append)
    clean_sandbox.set_faults({"create_order": {"fail_next": 3, "error_statuses": [502]}})
    last_lookup = settings(False).model_copy(update={"order_resolve_attempts": unknown.attempts + 1})
    assert order.resolve_order(purchase_id, partner=TbbFlow(tbb), settings=last_lookup, message_id="resolve-msg") is None
    assert pauses == [tbb_flow.RESEND_PAUSE_SECONDS] * 2
    assert _order_requests(clean_sandbox) - sent_before == 1 + 3
    held = reload(purchase_id)
    assert (held.state, held.failure_code) == (State.NEEDS_ATTENTION, "ORDER_OUTCOME_UNKNOWN")
    why = (held.failure_message or "").rpartition("; ")[2]
    # (the 502's code: BAD_GATEWAY from an envelope, HTTP_502 from a proxy's HTML page: both happen)
    assert why.startswith(f"order sent again with quote {held.quote_id}: ") and "(HTTP 502)" in why, held.failure_message
    assert path(purchase_id)[-1] == ("needs_attention", "resolve-msg")
    assert clean_sandbox.orders(quote_id=str(held.quote_id)) == []


# ---- the transfer check (partners/tbb/flow.py `check_transfer`, issue 20 survivors) -------------


def _awaiting_transfer(tbb: Partner) -> uuid.UUID:
    purchase_id = stored_purchase()
    assert quote_step(purchase_id, tbb, inline=True) == []
    assert reload(purchase_id).state == State.AWAITING_TRANSFER
    with session_scope() as session:  # due now, with an error left from an earlier check
        session.execute(text("UPDATE purchases SET next_action_at = now(), last_error = 'an earlier 503' "
                             "WHERE id = :id"), {"id": purchase_id})
    return purchase_id


def _check(purchase_id: uuid.UUID, tbb: Partner, **changes: Any) -> Next | None:
    from fulfilment.steps import transfer

    return transfer.check_transfer(purchase_id, partner=TbbFlow(tbb), settings=get_settings().model_copy(update=changes),
                                   message_id="transfer-msg")


def test_a_final_transfer_status_ends_the_purchase_by_the_message_that_read_it(
        tbb: Partner, clean_sandbox: Sandbox) -> None:
    purchase_id = _awaiting_transfer(tbb)
    clean_sandbox.force_status(str(reload(purchase_id).order_id), "transfer_complete")
    assert _check(purchase_id, tbb) is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.order_status, purchase.last_error) == (
        State.TRANSFER_COMPLETE, "transfer_complete", None)
    assert history(purchase_id)[-1].message_id == "transfer-msg"
    assert history(purchase_id)[-1].reason == "partner reports transfer_complete"


def test_an_order_the_partner_no_longer_knows_is_held_for_a_person_saying_so(tbb: Partner) -> None:
    purchase_id = _awaiting_transfer(tbb)
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET order_id = 'TBB-NEVER-SEEN' WHERE id = :id"), {"id": purchase_id})
    assert _check(purchase_id, tbb) is None
    purchase = reload(purchase_id)
    assert purchase.state == State.NEEDS_ATTENTION
    assert purchase.failure_code == "ORDER_NOT_FOUND" and purchase.failure_message
    last = history(purchase_id)[-1]
    assert (last.to_state, last.message_id, last.reason) == (
        "needs_attention", "transfer-msg", "order status unreadable: ORDER_NOT_FOUND")


def test_a_transient_failure_reading_the_transfer_gives_the_lease_back_for_the_retry(
        tbb: Partner, clean_sandbox: Sandbox) -> None:
    purchase_id = _awaiting_transfer(tbb)
    clean_sandbox.set_faults({"get_order": {"fail_next": 20, "error_statuses": [503]}})
    with pytest.raises(RetryLater) as raised:
        _check(purchase_id, tbb, tbb_max_attempts=1)
    assert "503" in str(raised.value.__cause__)
    purchase = reload(purchase_id)
    assert purchase.state == State.AWAITING_TRANSFER and purchase.claimed_until is None
    assert "(HTTP 503)" in (purchase.last_error or "")


def test_a_stalled_transfer_read_cannot_hold_the_step_past_its_deadline(tbb: Partner, clean_sandbox: Sandbox) -> None:
    import time

    purchase_id = _awaiting_transfer(tbb)
    clean_sandbox.set_faults({"get_order": {"stall_next": 1, "stall_ms": 9000}})
    started = time.monotonic()
    with pytest.raises(RetryLater):
        _check(purchase_id, tbb, step_deadline_seconds=1.0)
    took = time.monotonic() - started
    assert took < 7.0  # cut near the 1 s deadline, not the 9 s stall (room for a loaded machine)
    time.sleep(max(0.0, 9.5 - took))  # let the stalled request finish before the next test uses the sandbox


def test_a_transfer_still_pending_is_read_again_a_poll_interval_later_with_its_status_kept(tbb: Partner) -> None:
    from fulfilment.partners.tbb.flow import poll_interval

    purchase_id = _awaiting_transfer(tbb)
    with session_scope() as session:  # the status this read brings is written, not left from the order;
        # the deadline near enough that a quarter of the time left is between the poll's bounds
        session.execute(text("UPDATE purchases SET order_status = NULL, delivery_deadline = now() + interval '10 minutes' "
                             "WHERE id = :id"), {"id": purchase_id})
    bounds = {"transfer_poll_min_seconds": 30.0, "transfer_poll_seconds": 300.0}
    expected = poll_interval(reload(purchase_id).delivery_deadline, get_settings().model_copy(update=bounds))
    assert 30.0 < expected < 300.0
    assert _check(purchase_id, tbb, **bounds) is None
    with session_scope() as session:
        due_in = session.execute(text("SELECT extract(epoch FROM next_action_at - now()) FROM purchases WHERE id = :id"),
                                 {"id": purchase_id}).scalar_one()
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.order_status, purchase.claimed_until) == (
        State.AWAITING_TRANSFER, "awaiting_transfer", None)  # the lease given back
    assert expected - 10 < float(due_in) <= expected
    assert [h.kind for h in history(purchase_id)].count("late_answer") == 0


def test_a_pending_status_read_for_a_purchase_taken_over_meanwhile_is_noted_late_not_applied(tbb: Partner) -> None:
    purchase_id = _awaiting_transfer(tbb)
    with session_scope() as session:
        session.execute(text("UPDATE purchases SET order_status = NULL WHERE id = :id"), {"id": purchase_id})

    def read_then_taken_over(call: Any, *args: Any, **kwargs: Any) -> Any:
        answer = call(*args, **kwargs)
        with session_scope() as session:  # another worker holds the purchase when the answer comes back
            session.execute(text("UPDATE purchases SET claim_token = gen_random_uuid() WHERE id = :id"),
                            {"id": purchase_id})
        return answer

    assert _check(purchase_id, OneCall(tbb, "get_order", read_then_taken_over)) is None
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.order_status) == (State.AWAITING_TRANSFER, None)  # not written by the stale read
    late = history(purchase_id)[-1]
    assert (late.kind, late.message_id) == ("late_answer", "transfer-msg")
    assert f"order {purchase.order_id} is awaiting_transfer" in late.reason


def test_the_transfer_is_polled_every_quarter_of_the_time_left_within_the_bounds() -> None:
    import datetime as dt

    from fulfilment.partners.tbb.flow import poll_interval

    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    bounds = get_settings().model_copy(update={"transfer_poll_min_seconds": 1.0, "transfer_poll_seconds": 60.0})
    assert poll_interval(now + dt.timedelta(seconds=100), bounds, now) == 25.0
    assert poll_interval(now + dt.timedelta(seconds=1000), bounds, now) == 60.0
    assert poll_interval(now + dt.timedelta(seconds=2), bounds, now) == 1.0
    assert poll_interval(now - dt.timedelta(seconds=50), bounds, now) == 1.0


def test_the_quote_asks_for_the_row_the_buyer_asked_for(tbb: Partner) -> None:
    purchase_id = stored_purchase(row_name="B")
    quotes = DeadlinesOf(tbb, "create_quote")
    runner.run_step(StepName.QUOTE, purchase_id, partner=TbbFlow(quotes), settings=settings(False),
                    message_id="quote-msg", send=lambda following, pid: None)
    [(asked,)] = quotes.args
    assert quotes.seen[0] is not None  # bounded by the step's deadline
    assert (asked.event_id, asked.section_name, asked.row_name, asked.quantity) == (
        reload(purchase_id).event_id, reload(purchase_id).section_name, "B", 2)
    assert reload(purchase_id).state == State.QUOTED  # the row quoted is the row asked for


def test_a_quote_for_another_row_than_the_buyer_asked_for_is_never_ordered(tbb: Partner) -> None:
    purchase_id = stored_purchase(row_name="B")
    assert quote_step(purchase_id, quotes_other_seats(tbb, row_name="Z"), inline=True) == []
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code) == (State.FAILED, "QUOTE_MISMATCH")
    assert purchase.failure_message == "row 'Z' quoted, 'B' requested"


def test_a_quote_refused_for_good_fails_the_purchase_by_its_message_saying_why(tbb: Partner) -> None:
    purchase_id = stored_purchase(event_id="9999999")
    assert quote_step(purchase_id, tbb, inline=True) == []
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code, purchase.quotes_taken) == (State.FAILED, "EVENT_NOT_FOUND", 0)
    last = history(purchase_id)[-1]
    assert (last.to_state, last.message_id, last.reason) == ("failed", "quote-msg", "partner refused the quote: EVENT_NOT_FOUND")
    assert purchase.failure_message and purchase.failure_message != "None"  # the partner's own words


def test_a_transient_failure_of_the_quote_gives_the_lease_back_for_the_retry(tbb: Partner, clean_sandbox: Sandbox) -> None:
    purchase_id = stored_purchase()
    clean_sandbox.set_faults({"create_quote": {"fail_next": 20, "error_statuses": [503]}})
    with pytest.raises(RetryLater) as raised:
        runner.run_step(StepName.QUOTE, purchase_id, partner=TbbFlow(tbb), message_id="quote-msg",
                        settings=settings(False).model_copy(update={"tbb_max_attempts": 1}),
                        send=lambda following, pid: None)
    assert "503" in str(raised.value.__cause__)
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.claimed_until, purchase.quotes_taken) == (State.RECEIVED, None, 0)
    assert "(HTTP 503)" in (purchase.last_error or "")


def test_an_account_that_cannot_pay_pauses_the_quote_saying_so(tbb: Partner) -> None:
    """PAYMENT_NOT_CONFIGURED on the quote: the account is at fault, not the request -- the purchase
    pauses (PAYMENT_PAUSE_SECONDS), by the message that met it, keeping the partner's error."""
    from pydantic import SecretStr

    from fulfilment.partners.tbb.partner import build_tbb
    from tests.support.sandbox import PARTNER_NOPAY

    client_id, secret = PARTNER_NOPAY
    nopay = build_tbb(get_settings().model_copy(update={"tbb_client_id": client_id, "tbb_client_secret": SecretStr(secret)}))
    purchase_id = stored_purchase()
    try:
        assert quote_step(purchase_id, nopay, inline=False) == []
    finally:
        nopay.close()
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.quotes_taken) == (State.PAUSED, 0)
    assert "PAYMENT_NOT_CONFIGURED" in (purchase.last_error or "")
    last = history(purchase_id)[-1]
    assert (last.to_state, last.message_id, last.reason) == ("paused", "quote-msg", "account cannot quote: PAYMENT_NOT_CONFIGURED")
    with session_scope() as session:  # waits PAYMENT_PAUSE_SECONDS before it is tried again
        waits = session.execute(text("SELECT extract(epoch FROM next_action_at - now()) FROM purchases WHERE id = :id"),
                                {"id": purchase_id}).scalar()
    assert get_settings().payment_pause_seconds - 5 < waits <= get_settings().payment_pause_seconds


@pytest.mark.parametrize(("limit", "quoted"), [("100.00", True), ("99.99", False)])
def test_a_quote_above_max_unit_price_fails_the_purchase_and_one_at_it_is_taken(tbb: Partner, limit: str,
                                                                                 quoted: bool) -> None:
    """The buyer's max_unit_price is a ceiling: a quote at it is taken, one a cent above it fails the
    purchase (PRICE_ABOVE_LIMIT, by the message that read it, both prices told), never ordered."""
    from decimal import Decimal

    purchase_id = stored_purchase(max_unit_price=limit)
    priced = quotes_other_seats(tbb, unit_price=Decimal("100.00"), subtotal=Decimal("200.00"))
    assert quote_step(purchase_id, priced, inline=False) == ([(Next(StepName.ORDER), purchase_id)] if quoted else [])
    purchase = reload(purchase_id)
    last = history(purchase_id)[-1]
    if quoted:
        assert (purchase.state, purchase.unit_price) == (State.QUOTED, Decimal("100.00"))
        return
    assert (purchase.state, purchase.failure_code, purchase.quote_id) == (State.FAILED, "PRICE_ABOVE_LIMIT", None)
    assert "quoted unit price 100.00 " in (purchase.failure_message or "") and "99.99" in purchase.failure_message
    assert (last.to_state, last.message_id, last.reason) == ("failed", "quote-msg", "quoted price above max_unit_price")
    with session_scope() as session:  # what the partner quoted is kept beside the refusal
        kept = session.execute(text("SELECT unit_price FROM partner_quotes WHERE purchase_id = :id"),
                               {"id": purchase_id}).scalars().all()
    assert kept == [Decimal("100.00")]


def quotes_other_seats(real: Partner, **changes: Any) -> OneCall:
    """The real partner, but its quotes are for `changes` (other seats than asked)."""
    import dataclasses

    return OneCall(real, "create_quote", lambda call, *args, **kwargs: dataclasses.replace(call(*args, **kwargs), **changes))


@pytest.mark.parametrize(("changes", "told"), [
    ({"quantity": 3}, "quantity 3 quoted, 2 requested"),
    ({"section_name": "999"}, "section '999' quoted, "),
])
def test_a_quote_for_other_seats_than_asked_is_never_ordered(tbb: Partner, changes: dict[str, Any], told: str) -> None:
    purchase_id = stored_purchase()
    assert quote_step(purchase_id, quotes_other_seats(tbb, **changes), inline=True) == []
    purchase = reload(purchase_id)
    assert (purchase.state, purchase.failure_code) == (State.FAILED, "QUOTE_MISMATCH")
    assert told in (purchase.failure_message or "") and purchase.quote_id is None
    last = history(purchase_id)[-1]
    assert (last.to_state, last.message_id, last.reason) == ("failed", "quote-msg", "quote does not match the request")
    with session_scope() as session:  # what the partner quoted is kept beside the refusal
        kept = session.execute(text("SELECT quantity, section_name FROM partner_quotes WHERE purchase_id = :id"),
                               {"id": purchase_id}).all()
    assert len(kept) == 1 and (kept[0].quantity == 3 or kept[0].section_name == "999")


def test_closing_the_tbb_flow_closes_its_client_if_it_has_one() -> None:
    class Client:
        closed = 0

        def close(self) -> None:
            self.closed += 1

    client = Client()
    TbbFlow(client).close()  # type: ignore[arg-type]
    assert client.closed == 1
    TbbFlow(object()).close()  # type: ignore[arg-type]  # a client without close(): nothing to do

"""Property-based test of Ticketmaster purchases: the real steps, real Postgres, an in-memory TM.

The Ticketmaster counterpart of test_purchase_properties.py (read it first: same conventions).  A
hypothesis state machine drives the real step runner (`fulfilment.steps.runner.run_step` and
`take_in`), the real Ticketmaster flow (`TicketmasterFlow`, with this example's clock) and the
scheduler's own `redrive_due`, for 1-3 purchases, against `FakeTicketmaster`
(fulfilment/partners/ticketmaster/testing.py) while injecting what production throws at them:
stale, duplicated, redelivered and lost messages; scheduler re-drives; claim leases that pass;
partner calls answered 202 (then polled, maybe after more 202s), 429 with a Ratelimit-Expiry,
niterun, NotSent, 5xx; cart calls processed but their answers lost (or unreadable, naming the order); commits processed later (the
test lets them land when it likes); definite refusals (CartInvalid, SoldOut, PaymentRefused);
carts held briefly or expiring while a purchase waits; an unredeemed-orders list that lags behind
commits (a per-example lag) and may or may not give order numbers; SafeTix tokens delayed until a
delivery delay date; workers that die before or after a partner call (their claim stays held until
the lease passes); exhausted retries (STALLED) and operator resumes.

After every step it checks, against the database and what the fake recorded:
- at most one order per purchase (orders per source_account_id, `flow.source_account_id`), each on
  a cart reserved for that purchase;
- no commit of an expired, deleted or unpaid cart; no commit, and no reserve, for a purchase once
  an order exists for it or TM still holds a commit of it (the fake notes these as they come in);
- a purchase for which an order may exist (TM holds one or a commit of it, or a commit of it was
  sent without a definite answer reaching us) is on the order path: never back to quoting, never
  FAILED; once its order outcome was unknown it goes back to quoting only after the commit's own
  definite refusal reached us (its polled answer); AWAITING_TICKETS / TICKETS_ISSUED name the
  order's number (with its tickets stored); NEEDS_ATTENTION and STALLED keep the evidence; an order
  number our code received is never dropped;
- the history and outbox stay consistent (one event per history row, allowed transitions only);
- live purchases have a next action, finished and held ones none.
At the end of each example, faults stop and the commits TM still holds land: the scheduler alone
must bring every purchase to a final or an operator-held state, each purchase whose order exists
ending TICKETS_ISSUED with that order's number or held (NEEDS_ATTENTION, STALLED) with the evidence
kept -- never FAILED, never bought twice.

Time is simulated: the flow, TM's carts and lists, and the steps' deadline checks read one `Clock`;
a lease "passes" when the test moves this example's database times into the past and the clock on
by as much (`_time_passes`).

Bugs of the flow found while writing this test (a poll's 429 taken for a refused commit: two orders; a
polling URL TM forgot, polled for ever) are fixed; the scripted regressions at the end pin them down,
and the machine meets forgotten URLs too (GONE_READ_AND_RESERVE_POLLS).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis.stateful import initialize, invariant, rule
from sqlalchemy import text

from fulfilment.flowkit.flow import Partners
from fulfilment.partners.ticketmaster import flow as tm_flow
from fulfilment.partners.ticketmaster.errors import CartInvalid, is_commit_definite, unknown
from fulfilment.partners.ticketmaster.flow import TicketmasterFlow, TmConfig
from fulfilment.partners.ticketmaster.payloads import Cart, Operation, ReserveRequest, ReserveTicket
from fulfilment.partners.ticketmaster.testing import FakeOrder, FakeTicketmaster, Fault, FreshNonces, SimulatedCrash
from fulfilment.requests import purchase_id_for
from fulfilment.state_machine import HELD_FOR_OPERATOR, NEXT_STEP, TERMINAL, State
from tests.support.factories import tm_request
from tests.support.fake_partner import Clock
from tests.support.machines import DEADLINE_SOON, LEASE, MARGIN, PurchaseMachineBase, event, guarded, note, purchase_rules, replay

# ---- switch: polling URLs TM forgets -----------------------------------------------------------
# A polling URL TM no longer knows, for a reserve or an order-management call.  The flow used to keep
# it and poll it again at every step, for ever (the liveness run failed); it now forgets it
# (TicketmasterFlow._poll).  Off, the machine skips that fault.
GONE_READ_AND_RESERVE_POLLS = True

# Time is simulated (see the module docstring; LEASE, MARGIN, LEAD, SOON_MARGIN: tests/support/machines.py).
LIVENESS_ROUNDS = 60
MAX_JUMP = 3 * 86400.0  # the longest wait the liveness run jumps over at once (niterun, delay dates)
# Per example: how long TM holds a cart (an hour, a few leases, about one), how far the unredeemed
# list lags behind commits (none, less than a lease, longer than the resolve attempts last), the
# hold a payment adds, and the event's time zone (None: niterun's end unknown, the flow's fallback).
HOLDS = st.sampled_from([3600.0, 600.0, 300.0, 150.0])
LAGS = st.sampled_from([0.0, 90.0, 400.0, 2000.0])
EXTENSIONS = st.sampled_from([0.0, 0.0, 120.0])
ZONES = st.sampled_from(["America/Los_Angeles", "America/Los_Angeles", "Europe/London", None])
PRICES = st.sampled_from([None] * 6 + ["60.00", "50.00"])  # one ticket costs 54.41 all in

# What each step calls at TM (faults are drawn for those calls).
STEP_CALLS: dict[str, tuple[str, ...]] = {
    "quote_purchase": ("reserve", "add_payment", "poll_reserve", "poll_add_payment", "delete_cart", "event_details"),
    "place_order": ("commit", "commit", "commit", "delete_cart"),
    "resolve_order": ("poll_commit", "poll_commit", "unredeemed_orders"),
    "fetch_tickets": ("order_tickets", "poll_order_tickets"),
}
STEP_NAMES = sorted(STEP_CALLS)

# Fault kinds per operation, weighted ("" is none, and first: examples shrink towards it).
FAULT_WEIGHTS: dict[str, dict[str, int]] = {
    "event_details": {"": 10, "not_sent": 1, "transient": 1, "rate_limited": 1, "maintenance": 1, "crash_before": 1},
    "reserve": {"": 8, "polling": 3, "not_sent": 1, "rate_limited": 1, "maintenance": 1, "lost": 2, "unknown": 1,
                "crash_before": 1, "crash_after": 2, "sold_out": 1, "short_hold": 1},
    "poll_reserve": {"": 5, "again": 2, "not_sent": 1, "rate_limited": 1, "crash_after": 1,
                     **({"gone": 3} if GONE_READ_AND_RESERVE_POLLS else {})},
    "add_payment": {"": 8, "polling": 3, "not_sent": 1, "rate_limited": 1, "maintenance": 1, "lost": 2, "unknown": 1,
                    "crash_before": 1, "crash_after": 2, "payment_refused": 1, "cart_invalid": 1},
    "poll_add_payment": {"": 5, "again": 2, "gone": 1, "not_sent": 1, "maintenance": 1, "crash_after": 1},
    "delete_cart": {"": 6, "polling": 1, "not_sent": 1, "lost": 1, "unknown": 1, "crash_before": 1, "crash_after": 1},
    "commit": {"": 4, "polling": 5, "not_sent": 1, "rate_limited": 1, "maintenance": 1, "lost": 4, "deferred": 4,
               "crash_deferred": 2, "unknown": 2, "crash_before": 2, "crash_after": 3, "cart_invalid": 1,
               "sold_out": 1, "payment_refused": 1, "polling_refused": 2, "unreadable": 1},
    "poll_commit": {"": 4, "again": 3, "gone": 2, "not_sent": 1, "crash_before": 1, "crash_after": 2, "rate_limited": 3,
                    "maintenance": 2},
    "unredeemed_orders": {"": 4, "polling": 1, "transient": 2, "not_sent": 1, "rate_limited": 1, "maintenance": 1,
                          "crash_before": 1},
    "order_tickets": {"": 6, "polling": 2, "not_sent": 1, "transient": 1, "rate_limited": 1, "maintenance": 1,
                      "crash_before": 1, "crash_after": 1, "delayed": 2, "not_found": 1},
    "poll_order_tickets": {"": 4, "again": 2, "rate_limited": 1, "crash_after": 1,
                           **({"gone": 3} if GONE_READ_AND_RESERVE_POLLS else {})},
}
WEIGHTED = {op: [kind for kind, weight in weights.items() for _ in range(weight)] for op, weights in FAULT_WEIGHTS.items()}
assert all(ops in FAULT_WEIGHTS for calls in STEP_CALLS.values() for ops in calls)
# The operations a fault may be armed for ahead of time, whichever purchase calls next (commits most).
TROUBLE_OPS = ("commit", "commit", "commit", "poll_commit", "poll_commit", "unredeemed_orders", "reserve",
               "add_payment", "poll_reserve", "poll_add_payment", "delete_cart", "order_tickets", "poll_order_tickets")

# A fault is drawn the same way whatever the purchase's state (the draw must not depend on the
# database, or hypothesis cannot replay an example): which call of the step, which kind of the
# weighted list of that call's operation (index 0 is "": none, where examples shrink to), the
# 202's wait, how many more 202s, the 429's wait, the delay date's distance in days.
Drawn = tuple[int, int, float, int, float, int]
SPREAD = 720  # indices are drawn uniformly in range(SPREAD), scaled to the list they pick from
FAULTS = st.tuples(st.sampled_from(range(SPREAD)), st.sampled_from(range(SPREAD)),
                   st.sampled_from([4.0, 4.0, 30.0, 200.0]), st.sampled_from([0, 0, 1, 2]),
                   st.sampled_from([30.0, 600.0]), st.sampled_from([1, 3]))


def fault_for(operations: tuple[str, ...], drawn: Drawn | None) -> tuple[str, Fault] | None:
    """The (operation, fault) to plan for one of these calls, if any."""
    if drawn is None:
        return None
    call, kind, wait, repeats, retry_after, delay_days = drawn
    operation = operations[call * len(operations) // SPREAD]
    kinds = WEIGHTED[operation]
    chosen = kinds[kind * len(kinds) // SPREAD]
    if not chosen:
        return None
    return operation, Fault(chosen, wait_seconds=wait, repeats=repeats, retry_after=retry_after, delay_days=delay_days)


S = State
# Where a purchase may be while an order may exist for it (FakeTicketmaster.may_have_bought): never
# on the quote path (RECEIVED, QUOTED, PAUSED) nor FAILED, from where it could reserve and buy afresh.
MAY_HOLD_ORDER = frozenset({S.ORDERING, S.ORDER_UNKNOWN, S.AWAITING_TICKETS, S.TICKETS_ISSUED, S.NEEDS_ATTENTION,
                            S.STALLED})
MAY_STALL_WITH_ORDER = frozenset({S.ORDERING, S.ORDER_UNKNOWN, S.AWAITING_TICKETS})
ORDER_KNOWN = frozenset({S.AWAITING_TICKETS, S.TICKETS_ISSUED})
# Once an order outcome was unknown, never back to where the purchase could buy afresh (unless
# ORDER_ABSENCE_GRACE_SECONDS is set: AbsenceTmPurchaseMachine judges its policy) nor FAILED (only an
# operator may) -- unless the commit's own definite refusal reached us meanwhile (its polled answer).
NEVER_AFTER_UNKNOWN = frozenset({S.RECEIVED, S.QUOTED, S.PAUSED, S.ORDERING, S.FAILED})
ORPHAN_LEAVES_ALONE = TERMINAL | {S.NEEDS_ATTENTION, S.AWAITING_TICKETS}

SNAPSHOT_SQL = text(
    """
    SELECT
      (SELECT coalesce(json_agg(json_build_object(
                 'id', p.id, 'state', p.state, 'stalled_from', p.stalled_from, 'order_id', p.order_id,
                 'order_evidence', p.order_evidence, 'failure_code', p.failure_code, 'quantity', p.quantity,
                 'has_next_action', p.next_action_at IS NOT NULL,
                 'tickets', (SELECT count(*) FROM tickets t WHERE t.purchase_id = p.id))), '[]')
         FROM purchases p WHERE p.id = ANY(:ids)) AS purchases,
      (SELECT coalesce(json_agg(json_build_array(
                 t.id, t.purchase_id, t.kind, t.from_state, t.to_state,
                 (SELECT count(*) FROM outbox_events o WHERE o.transition_id = t.id)) ORDER BY t.id), '[]')
         FROM purchase_transitions t WHERE t.purchase_id = ANY(:ids)) AS history,
      (SELECT count(*) FROM outbox_events o WHERE o.purchase_id = ANY(:ids)) AS outbox_events,
      (SELECT coalesce(json_agg(json_build_array(x.order_id, x.purchase_id)), '[]')
         FROM orphan_orders x WHERE x.purchase_id = ANY(:ids)) AS orphans
    """
)
JUDGE_SQL = text("SELECT id, purchase_id, to_state FROM purchase_transitions WHERE purchase_id = ANY(:ids) "
                 "AND id > :after AND kind = 'transition' ORDER BY id")
NEXT_DUE_SQL = text("SELECT extract(epoch FROM min(next_action_at) - now()) FROM purchases WHERE id = ANY(:ids)")
class TmPurchaseMachine(PurchaseMachineBase):
    crash = SimulatedCrash
    fault_label = "TM"
    partner_settings = {"tm_min_hold_seconds": 5.0}

    def __init__(self) -> None:
        super().__init__()
        assert "ticketmaster" in self.settings.enabled_partners, "the test settings enable Ticketmaster"
        self.fake = FakeTicketmaster(clock=self.clock, owner_of=self._owner_of)
        # Every payment gets a fresh nonce (a nonce pays once; a re-reserved cart pays again).
        config = dataclasses.replace(TmConfig.from_settings(self.settings), nonces=FreshNonces())
        self.flow = TicketmasterFlow(self.fake, config, clock=self.clock)
        self.partners = Partners(flows={"ticketmaster": self.flow})
        self.sids: list[str] = []  # the purchases' source_account_ids (TM's reserves tell them apart)
        self.judged = 0  # the last history row `_judge` looked at
        self.unknown_since: dict[uuid.UUID, int] = {}  # purchase -> its history row that went ORDER_UNKNOWN

    # ---- helpers ---------------------------------------------------------------------

    plan_for = staticmethod(fault_for)

    def _runner_partner(self) -> Partners:
        return self.partners

    def _fake_partner(self) -> FakeTicketmaster:
        return self.fake

    def _after_message(self, message_id: str) -> None:
        self._judge()

    def _owner_of(self, event_id: str, request: ReserveRequest) -> str | None:
        quantity = sum(ticket.quantity for ticket in request.tickets)
        return self.sids[quantity - 1] if 1 <= quantity <= len(self.sids) else None

    def _calls_of(self, step: str) -> tuple[str, ...]:
        calls = STEP_CALLS[step]
        if step == "quote_purchase" and self.settings.order_after_quote_inline:
            calls += STEP_CALLS["place_order"]
        return calls

    def _create(self, price: str | None, deadline_soon: bool, fault: Drawn | None = None) -> None:
        raw = tm_request(quantity=len(self.purchases) + 1, max_unit_price=price or "60.00",
                         delivery_deadline=self._delivery_deadline(deadline_soon))
        purchase_id = purchase_id_for(raw["request_id"])
        self.purchases.append(purchase_id)
        self.sids.append(tm_flow.source_account_id(purchase_id))
        if self.settings.quote_after_intake_inline:
            planned = fault_for(self._calls_of("quote_purchase"), fault)
            if planned is not None:
                self.fake.plan(*planned)
        self._take_in(raw, purchase_id)

    def _until_due(self) -> float:
        """Seconds until the first of these purchases' next actions (at least a lease, at most MAX_JUMP)."""
        due = self.reader.execute(NEXT_DUE_SQL, {"ids": self.purchases}).scalar()
        return min(max(LEASE + 1, float(due or 0) + 5), MAX_JUMP)

    def _judge(self) -> None:
        """Once its order outcome was unknown, a purchase goes back to quoting (or fails) only after
        the commit's own definite refusal reached us -- TM holds no order and no commit of it, and
        no commit of it is unanswered (`may_have_bought`).  Judged for each new history row right
        after the delivery that wrote it, against what TM had then."""
        rows = self.reader.execute(JUDGE_SQL, {"ids": self.purchases, "after": self.judged}).all()
        for row_id, purchase_id, to_state in rows:
            self.judged = row_id
            state = State(to_state)
            if state is State.ORDER_UNKNOWN:
                self.unknown_since.setdefault(purchase_id, row_id)
            elif purchase_id in self.unknown_since and state in NEVER_AFTER_UNKNOWN:
                sid = self.sids[self.purchases.index(purchase_id)]
                if self._absence_policy_requoted(purchase_id, row_id, state):
                    del self.unknown_since[purchase_id]
                    continue
                assert not self.fake.may_have_bought(sid), \
                    f"{purchase_id}: {state} (row {row_id}) after its order outcome was unknown (row " \
                    f"{self.unknown_since[purchase_id]}), while an order may exist: {self.fake.orders_of(sid)}, " \
                    f"{[c for c in self.fake.commits if c.source_account_id == sid]}"
                event(f"{state} after a commit refused by its polled answer")
                del self.unknown_since[purchase_id]

    def _absence_policy_requoted(self, purchase_id: uuid.UUID, row_id: int, state: State) -> bool:
        """Whether this return to quoting is the absence policy's (judged by AbsenceTmPurchaseMachine;
        without ORDER_ABSENCE_GRACE_SECONDS there is no such policy)."""
        return False

    def _may_have_bought(self, sid: str) -> bool:
        return self.fake.may_have_bought(sid)

    # ---- rules -------------------------------------------------------------------------

    @initialize(hold=HOLDS, lag=LAGS, numbers=st.booleans(), extension=EXTENSIONS, zone=ZONES, price=PRICES,
                deadline_soon=DEADLINE_SOON)
    @guarded
    def first_purchase(self, hold: float, lag: float, numbers: bool, extension: float, zone: str | None,
                       price: str | None, deadline_soon: bool) -> None:
        # How TM is in this example (the contract leaves these open, or they vary by event).
        self.fake.hold_seconds = hold
        self.fake.unredeemed_lag_seconds = lag
        self.fake.unredeemed_numbers = numbers
        self.fake.payment_extension_seconds = extension
        self.fake.event_timezone = zone
        self._create(price, deadline_soon)

    another_purchase, deliver = purchase_rules(PRICES, FAULTS, STEP_NAMES)

    @rule(index=st.integers(0, 2), when=st.sampled_from(["crash_before", "crash_after"]), call=st.integers(0, 5))
    @guarded
    def worker_dies(self, index: int, when: str, call: int) -> None:
        """The worker running a purchase's due step dies just before or just after one of its TM
        calls: its message is redelivered, its claim stays held until the lease passes."""
        purchase_id = self._pid(index)
        step = NEXT_STEP.get(self._state(purchase_id)) or "resolve_order"
        calls = self._calls_of(step)
        self._deliver(step, purchase_id, (calls[call % len(calls)], Fault(when)))

    @rule(messages=st.integers(1, 4), position=st.integers(0, 50),
          how=st.sampled_from(["deliver", "deliver", "deliver", "duplicate", "lose"]), fault=FAULTS)
    @guarded
    def broker(self, messages: int, position: int, how: str, fault: Drawn) -> None:
        """Workers take queued messages; when none is left the scheduler re-drives what is due.  The
        first one may come out of order, be a duplicate that stays queued, or be lost; TM misbehaves
        alike for each (the same fault, for the calls of each message's step)."""
        self._broker(messages, position, how, fault)

    @rule(how=st.sampled_from(["lease", "lease", "minute", "until_due"]))
    @guarded
    def time_passes(self, how: str) -> None:
        """A claim lease passes (dead workers' claims lapse), or a minute, or time runs on to the
        first next action (a 429's expiry, niterun's end, a delivery delay date)."""
        seconds = {"lease": LEASE + 1, "minute": 61.0}.get(how) or self._until_due()
        self._time_passes(seconds)

    @rule(operation=st.sampled_from(TROUBLE_OPS), fault=FAULTS, times=st.sampled_from([1, 1, 2]))
    @guarded
    def trouble_ahead(self, operation: str, fault: Drawn, times: int) -> None:
        """A fault armed for the next call(s) of one TM operation, whichever purchase makes them."""
        planned = fault_for((operation,), fault)
        for _ in range(times if planned is not None else 0):
            assert planned is not None
            self.fake.plan(*planned)

    @rule(position=st.integers(0, 10))
    @guarded
    def commit_lands(self, position: int) -> None:
        """TM processes a commit it received earlier (answered 504, or its worker died): an order if
        the cart is still paid and held."""
        if self.fake.deferred:
            landed = self.fake.land_deferred(position % len(self.fake.deferred))
            event(f"late commit: {landed.outcome.split()[0] if landed.outcome else None}")

    # ---- invariants --------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        self.healthy = False
        fake = self.fake
        # 1. What our code sent TM: no commit of an expired, deleted or unpaid cart, none (and no
        #    reserve) for a purchase once an order exists for it or TM holds a commit of it.
        assert not fake.violations, f"the client did what it must never do: {fake.violations}"
        #    ... and no commit of a cart whose hold ends within the safety margin (issue 20).
        for call in fake.calls_of("commit"):
            cart = fake.carts.get(call.cart_id or "")
            assert cart is None or (cart.hold_until - call.at).total_seconds() > MARGIN, \
                f"commit of cart {call.cart_id} at {call.at}, within the {MARGIN:g} s safety margin of its hold's " \
                f"end ({cart.hold_until})"

        snapshot = self.reader.execute(SNAPSHOT_SQL, {"ids": self.purchases}).one()
        purchases: dict[str, dict[str, Any]] = {p["id"]: p for p in snapshot.purchases}
        history: list[list[Any]] = snapshot.history  # [id, purchase_id, kind, from, to, outbox events]
        orphans: dict[str, str] = {row[0]: row[1] for row in snapshot.orphans}  # order number -> purchase
        by_sid = {sid: str(pid) for pid, sid in zip(self.purchases, self.sids, strict=True)}

        # 2. At most one order per purchase (the money invariant, never weakened), on a cart
        #    reserved for that purchase.
        orders: dict[str, list[FakeOrder]] = defaultdict(list)
        for o in fake.orders.values():
            assert o.source_account_id in by_sid, f"order {o.order_number} for an unknown {o.source_account_id}"
            assert o.owner == o.source_account_id, f"order {o.order_number}: cart of {o.owner} bought for another"
            orders[by_sid[o.source_account_id]].append(o)
        for pid, held in orders.items():
            assert len(held) <= 1, f"purchase {pid} has {len(held)} orders: {held}"

        # 3. Each history row has exactly one outbox event; each purchase's chain is consistent and
        #    allowed (and once its order outcome was unknown... : `_judge`, after every delivery).
        self._judge()
        self._check_history(history, snapshot.outbox_events, purchases, ORPHAN_LEAVES_ALONE)

        # 4. An order that may exist keeps its purchase on the order path; the purchase names it once
        #    known, keeps the evidence when held, never drops an order number it received.
        for pid, sid in zip(self.purchases, self.sids, strict=True):
            purchase = purchases[str(pid)]
            state = State(purchase["state"])
            held = orders.get(str(pid), [])
            if purchase["order_id"] is not None:
                assert [o.order_number for o in held] == [purchase["order_id"]], \
                    f"{pid} records order {purchase['order_id']}, TM has {held}"
            if state is State.ORDERING:
                assert purchase["order_evidence"] is not None, f"{pid} is ordering without order evidence"
            if not held:
                assert state not in ORDER_KNOWN, f"{pid} is {state}, but TM has no order for it"
            if held or self._may_have_bought(sid):
                what = held[0].order_number if held else "a commit without a definite answer"
                assert state in MAY_HOLD_ORDER, f"{pid} is {state} while an order may exist: {what}"
                if state is State.STALLED:
                    assert State(purchase["stalled_from"]) in MAY_STALL_WITH_ORDER, \
                        f"{pid} stalled from {purchase['stalled_from']} (and resumes there) while an order may exist: {what}"
            if not held:
                continue
            the_order = held[0]
            named = purchase["order_id"] == the_order.order_number
            kept = orphans.get(the_order.order_number) == str(pid)
            if state in ORDER_KNOWN:
                assert named, f"{pid} is {state} without naming order {the_order.order_number}"
            if state is State.TICKETS_ISSUED:
                assert purchase["tickets"] == len(the_order.tickets) == purchase["quantity"], \
                    f"{pid}: {purchase['tickets']} tickets stored, order {the_order.order_number} has " \
                    f"{len(the_order.tickets)}"
            if the_order.revealed:
                assert named or kept, f"order {the_order.order_number} of {pid} was received, then dropped " \
                                      f"(the purchase is {state})"
            if not named and not kept:
                assert purchase["order_evidence"] is not None, \
                    f"{pid} is {state} and forgot that order {the_order.order_number} may exist"
            if state is State.NEEDS_ATTENTION:
                event(f"needs attention with an order ({purchase['failure_code']})")

        # 5. Live purchases have a next action time; terminal and held ones have none.
        for pid, purchase in purchases.items():
            assert purchase["has_next_action"] == (State(purchase["state"]) in NEXT_STEP), \
                f"{pid} is {purchase['state']}, has_next_action={purchase['has_next_action']}"
        self.healthy = True

    # ---- liveness ----------------------------------------------------------------------

    def _settle(self) -> None:
        self.fake.calm()  # the list still lags and carts still expire: that is how TM is, not a fault
        while self.fake.deferred:  # commits TM still holds are processed (or refused) now
            self.fake.land_deferred()
        self.invariants_hold()
        rounds = 0
        while True:
            rounds += 1
            self._tick()
            delivered = 0
            while self.queue:
                delivered += 1
                assert delivered < 200, f"messages still retried after {delivered} deliveries: {self.queue[:5]}"
                self._deliver(*self.queue.pop(0))
            self.invariants_hold()
            states = {pid: State(p.state) for pid, p in self._load().items()}
            if all(s in TERMINAL or s in HELD_FOR_OPERATOR for s in states.values()):
                break
            assert rounds < LIVENESS_ROUNDS, f"still live after {rounds} rounds without faults: {states}"
            self._time_passes(self._until_due())
        loaded = self._load()
        for pid, sid in zip(self.purchases, self.sids, strict=True):
            purchase = loaded[pid]
            state = State(purchase.state)
            event(f"ended {state}" + (f" ({purchase.failure_code})" if purchase.failure_code else ""))
            if state in HELD_FOR_OPERATOR:
                assert purchase.failure_code or purchase.last_error, f"{pid} is {state} without a reason"
            if state is State.FAILED:
                assert purchase.failure_code and purchase.failure_message, f"{pid} failed without a reason"
            for o in self.fake.orders_of(sid):
                # Every order TM holds ends with its tickets issued under its number, or its purchase
                # waits for a person with the evidence kept (never FAILED, never bought again).
                if state is State.TICKETS_ISSUED:
                    assert purchase.order_id == o.order_number
                else:
                    assert state in HELD_FOR_OPERATOR and (
                        purchase.order_evidence is not None or purchase.order_id == o.order_number), \
                        f"order {o.order_number} of {pid}, which ended {state} with evidence {purchase.order_evidence}"
                    event(f"ended {state} with an order ({o.how})")
        note(f"settled after {rounds} rounds")


# Fewer examples than the profile's in `make test` (each runs tens of steps against Postgres); the
# "fuzz" profile (`make fuzz`) keeps its own count.  Derandomized, no database: from the profile.
CI_EXAMPLES = 100
_CI = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"
MACHINE_SETTINGS = TmPurchaseMachine.hypothesis_settings(**({"max_examples": CI_EXAMPLES} if _CI else {}),
                                                        stateful_step_count=50)

TestTmPurchases = TmPurchaseMachine.TestCase
TestTmPurchases.settings = MACHINE_SETTINGS


class InlineTmPurchaseMachine(TmPurchaseMachine):
    """Production's defaults: the intake worker stores a purchase born claimed, reserves and pays
    in line and commits in line after that (QUOTE_AFTER_INTAKE_INLINE, ORDER_AFTER_QUOTE_INLINE); a
    crash there is the intake or quote worker's, whose message is redelivered."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = self.settings.model_copy(update={"order_after_quote_inline": True,
                                                         "quote_after_intake_inline": True})


TestTmPurchasesInline = InlineTmPurchaseMachine.TestCase
TestTmPurchasesInline.settings = MACHINE_SETTINGS


# The operator's absence policy in the absence-policy machine (issue 20): longer than every lag of the
# unredeemed list it meets (TM_ABSENCE_LAGS), so that a complete, empty list that long after the cart's
# hold ended proves there is no order; the lookups of an unknown order (about 15 min) outlast it.
# (A list that lags past the grace is the risk the operator accepts: TBB's AbsencePolicyMachine meets it.)
TM_ABSENCE_GRACE = 450.0
TM_ABSENCE_LAGS = st.sampled_from([0.0, 90.0, 400.0])
TM_SHORT_HOLDS = st.sampled_from([300.0, 150.0])


class AbsenceTmPurchaseMachine(TmPurchaseMachine):
    """The same machine with ORDER_ABSENCE_GRACE_SECONDS set: an unknown commit whose cart's hold ended
    that long ago, and which the unredeemed list (which covers it) does not show, goes back to
    reserving.  Judged at each such transition (`_absence_policy_requoted`): the policy's alone (the
    grace passed since the hold ended, the purchase had no evidence that an order exists, no order
    number hint), and true -- TM holds no order of the purchase and no commit of it.  So even with the
    policy: never two orders, never a reserve while an order may exist."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = self.settings.model_copy(update={"order_absence_grace_seconds": TM_ABSENCE_GRACE})
        self.exists_seen: set[uuid.UUID] = set()  # purchases an order is known to exist for (`evidence_seen`)
        self.requoted_at: dict[str, Any] = {}  # sid -> the clock when the policy sent it back to reserving

    @initialize(hold=TM_SHORT_HOLDS, lag=TM_ABSENCE_LAGS, numbers=st.booleans(), extension=EXTENSIONS, zone=ZONES,
                price=PRICES, deadline_soon=DEADLINE_SOON)
    def first_purchase(self, hold: float, lag: float, numbers: bool, extension: float, zone: str | None,
                       price: str | None, deadline_soon: bool) -> None:
        super().first_purchase(hold=hold, lag=lag, numbers=numbers, extension=extension, zone=zone, price=price,
                               deadline_soon=deadline_soon)

    def _absence_policy_requoted(self, purchase_id: uuid.UUID, row_id: int, state: State) -> bool:
        if state is not State.RECEIVED:
            return False
        sid = self.sids[self.purchases.index(purchase_id)]
        purchase = self._get(purchase_id)
        if self.fake.may_have_bought(sid) and not self._definitely_refused(sid):
            # Not the commit's own refusal: it must be the policy's, and right.
            assert not self.fake.orders_of(sid) and not self.fake.commit_pending(sid), \
                f"{purchase_id}: back to reserving (row {row_id}) under the absence policy while TM holds " \
                f"{self.fake.orders_of(sid) or 'a commit of it'}"
            assert purchase_id not in self.exists_seen, \
                f"{purchase_id}: back to reserving (row {row_id}) although an order was known to exist"
            assert purchase.quote_expires_at is None or self.clock() >= purchase.quote_expires_at + dt.timedelta(
                seconds=TM_ABSENCE_GRACE), f"{purchase_id}: back to reserving (row {row_id}) under the absence " \
                f"policy before its grace passed (the cart's hold ended at {purchase.quote_expires_at})"
            self.requoted_at[sid] = self.clock()
            event("re-reserved under the absence policy")
            return True
        return False

    def _definitely_refused(self, sid: str) -> bool:
        """The last commit of this purchase was refused definitely (its own answer reached us)."""
        mine = [c for c in self.fake.commits if c.source_account_id == sid]
        return bool(mine) and mine[-1].told == "refused"

    def _may_have_bought(self, sid: str) -> bool:
        """As TmPurchaseMachine's, except that commits sent before the policy sent the purchase back
        to reserving count by what TM holds (the policy's judgement, `_absence_policy_requoted`)."""
        since = self.requoted_at.get(sid)
        if since is None:
            return self.fake.may_have_bought(sid)
        return bool(self.fake.orders_of(sid)) or self.fake.commit_pending(sid) or any(
            commit.told in ("unknown", "ordered") for commit in self.fake.commits
            if commit.source_account_id == sid and commit.at >= since)

    @invariant()
    def evidence_seen(self) -> None:
        """The purchases an order is known to exist for (evidence "exists", or an order number hint)."""
        for pid in self.purchases:
            purchase = self._get(pid)
            hinted = bool((purchase.partner_data or {}).get("order_number_hint"))
            if purchase.order_evidence == "exists" or hinted:
                self.exists_seen.add(pid)
            elif purchase.order_evidence is None:
                self.exists_seen.discard(pid)


TestTmPurchasesAbsencePolicy = AbsenceTmPurchaseMachine.TestCase
TestTmPurchasesAbsencePolicy.settings = TmPurchaseMachine.hypothesis_settings(
    **({"max_examples": CI_EXAMPLES // 2} if _CI else {}), stateful_step_count=50)


# ---- scripted regressions ------------------------------------------------------------------


@pytest.fixture
def machine() -> Iterator[TmPurchaseMachine]:
    machine = TmPurchaseMachine()
    yield machine
    machine.close()


def _step(machine: TmPurchaseMachine, step: str, *faults: tuple[str, Fault | str], index: int = 0) -> State:
    """Deliver one message for a purchase (its TM calls meet `faults`, in order), check every
    invariant, return the purchase's state."""
    purchase_id = machine.purchases[index]
    for operation, fault in faults:
        machine.fake.plan(operation, fault)
    machine._deliver(step, purchase_id)
    machine.invariants_hold()
    return machine._state(purchase_id)


def _quoted(machine: TmPurchaseMachine, **example: Any) -> uuid.UUID:
    machine.first_purchase(**{"hold": 3600.0, "lag": 0.0, "numbers": False, "extension": 0.0,
                              "zone": "America/Los_Angeles", "price": None, "deadline_soon": False, **example})
    assert _step(machine, "quote_purchase") is State.QUOTED
    return machine.purchases[0]


def _order_of(machine: TmPurchaseMachine, index: int = 0) -> list[FakeOrder]:
    return machine.fake.orders_of(machine.sids[index])


def test_the_fake_refuses_a_commit_on_an_expired_cart_like_tm() -> None:
    """The fake itself (no database): TM's 90003 for a cart whose hold ended, and the violation noted."""
    clock = Clock()
    fake = FakeTicketmaster(clock=clock, hold_seconds=60)
    request = ReserveRequest(tickets=(ReserveTicket(ticket_type_id="000000000001", quantity=1, price_level_id="1"),))
    cart = fake.reserve("E1", request, request_id="r", deadline=0.0)
    assert isinstance(cart, Cart) and cart.hold_time_seconds == 60
    clock.advance(61)
    with pytest.raises(CartInvalid) as refused:
        fake.commit("E1", cart.cart_id, "sid-1", request_id="c", deadline=0.0)
    assert refused.value.tm_code == 90003 and is_commit_definite(refused.value)
    assert fake.orders == {} and len(fake.violations) == 1 and "expired" in fake.violations[0]


def test_a_commit_answered_202_is_polled_to_its_tickets(machine: TmPurchaseMachine) -> None:
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", Fault("polling", wait_seconds=30, repeats=1))) \
        is State.ORDER_UNKNOWN
    [the_order] = _order_of(machine)  # TM did the work when it answered 202
    # Asked before the wait is over: parked, TM is not polled early.
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN
    machine._time_passes(31)
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN  # one more 202
    machine._time_passes(31)
    assert _step(machine, "resolve_order") is State.AWAITING_TICKETS
    assert _step(machine, "fetch_tickets") is State.TICKETS_ISSUED
    assert machine._get(purchase_id).order_id == the_order.order_number
    assert machine.fake.early_polls == 0 and len(machine.fake.calls_of("commit")) == 1


@pytest.mark.parametrize("numbers", [False, True])
def test_a_lost_commit_answer_waits_for_the_lagging_list_and_never_buys_again(machine: TmPurchaseMachine,
                                                                              numbers: bool) -> None:
    purchase_id = _quoted(machine, lag=400.0, numbers=numbers)
    assert _step(machine, "place_order", ("commit", "lost")) is State.ORDER_UNKNOWN
    [the_order] = _order_of(machine)
    # The unredeemed list lags: nothing proves anything, the purchase waits (lookups parked).
    machine._time_passes(LEASE + 1)
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN
    machine._time_passes(400)
    # Found by its source_account_id, without the token: a person gets the tickets from TM.
    assert _step(machine, "resolve_order") is State.NEEDS_ATTENTION
    purchase = machine._get(purchase_id)
    assert (purchase.failure_code, purchase.order_evidence) == ("ORDER_TOKEN_UNKNOWN", "exists")
    assert purchase.order_id == (the_order.order_number if numbers else None)
    assert len(machine.fake.calls_of("commit")) == 1 and len(machine.fake.calls_of("reserve")) == 1


def test_a_commit_processed_later_lands_while_the_purchase_resolves(machine: TmPurchaseMachine) -> None:
    purchase_id = _quoted(machine, lag=90.0)
    assert _step(machine, "place_order", ("commit", "deferred")) is State.ORDER_UNKNOWN
    assert _order_of(machine) == [] and machine.fake.commit_pending(machine.sids[0])
    machine._time_passes(LEASE + 1)
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN  # nothing yet: never bought again
    assert machine.fake.land_deferred().outcome.startswith("created")  # type: ignore[union-attr]
    machine._time_passes(LEASE + 1)
    assert _step(machine, "resolve_order") is State.NEEDS_ATTENTION
    assert machine._get(purchase_id).order_evidence == "exists"
    assert len(_order_of(machine)) == 1 and len(machine.fake.calls_of("reserve")) == 1


def test_a_cart_expiring_before_its_commit_is_reserved_again_never_committed(machine: TmPurchaseMachine) -> None:
    purchase_id = _quoted(machine, hold=150.0)
    machine._time_passes(LEASE + 1)  # 29 s left: within the safety margin
    assert _step(machine, "place_order") is State.RECEIVED
    assert machine.fake.calls_of("commit") == []
    assert _step(machine, "quote_purchase") is State.QUOTED
    assert _step(machine, "place_order") is State.AWAITING_TICKETS
    assert _step(machine, "fetch_tickets") is State.TICKETS_ISSUED
    [the_order] = _order_of(machine)
    assert machine._get(purchase_id).order_id == the_order.order_number
    assert the_order.cart_id != machine.fake.calls_of("reserve")[0].cart_id or len(machine.fake.carts) == 2


@pytest.mark.parametrize("refusal", ["rate_limited", "maintenance"])
def test_a_refused_poll_of_a_commit_waits_and_never_buys_again(machine: TmPurchaseMachine, refusal: str) -> None:
    """The commit is answered 202 (TM made the order), then the GET of its polling URL is refused at
    the gateway (429) or during niterun (20001): a refusal of the poll, not of the commit.  The machine
    found the double order this was (ORDER_UNKNOWN -> RECEIVED, a new cart, a second commit) in an
    earlier version of TicketmasterFlow.resolve, which took it for the commit's own refusal."""
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", "polling")) is State.ORDER_UNKNOWN
    [the_order] = _order_of(machine)
    machine._time_passes(LEASE + 1)
    assert _step(machine, "resolve_order", ("poll_commit", refusal)) is State.ORDER_UNKNOWN  # parked
    machine._time_passes(machine._until_due())
    assert _step(machine, "resolve_order") is State.AWAITING_TICKETS
    assert _step(machine, "fetch_tickets") is State.TICKETS_ISSUED
    assert _order_of(machine) == [the_order] and len(machine.fake.calls_of("reserve")) == 1
    assert machine._get(purchase_id).order_id == the_order.order_number


def test_a_commit_refused_by_its_polled_answer_reserves_again_once(machine: TmPurchaseMachine) -> None:
    """A commit answered 202 whose processing TM then refused (SoldOut): its own definite answer proves
    it bought nothing, so the purchase may reserve again, and buys at most once.  (An earlier version
    of the flow recorded FAILED from ORDER_UNKNOWN here, a transition the state machine forbids.)"""
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", "polling_refused")) is State.ORDER_UNKNOWN
    assert _order_of(machine) == []
    machine._time_passes(LEASE + 1)
    assert _step(machine, "resolve_order") is State.RECEIVED  # the refusal proves no order: reserve again
    assert len(machine.fake.calls_of("reserve")) == 1  # not yet: the quote step reserves
    machine._settle()
    purchase = machine._get(purchase_id)
    [the_order] = _order_of(machine)
    # Once: one more reserve and one more commit, which bought the one order.
    assert len(machine.fake.calls_of("reserve")) == 2 and len(machine.fake.calls_of("commit")) == 2
    assert State(purchase.state) is State.TICKETS_ISSUED and purchase.order_id == the_order.order_number
    assert the_order.cart_id == machine.fake.calls_of("commit")[1].cart_id


@pytest.mark.parametrize("refusal", [Fault("not_found"), Fault("rate_limited"), Fault("maintenance")])
def test_order_management_refusing_an_existing_order_holds_it_never_fails_it(machine: TmPurchaseMachine,
                                                                             refusal: Fault) -> None:
    """The order exists: a refusal from order management (a 404 while it lags behind the commit, a
    429, niterun) makes the purchase wait or go to a person, never fail.  (An earlier version of the
    flow recorded FAILED from AWAITING_TICKETS on a 404, a transition the state machine forbids.)"""
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order") is State.AWAITING_TICKETS
    assert _step(machine, "fetch_tickets", ("order_tickets", refusal)) in (State.AWAITING_TICKETS,
                                                                           State.NEEDS_ATTENTION)
    machine._settle()
    assert State(machine._get(purchase_id).state) in (State.TICKETS_ISSUED, State.NEEDS_ATTENTION)


# ---- a bug of the flow found by this test, fixed (TicketmasterFlow._poll) -------------------------
# A reserve's forgotten URL came back as TmOutcomeUnknown (no cart id, no cart yet) and order
# management's as PollingExpired; both ended in release_and_retry, which kept partner_data.pending, so
# every later step polled the same dead URL and the purchase never ended.


@pytest.mark.parametrize("operation", ["reserve", "order_tickets"])
def test_a_polling_url_tm_forgot_is_given_up(machine: TmPurchaseMachine, operation: str) -> None:
    """TM forgets a polling URL (404/410 from then on): the purchase must get past it -- reserve again,
    ask order management again -- rather than poll the dead URL at every step (GONE_READ_AND_RESERVE_POLLS
    lets the machine meet it: its liveness run fails)."""
    machine.first_purchase(hold=3600.0, lag=0.0, numbers=False, extension=0.0, zone="America/Los_Angeles",
                           price=None, deadline_soon=False)
    if operation == "reserve":
        assert _step(machine, "quote_purchase", ("reserve", "polling")) is State.RECEIVED
        step = "quote_purchase"
    else:
        assert _step(machine, "quote_purchase") is State.QUOTED
        assert _step(machine, "place_order") is State.AWAITING_TICKETS
        assert _step(machine, "fetch_tickets", ("order_tickets", "polling")) is State.AWAITING_TICKETS
        step = "fetch_tickets"
    machine._time_passes(LEASE + 1)
    machine.fake.plan(f"poll_{operation}", "gone")  # TM forgets the URL
    for _ in range(10):  # no more faults: the purchase must get past it (reserve again / ask again)
        machine._time_passes(LEASE + 1)
        machine._deliver(step, machine.purchases[0])
        machine.invariants_hold()
    polls = machine.fake.calls_of(f"poll_{operation}")
    assert len(polls) < 3, f"the dead polling URL was polled {len(polls)} times"
    assert machine._state(machine.purchases[0]) in (State.QUOTED, State.TICKETS_ISSUED)


# ---- issue 20: the hand-made mutant M12 -----------------------------------------------------------


def _poll_commit_fails(machine: TmPurchaseMachine, status: int) -> None:
    """The next poll of a commit fails as the real client reports it (api.py: a commit's poll whose
    URL is gone, 404/410, or answered 5xx is TmOutcomeUnknown); TM's own state is untouched."""
    real_poll = machine.fake.poll

    def poll(url: str, **kwargs: Any) -> Any:
        machine.fake.poll = real_poll  # type: ignore[method-assign]  # once
        if kwargs["expect"] is Operation.COMMIT:
            raise unknown(str(status), f"poll_commit: HTTP {status}", operation="commit", status=status,
                          cart_id=kwargs.get("cart_id"))
        return real_poll(url, **kwargs)

    machine.fake.poll = poll  # type: ignore[method-assign]


@pytest.mark.parametrize("failure", ["gone", "410", "502", "504"])
def test_m12_a_commit_answered_202_whose_poll_fails_never_reserves_again(machine: TmPurchaseMachine,
                                                                         failure: str) -> None:
    """M12 (a TmOutcomeUnknown raised while polling a commit taken for the commit's refusal, in
    TicketmasterFlow.resolve): the commit is answered 202 (TM made the order), then its poll fails
    with 404/410 (the URL is gone) or a 5xx.  Neither says anything about the commit: exactly one
    commit, the purchase never reserves again, and it ends with that order's tickets or held for a
    person with the evidence -- whether the flow polls the URL again or looks among unredeemed orders."""
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", "polling")) is State.ORDER_UNKNOWN
    [the_order] = _order_of(machine)
    machine._time_passes(LEASE + 1)
    if failure == "gone":
        machine.fake.plan("poll_commit", "gone")
    else:
        _poll_commit_fails(machine, int(failure))
    assert _step(machine, "resolve_order") in MAY_HOLD_ORDER
    machine._settle()
    purchase = machine._get(purchase_id)
    assert _order_of(machine) == [the_order]
    assert len(machine.fake.calls_of("commit")) == 1 and len(machine.fake.calls_of("reserve")) == 1
    assert State(purchase.state) in (State.TICKETS_ISSUED, State.NEEDS_ATTENTION)
    if State(purchase.state) is State.NEEDS_ATTENTION:
        assert purchase.order_evidence == "exists"


def drawn(operation: str, kind: str, *, wait: float = 4.0, repeats: int = 0) -> Drawn:
    """The FAULTS draw that plans `kind` for `operation` (as `trouble_ahead` reads it)."""
    kinds = WEIGHTED[operation]
    index = -(-kinds.index(kind) * SPREAD // len(kinds))  # the first draw that lands on it
    assert kinds[index * len(kinds) // SPREAD] == kind
    return (0, index, wait, repeats, 30.0, 1)


def test_m12_replayed_example() -> None:
    """M12 as a fixed example of the machine itself (its rules, invariants and liveness run): the
    commit is answered 202, then TM forgets the polling URL (404)."""
    replay(TmPurchaseMachine(), [
        ("first_purchase", {"hold": 3600.0, "lag": 0.0, "numbers": False, "extension": 0.0,
                            "zone": "America/Los_Angeles", "price": None, "deadline_soon": False}),
        ("deliver", {"index": 0, "stale": None, "fault": None}),  # reserved and paid: quoted
        ("trouble_ahead", {"operation": "commit", "fault": drawn("commit", "polling"), "times": 1}),
        ("deliver", {"index": 0, "stale": None, "fault": None}),  # commit: 202
        ("time_passes", {"how": "lease"}),
        ("trouble_ahead", {"operation": "poll_commit", "fault": drawn("poll_commit", "gone"), "times": 1}),
        ("deliver", {"index": 0, "stale": None, "fault": None}),  # its poll: the URL is gone
        ("time_passes", {"how": "lease"}),
        ("broker", {"messages": 2, "position": 0, "how": "deliver", "fault": None}),
    ])


@pytest.mark.parametrize(("refusal", "then", "why"), [
    ("sold_out", State.FAILED, "partner refused the commit: "),
    ("payment_refused", State.PAUSED, "account cannot commit: "),
    ("cart_invalid", State.RECEIVED, "cart {cart} no longer valid at commit ("),
    ("rate_limited", State.RECEIVED, "commit refused unprocessed ("),
])
def test_a_definite_refusal_of_the_one_commit_leaves_the_order_path(machine: TmPurchaseMachine, refusal: str,
                                                                    then: State, why: str) -> None:
    """The one commit of the cart, refused definitely (assumed.COMMIT_DEFINITE_CODES, or a 429), bought
    nothing: sold out fails, a refused payment pauses, an invalid cart or a quota reserves again -- the
    order evidence cleared, the partner's error kept, the history naming the message and why.  An
    invalid cart is reserved again at once.  (No focused test had it: mutation testing.)"""
    purchase_id = _quoted(machine)
    cart = machine._get(purchase_id).quote_id
    machine.queue.clear()
    assert _step(machine, "place_order", ("commit", refusal)) is then
    purchase = machine._get(purchase_id)
    assert _order_of(machine) == [] and len(machine.fake.calls_of("commit")) == 1
    assert purchase.order_evidence is None
    row = _tm_last_row(purchase_id)
    assert row.reason.startswith(why.format(cart=cart)) and (row.message_id or "").startswith("msg-")
    code = row.reason.split("(")[1].split(")")[0] if then is State.RECEIVED else row.reason.split(": ")[-1]
    assert code and code in (purchase.failure_code if then is State.FAILED else purchase.last_error or "")
    assert "cart" not in purchase.partner_data or refusal == "rate_limited"  # the refused cart is forgotten
    if refusal == "cart_invalid":
        assert row.reason.endswith("; reserving again")
        assert machine.queue == [("quote_purchase", purchase_id)]


# ---- issue 20: the absence policy (ORDER_ABSENCE_GRACE_SECONDS) ---------------------------------------


@pytest.fixture
def absence_machine() -> Iterator[AbsenceTmPurchaseMachine]:
    machine = AbsenceTmPurchaseMachine()
    yield machine
    machine.close()


def test_absence_policy_waits_for_its_grace_while_the_list_lags(absence_machine: AbsenceTmPurchaseMachine) -> None:
    """The commit made the order and its answer was lost; the unredeemed list lags 400 s.  The cart's
    hold ended, but not the grace: the empty list proves nothing, the purchase never reserves again;
    once the list shows the order, a person gets its tickets."""
    machine = absence_machine
    purchase_id = _quoted(machine, hold=150.0, lag=400.0)
    assert _step(machine, "place_order", ("commit", "lost")) is State.ORDER_UNKNOWN
    [the_order] = _order_of(machine)
    machine._time_passes(200)  # the hold ended 50 s ago; the list still hides the order
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN
    assert len(machine.fake.calls_of("reserve")) == 1
    machine._time_passes(TM_ABSENCE_GRACE)  # the grace passed; the list shows the order by now
    assert _step(machine, "resolve_order") is State.NEEDS_ATTENTION
    purchase = machine._get(purchase_id)
    assert (purchase.failure_code, purchase.order_evidence) == ("ORDER_TOKEN_UNKNOWN", "exists")
    assert _order_of(machine) == [the_order] and len(machine.fake.calls_of("reserve")) == 1


def test_absence_policy_reserves_again_once_the_list_proves_no_order(absence_machine: AbsenceTmPurchaseMachine) -> None:
    """The policy itself: a commit whose outcome stayed unknown (TM made no order), the cart's hold ended
    more than the grace ago, the complete list is empty: the purchase reserves again and buys once."""
    machine = absence_machine
    purchase_id = _quoted(machine, hold=150.0, lag=90.0)
    assert _step(machine, "place_order", ("commit", "unknown")) is State.ORDER_UNKNOWN
    assert _order_of(machine) == []
    machine._time_passes(150 + TM_ABSENCE_GRACE + 1)
    assert _step(machine, "resolve_order") is State.RECEIVED
    machine._settle()
    [the_order] = _order_of(machine)
    assert machine._get(purchase_id).order_id == the_order.order_number
    assert len(machine.fake.calls_of("reserve")) == 2


def test_absence_policy_sends_the_new_reservation_at_once_from_the_message_that_proved_absence(
        absence_machine: AbsenceTmPurchaseMachine) -> None:
    """The re-reservation the policy allows is sent by the message that proved the absence (not left to
    the scheduler), and the history names that message."""
    machine = absence_machine
    purchase_id = _quoted(machine, hold=150.0, lag=90.0)
    assert _step(machine, "place_order", ("commit", "unknown")) is State.ORDER_UNKNOWN
    before = machine._get(purchase_id)
    assert before.order_evidence == "may_exist" and "cart" in before.partner_data
    machine._time_passes(150 + TM_ABSENCE_GRACE + 1)
    machine.queue.clear()
    assert _step(machine, "resolve_order") is State.RECEIVED
    assert machine.queue == [("quote_purchase", purchase_id)]
    row = _tm_last_row(purchase_id)
    assert row.to_state == "received" and (row.message_id or "").startswith("msg-")
    assert row.reason.startswith(f"no unredeemed order from cart {before.quote_id}, whose hold ended more than ")
    assert row.reason.endswith(" ago (ORDER_ABSENCE_GRACE_SECONDS policy); reserving again")
    after = machine._get(purchase_id)  # the old cart is forgotten, and so is the evidence
    assert after.order_evidence is None and "cart" not in after.partner_data


def test_absence_proved_for_a_purchase_taken_over_meanwhile_sends_no_new_reservation(
        absence_machine: AbsenceTmPurchaseMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The list proves the absence, but the claim passed to another worker while it was read: this
    worker records nothing (fenced) and sends no reservation for a purchase it no longer holds."""
    machine = absence_machine
    purchase_id = _quoted(machine, hold=150.0, lag=90.0)
    assert _step(machine, "place_order", ("commit", "unknown")) is State.ORDER_UNKNOWN
    machine._time_passes(150 + TM_ABSENCE_GRACE + 1)
    _taken_over_around(monkeypatch, machine.fake, "unredeemed_orders", purchase_id)
    machine.queue.clear()
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN  # the new owner's to resolve
    assert ("quote_purchase", purchase_id) not in machine.queue
    assert len(machine.fake.calls_of("reserve")) == 1


@pytest.mark.parametrize(("fault", "why"), [
    ("transient", "the unredeemed-orders lookup failed: "),
    ("polling", "the unredeemed-orders lookup answered 202"),
])
def test_an_unredeemed_lookup_that_fails_or_answers_202_proves_nothing_and_says_so(
        absence_machine: AbsenceTmPurchaseMachine, fault: str, why: str) -> None:
    """Even with the absence policy on and its grace passed, a lookup that failed or answered 202 is no
    list at all: the purchase waits (its cart kept), with the reason, for the next lookup."""
    machine = absence_machine
    purchase_id = _quoted(machine, hold=150.0, lag=90.0)
    assert _step(machine, "place_order", ("commit", "unknown")) is State.ORDER_UNKNOWN
    cart = machine._get(purchase_id).partner_data["cart"]
    machine._time_passes(150 + TM_ABSENCE_GRACE + 1)
    machine.queue.clear()
    assert _step(machine, "resolve_order", ("unredeemed_orders", fault)) is State.ORDER_UNKNOWN
    purchase = machine._get(purchase_id)
    assert (purchase.last_error or "").startswith(why) and purchase.partner_data["cart"] == cart
    assert purchase.claimed_until is None and machine.queue == []  # parked: the scheduler looks again
    assert len(machine.fake.calls_of("reserve")) == 1


def test_an_empty_unredeemed_list_proves_nothing_without_the_absence_policy(machine: TmPurchaseMachine) -> None:
    """The commit's answer was lost and the list shows no order from this purchase: without the
    operator's absence policy that proves nothing (the list may lag), and the purchase says so."""
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", "unknown")) is State.ORDER_UNKNOWN
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN
    purchase = machine._get(purchase_id)
    assert purchase.last_error == ("no unredeemed order carries its source_account_id (a lookup may lag behind a "
                                   "commit: that proves nothing)")
    assert len(machine.fake.calls_of("reserve")) == 1


def test_a_wait_for_a_purchase_taken_over_meanwhile_is_noted_late_by_its_message(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The list shows nothing yet (the purchase would wait), but the claim passed to another worker
    while it was read: the wait is not written (fenced), it is noted late, naming the message."""
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", "unknown")) is State.ORDER_UNKNOWN
    before = machine._get(purchase_id).last_error
    _taken_over_around(monkeypatch, machine.fake, "unredeemed_orders", purchase_id)
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN
    assert machine._get(purchase_id).last_error == before  # not this worker's to write
    row = _tm_last_row(purchase_id)
    assert row.kind == "late_answer" and (row.message_id or "").startswith("msg-")
    assert "would have waited" in row.reason and "no unredeemed order carries its source_account_id" in row.reason


@pytest.mark.parametrize("meanwhile", [None, "taken_over"])
def test_a_commit_polled_before_tms_wait_is_over_waits_for_it(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch, meanwhile: str | None) -> None:
    """A resolution that comes before the 202's wait is over does not poll: it waits until then, saying
    so; if the purchase was taken over meanwhile, the wait is noted late, by its message."""
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", Fault("polling", wait_seconds=600))) is State.ORDER_UNKNOWN
    not_before = machine._get(purchase_id).partner_data["pending"]["not_before"]
    if meanwhile:
        from fulfilment.partners.ticketmaster.flow import commit as commit_module

        _taken_over_around(monkeypatch, commit_module, "park", purchase_id, before=True)
    before = len(machine.fake.calls_of("poll"))
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN
    assert len(machine.fake.calls_of("poll")) == before  # not polled before TM's wait is over
    why = f"commit answered 202: polling again at {not_before}"
    row = _tm_last_row(purchase_id)
    if meanwhile:
        assert row.kind == "late_answer" and why in row.reason and (row.message_id or "").startswith("msg-")
    else:
        assert machine._get(purchase_id).last_error == why


def _polled_commit(machine: TmPurchaseMachine, poll_fault: str) -> uuid.UUID:
    """A commit answered 202 whose poll, once TM's wait is over, meets `poll_fault`."""
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", "polling")) is State.ORDER_UNKNOWN
    machine._time_passes(LEASE + 1)
    machine.fake.plan("poll_commit", poll_fault)
    return purchase_id


@pytest.mark.parametrize(("poll_fault", "why"), [
    ("again", "commit still processing (202)"),
    ("transient", "polling the commit failed: "),
    ("rate_limited", "polling the commit refused ("),
    ("maintenance", "polling the commit refused ("),
])
def test_a_commit_poll_without_a_definite_answer_keeps_the_url_and_says_why(
        machine: TmPurchaseMachine, poll_fault: str, why: str) -> None:
    """Another 202, a failed poll, a poll refused by the quota or niterun: nothing is known of the
    commit yet.  The URL and when the commit was sent are kept, and the purchase says why it waits."""
    purchase_id = _polled_commit(machine, poll_fault)
    pending = dict(machine._get(purchase_id).partner_data["pending"])
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN
    purchase = machine._get(purchase_id)
    kept = purchase.partner_data["pending"]
    assert (kept["url"], kept["sent_at"], kept["operation"]) == (pending["url"], pending["sent_at"], "commit")
    assert (purchase.last_error or "").startswith(why)
    if why.startswith("polling the commit refused"):
        assert "); polling again in " in (purchase.last_error or "")
    assert len(machine.fake.calls_of("commit")) == 1


def test_a_refused_poll_for_a_purchase_taken_over_meanwhile_is_noted_late_by_its_message(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    purchase_id = _polled_commit(machine, "rate_limited")
    from fulfilment.partners.ticketmaster.flow import commit as commit_module

    _taken_over_around(monkeypatch, commit_module, "park", purchase_id, before=True)
    assert _step(machine, "resolve_order") is State.ORDER_UNKNOWN
    row = _tm_last_row(purchase_id)
    assert row.kind == "late_answer" and "polling the commit refused (" in row.reason
    assert (row.message_id or "").startswith("msg-")


def test_a_gone_polling_url_is_forgotten_even_when_the_order_is_then_found(machine: TmPurchaseMachine) -> None:
    """TM says the URL is gone (404/410), and the unredeemed list shows the order: the purchase is
    handed to a person with the order, its data kept -- without the dead URL (never polled again)."""
    machine.fake.unredeemed_numbers = True
    purchase_id = _polled_commit(machine, "gone")
    cart = machine._get(purchase_id).partner_data["cart"]
    assert _step(machine, "resolve_order") is State.NEEDS_ATTENTION
    purchase = machine._get(purchase_id)
    assert purchase.failure_code == "ORDER_TOKEN_UNKNOWN" and purchase.order_evidence == "exists"
    assert "pending" not in purchase.partner_data and purchase.partner_data["cart"] == cart


def test_a_quoted_purchase_without_its_cart_reserves_again_never_commits(machine: TmPurchaseMachine) -> None:
    """QUOTED, but its data holds no cart (nothing to commit): it reserves again, however long the
    quote's hold would still last -- never a commit of nothing."""
    purchase_id = _quoted(machine)
    from fulfilment.db import session_scope

    with session_scope() as session:
        session.execute(text("UPDATE purchases SET partner_data = partner_data - 'cart' WHERE id = :id"),
                        {"id": purchase_id})
    machine.queue.clear()
    assert _step(machine, "place_order") is State.RECEIVED
    assert machine.fake.calls_of("commit") == [] and machine.queue == [("quote_purchase", purchase_id)]
    row = _tm_last_row(purchase_id)
    assert (row.message_id or "").startswith("msg-") and row.reason.endswith(" s safety margin; reserving again")


def test_a_cart_too_close_to_its_end_for_a_purchase_taken_over_meanwhile_is_noted_late(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cart's hold ends within the margin (no commit), and the claim passed on while the cart was
    deleted: the re-reservation is not this worker's to record; it is noted late, by its message."""
    purchase_id = _quoted(machine, hold=150.0)
    machine._time_passes(150.0)
    _taken_over_around(monkeypatch, machine.fake, "delete_cart", purchase_id)
    machine.queue.clear()
    assert _step(machine, "place_order") is State.QUOTED  # the new owner's
    assert machine.fake.calls_of("commit") == [] and machine.queue == []
    row = _tm_last_row(purchase_id)
    assert row.kind == "late_answer" and (row.message_id or "").startswith("msg-")
    assert row.reason.endswith("cart too close to its hold's end, not re-reserved by this worker")


def test_a_commit_answered_202_then_polled_records_its_order_by_the_polling_message(machine: TmPurchaseMachine) -> None:
    purchase_id = _polled_commit(machine, "ok")
    assert _step(machine, "resolve_order") is State.AWAITING_TICKETS
    purchase = machine._get(purchase_id)
    assert len(_order_of(machine)) == 1 and "pending" not in purchase.partner_data
    row = _tm_last_row(purchase_id)
    assert (row.to_state, row.reason) == ("awaiting_tickets", f"order {purchase.order_id} committed")
    assert (row.message_id or "").startswith("msg-")


def test_a_commit_answered_at_once_records_its_order_saying_so_by_its_message(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The intent (ORDERING, by the message, naming the cart) is recorded before the commit, and the
    claim is held through the call (no one else may take the purchase while its commit is in flight);
    then the order, by the same message."""
    purchase_id = _quoted(machine)
    cart = machine._get(purchase_id).quote_id
    commit = machine.fake.commit
    during: list[Any] = []

    def commit_seen_from_the_database(*args: Any, **kwargs: Any) -> Any:
        during.append(machine._get(purchase_id))
        return commit(*args, **kwargs)

    monkeypatch.setattr(machine.fake, "commit", commit_seen_from_the_database)
    assert _step(machine, "place_order") is State.AWAITING_TICKETS
    [seen] = during
    assert seen.state == "ordering" and seen.claim_token is not None and seen.claimed_until is not None
    purchase = machine._get(purchase_id)
    assert len(_order_of(machine)) == 1 and purchase.order_id
    intent, row = _tm_history(purchase_id)[-2:]
    assert (intent.to_state, intent.reason) == ("ordering", f"committing cart {cart}")
    assert (row.to_state, row.reason) == ("awaiting_tickets", f"order {purchase.order_id} committed")
    assert (row.message_id or "").startswith("msg-") and intent.message_id == row.message_id


def test_a_commit_answered_202_keeps_its_polling_url_and_says_so_by_its_message(machine: TmPurchaseMachine) -> None:
    purchase_id = _quoted(machine)
    cart = machine._get(purchase_id).quote_id
    assert _step(machine, "place_order", ("commit", "polling")) is State.ORDER_UNKNOWN
    purchase = machine._get(purchase_id)
    row = _tm_last_row(purchase_id)
    assert row.to_state == "order_unknown" and (row.message_id or "").startswith("msg-")
    assert row.reason.startswith(f"commit of cart {cart} answered 202: polling in ") and purchase.last_error == row.reason
    assert purchase.partner_data["pending"]["url"] and purchase.partner_data["pending"]["operation"] == "commit"


@pytest.mark.parametrize("meanwhile", ["taken_over", "held_for_a_person"])
def test_a_commit_202_for_a_purchase_taken_over_meanwhile_keeps_its_polling_url(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch, meanwhile: str) -> None:
    """The commit answered 202 after the claim passed to another worker: this worker cannot write
    ORDER_UNKNOWN, but the polling URL (the only way to the order token) is never dropped: it is in
    the history, by the message, and in the purchase's data for whoever resolves it.  One held for a
    person meanwhile is resolved again (the URL polled once TM's wait is over)."""
    purchase_id = _quoted(machine)
    cart = machine._get(purchase_id).quote_id
    commit = machine.fake.commit

    def answered_after_a_takeover(*args: Any, **kwargs: Any) -> Any:
        answer = commit(*args, **kwargs)
        _taken_over(purchase_id)
        if meanwhile == "held_for_a_person":  # the new owner hands it to a person
            from fulfilment import state_machine
            from fulfilment.db import session_scope
            from models import Purchase

            with session_scope() as session:
                state_machine.transition(session, session.get_one(Purchase, purchase_id), State.NEEDS_ATTENTION,
                                         reason="held by the new owner", message_id="other-msg",
                                         changes={"failure_code": "X", "failure_message": "held"})
        return answer

    monkeypatch.setattr(machine.fake, "commit", answered_after_a_takeover)
    held = meanwhile == "held_for_a_person"
    assert _step(machine, "place_order", ("commit", "polling")) is (State.ORDER_UNKNOWN if held else State.ORDERING)
    purchase = machine._get(purchase_id)
    if held:
        assert purchase.failure_code is None and purchase.next_action_at is not None
    url = purchase.partner_data["pending"]["url"]
    assert url and purchase.partner_data["pending"]["operation"] == "commit"
    rows = _tm_history(purchase_id)
    [late] = [row for row in rows if row.kind == "late_answer" and "answered 202 late" in row.reason]
    assert (late.message_id or "").startswith("msg-")
    assert f"commit of cart {cart} answered 202 late: polling URL {url}" in late.reason
    if held:
        assert (rows[-1].to_state, rows[-1].message_id) == ("order_unknown", late.message_id)


def test_an_order_number_in_an_unreadable_commit_answer_is_kept_and_used(
        absence_machine: AbsenceTmPurchaseMachine) -> None:
    """The commit made the order, but its answer could not be read; it still named the order's number
    (TmOutcomeUnknown.order_number: `order_number_hint`).  TM told us an order exists: the hint is kept,
    the absence policy never applies (even when the unredeemed list lags past its grace), and the
    person the purchase is handed to is told the order's number."""
    machine = absence_machine
    purchase_id = _quoted(machine, hold=150.0, lag=2000.0)
    assert _step(machine, "place_order", ("commit", "unreadable")) is State.ORDER_UNKNOWN
    [the_order] = _order_of(machine)
    purchase = machine._get(purchase_id)
    assert purchase.partner_data["order_number_hint"] == the_order.order_number
    assert purchase.order_evidence == "exists"
    machine._time_passes(150 + TM_ABSENCE_GRACE + 1)  # the grace passed; the list still hides the order
    for _ in range(10):
        state = _step(machine, "resolve_order")
        assert len(machine.fake.calls_of("reserve")) == 1 and _order_of(machine) == [the_order]
        if state is not State.ORDER_UNKNOWN:
            break
        machine._time_passes(machine._until_due())
    purchase = machine._get(purchase_id)
    assert (State(purchase.state), purchase.failure_code) == (State.NEEDS_ATTENTION, "ORDER_OUTCOME_UNKNOWN")
    assert the_order.order_number in purchase.failure_message
    assert purchase.partner_data["order_number_hint"] == the_order.order_number


def test_a_surprise_error_from_the_commit_call_is_an_unknown_outcome(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a partner error at all (a bug in our client, say): whether the commit left is not known, so
    the purchase is ORDER_UNKNOWN (evidence may_exist), the error kept -- never a crashed step with the
    purchase left ORDERING, never a refusal."""
    purchase_id = _quoted(machine)

    def surprise(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("order_token")

    monkeypatch.setattr(machine.fake, "commit", surprise)
    machine.queue.clear()
    assert _step(machine, "place_order") is State.ORDER_UNKNOWN
    purchase = machine._get(purchase_id)
    assert purchase.order_evidence == "may_exist" and "order_token" in (purchase.last_error or "")
    assert machine.queue == [("resolve_order", purchase_id)]  # the resolution is sent at once
    row = _tm_last_row(purchase_id)
    assert row.to_state == "order_unknown" and (row.message_id or "").startswith("msg-")
    monkeypatch.undo()
    assert len(machine.fake.calls_of("reserve")) == 1


def test_an_unknown_commit_outcome_for_a_purchase_taken_over_meanwhile_sends_no_resolution(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit call fails after the claim passed to another worker: nothing is recorded by this
    worker (fenced), and it sends no resolution for a purchase it no longer holds."""
    purchase_id = _quoted(machine)

    def taken_over_then_failed(*args: Any, **kwargs: Any) -> Any:
        _taken_over(purchase_id)
        raise KeyError("order_token")

    monkeypatch.setattr(machine.fake, "commit", taken_over_then_failed)
    machine.queue.clear()
    assert _step(machine, "place_order") is State.ORDERING  # the new owner's to resolve
    assert ("resolve_order", purchase_id) not in machine.queue


def _tm_history(purchase_id: uuid.UUID) -> list[Any]:
    from fulfilment import state_machine
    from fulfilment.db import session_scope

    with session_scope() as session:
        return state_machine.history(session, purchase_id)


def _tm_last_row(purchase_id: uuid.UUID) -> Any:
    return _tm_history(purchase_id)[-1]


def _taken_over(purchase_id: uuid.UUID) -> None:
    """Another worker holds the purchase now: its claim token changes under this worker's."""
    from fulfilment.db import session_scope

    with session_scope() as session:
        session.execute(text("UPDATE purchases SET claim_token = gen_random_uuid() WHERE id = :id"), {"id": purchase_id})


def _taken_over_around(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, purchase_id: uuid.UUID, *,
                       before: bool = False) -> None:
    """`owner.name` as it is, but the purchase is taken over as soon as the call returns (`before`: just
    before it runs)."""
    real = getattr(owner, name)

    def taken_over(*args: Any, **kwargs: Any) -> Any:
        if before:
            _taken_over(purchase_id)
        answer = real(*args, **kwargs)
        if not before:
            _taken_over(purchase_id)
        return answer

    monkeypatch.setattr(owner, name, taken_over)


def _waits(purchase_id: uuid.UUID) -> float:
    from fulfilment.db import session_scope

    with session_scope() as session:
        return float(session.execute(text("SELECT extract(epoch FROM next_action_at - now()) FROM purchases "
                                          "WHERE id = :id"), {"id": purchase_id}).scalar())


@pytest.mark.parametrize(("hold", "retry_after", "cart_kept"), [
    (3600.0, 10.0, True),    # the paid cart outlives the quota's wait by far: committed again, no new reserve
    (150.0, 130.0, False),   # it would be inside the safety margin by then: deleted, reserved again
    (150.0, 200.0, False),   # it would be gone by then
])
def test_a_commit_refused_by_the_quota_keeps_the_cart_only_if_it_outlives_the_wait(
        machine: TmPurchaseMachine, hold: float, retry_after: float, cart_kept: bool) -> None:
    purchase_id = _quoted(machine, hold=hold)
    cart_id = machine._get(purchase_id).quote_id
    assert _step(machine, "place_order", ("commit", Fault("rate_limited", retry_after=retry_after))) is State.RECEIVED
    purchase = machine._get(purchase_id)
    assert purchase.order_evidence is None and "RATE_LIMITED" in (purchase.last_error or "")
    assert retry_after - 5 < _waits(purchase_id) <= retry_after  # until the quota's Ratelimit-Expiry
    row = _tm_last_row(purchase_id)
    assert (row.to_state, (row.message_id or "").startswith("msg-")) == ("received", True)
    if cart_kept:
        assert row.reason.startswith(f"commit refused unprocessed (RATE_LIMITED); committing cart {cart_id} again "
                                     f"in {retry_after:g} s (held until ")
        assert (purchase.partner_data or {}).get("cart") is not None
    else:
        assert row.reason == f"commit refused unprocessed (RATE_LIMITED); reserving again in {retry_after:g} s"
        assert (purchase.partner_data or {}).get("cart") is None
    assert len(machine.fake.calls_of("commit")) == 1 and _order_of(machine) == []


def test_a_commit_refused_by_maintenance_waits_and_never_crashes(machine: TmPurchaseMachine) -> None:
    purchase_id = _quoted(machine)
    assert _step(machine, "place_order", ("commit", "maintenance")) is State.RECEIVED
    purchase = machine._get(purchase_id)
    assert purchase.order_evidence is None and "20001" in (purchase.last_error or "")
    assert _waits(purchase_id) > 1.0 and _order_of(machine) == []


def test_a_payment_setup_that_cannot_pay_pauses_the_purchase_saying_why(machine: TmPurchaseMachine) -> None:
    """The nonce source fails (no nonce, a processor down): no payment is sent, the reserved cart is
    deleted, and the purchase pauses with the source's reason (cut at 2,000 characters), never failed."""
    from fulfilment.partners.ticketmaster.payment import PaymentSetupError

    error = PaymentSetupError("PAYMENT_SOURCE_DOWN", "the processor said: " + "no. " * 700)

    class CannotPay:
        name = "broken"

        def nonce_for(self, partner_data: dict[str, Any]) -> Any:
            raise error

    machine.flow.config = dataclasses.replace(machine.flow.config, nonces=CannotPay())
    machine.first_purchase(hold=3600.0, lag=0.0, numbers=False, extension=0.0, zone="America/Los_Angeles",
                           price=None, deadline_soon=False)
    from fulfilment.db import session_scope

    with session_scope() as session:  # the request's own nonce would pay first: this one carries none
        session.execute(text("UPDATE purchases SET partner_data = partner_data - 'payment_nonce' WHERE id = :id"),
                        {"id": machine.purchases[0]})
    assert _step(machine, "quote_purchase") is State.PAUSED
    purchase = machine._get(machine.purchases[0])
    assert len(str(error)) > 2000 and purchase.last_error == str(error)[:2000]
    assert purchase.failure_code is None and "cart" not in (purchase.partner_data or {})
    assert machine.fake.calls_of("add_payment") == [] and len(machine.fake.calls_of("delete_cart")) == 1
    assert _tm_last_row(purchase.id).reason == "payment setup: PAYMENT_SOURCE_DOWN"


def _first(machine: TmPurchaseMachine) -> uuid.UUID:
    machine.first_purchase(hold=3600.0, lag=0.0, numbers=False, extension=0.0, zone="America/Los_Angeles",
                           price=None, deadline_soon=False)
    return machine.purchases[0]


def test_the_payment_sent_is_the_operator_s_setup_for_this_cart_s_total(
        machine: TmPurchaseMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """add-payment carries the configured buyer, billing address and payment type, the request's
    nonce, and the cart's own total and currency, for the buyer's account at TM."""
    from decimal import Decimal

    from fulfilment.partners.ticketmaster.payloads import Address, Payment

    address = Address(line1="1 Main St", city="Springfield", region_abbrev="IL", postal_code="62701")
    machine.flow.config = dataclasses.replace(machine.flow.config, address=address, payment_type="CREDIT_CARD")
    sent: list[Payment] = []
    real = machine.fake.add_payment

    def add_payment(event_id: str, cart_id: str, payment: Payment, **kwargs: Any) -> Any:
        sent.append(payment)
        return real(event_id, cart_id, payment, **kwargs)

    monkeypatch.setattr(machine.fake, "add_payment", add_payment)
    purchase_id = _quoted(machine)
    purchase, config = machine._get(purchase_id), machine.flow.config
    [payment] = sent
    assert (payment.first_name, payment.last_name, payment.home_phone, payment.email_address, payment.type,
            payment.address) == (config.first_name, config.last_name, config.phone, config.email, "CREDIT_CARD", address)
    assert payment.card.number.get_secret_value().startswith("fake-valid-nonce-")
    assert payment.card.cin == config.payment_cin
    cart = purchase.partner_data["cart"]
    assert (payment.amount, payment.currency) == (Decimal(cart["grand"]), cart["currency"])
    assert payment.third_party_account_id == purchase.partner_data["third_party_account_id"]


def test_a_payment_refused_for_the_account_pauses_the_purchase_naming_the_call(machine: TmPurchaseMachine) -> None:
    _first(machine)
    assert _step(machine, "quote_purchase", ("add_payment", "payment_refused")) is State.PAUSED
    row = _tm_last_row(machine.purchases[0])
    assert row.reason == "account cannot add_payment: 20122"


def test_a_payment_answered_202_keeps_its_polling_url_for_the_next_step(machine: TmPurchaseMachine) -> None:
    purchase_id = _first(machine)
    assert _step(machine, "quote_purchase", ("add_payment", "polling")) is State.RECEIVED
    pending = machine._get(purchase_id).partner_data["pending"]
    assert pending["operation"] == "add_payment" and pending["url"]
    assert machine.fake.calls_of("commit") == []

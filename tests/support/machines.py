"""What the hypothesis state machines share (tests/integration/test_*_properties.py): helpers, and
`PurchaseMachineBase` with its settings, simulated time, crashes, broker and liveness run."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import hypothesis.strategies as st
from hypothesis import HealthCheck
from hypothesis import event as _event
from hypothesis import note as _note
from hypothesis import settings as hsettings
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule
from sqlalchemy import Connection, select, text

from fulfilment.db import get_engine, session_scope
from fulfilment.flowkit import fencing, orders
from fulfilment.flowkit.fencing import Next, RetryLater
from fulfilment.partners.tbb import flow as tbb_flow
from fulfilment.scheduler import redrive_due
from fulfilment.settings import Settings, get_settings
from fulfilment.state_machine import ALLOWED, NEXT_STEP, State
from fulfilment.steps import resume
from fulfilment.steps.runner import run_step, take_in
from fulfilment.steps.stall import stall_after_exhausted_retries
from models import Purchase
from tests.support.fake_partner import Clock

LIVE_CLAIM_SQL = text("SELECT coalesce(claimed_until > now(), false) FROM purchases WHERE id = :id")


def event(text: str) -> None:
    try:
        _event(text)
    except InvalidArgument:  # outside hypothesis: a scripted regression or replayed example
        pass


def note(text: str) -> None:
    try:
        _note(text)
    except InvalidArgument:
        print(text)


def guarded(function):  # type: ignore[no-untyped-def]
    """Mark the machine unhealthy while a rule runs: if it raises, teardown skips the liveness run."""

    @functools.wraps(function)
    def wrapper(self, **kwargs):  # type: ignore[no-untyped-def]
        self.healthy = False
        function(self, **kwargs)
        self.healthy = True

    return wrapper


def live_claim(reader: Connection, purchase_id: uuid.UUID) -> bool:
    """Does a worker hold a live claim (lease) on the purchase now?"""
    return bool(reader.execute(LIVE_CLAIM_SQL, {"id": purchase_id}).scalar())


def replay(machine: Any, steps: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Run one fixed example of a hypothesis state machine: its rules in this order with these
    arguments, every invariant after each, then its teardown (the liveness run).  Hypothesis has no
    `@example` for stateful tests; this is one, written as hypothesis prints a failing example."""
    invariants = [name for name in dir(type(machine))
                  if getattr(getattr(type(machine), name), "hypothesis_stateful_invariant", None) is not None]
    try:
        for invariant_name in invariants:
            getattr(machine, invariant_name)()
        for rule, arguments in steps:
            getattr(machine, rule)(**arguments)
            for invariant_name in invariants:
                getattr(machine, invariant_name)()
    except BaseException:
        machine.close()
        raise
    machine.teardown()


# ---- the base of the purchase machines ----------------------------------------------------------
# Time is simulated, so that an example replays exactly (hypothesis needs that to shrink): the
# steps' deadline checks read the example's `Clock`, and a claim lease "passes" when the test moves
# this example's database times into the past and the clock on by as much (`_time_passes`).
LEASE = 120.0  # claim lease, real seconds: it never lapses by itself during a test
MARGIN = 30.0  # quote safety margin: an order (a commit) only while its quote (cart) has more left
LEAD = 3600.0  # MIN_DELIVERY_LEAD_SECONDS
SOON_MARGIN = 600.0  # a "soon" delivery deadline becomes too close to order after this much of the clock
DEADLINE_SOON = st.sampled_from([False, False, False, True])
# Time passes for this example's purchases: every time the database keeps for them moves back
# by as much (claims lapse, next actions and re-nudges fall due as they would).
TIME_PASSES_SQL = text(
    """
    UPDATE purchases
       SET claimed_until = claimed_until - make_interval(secs => :seconds),
           next_action_at = next_action_at - make_interval(secs => :seconds),
           nudged_at = nudged_at - make_interval(secs => :seconds)
     WHERE id = ANY(:ids)
    """
)
# The modules that read the clock through their `dt` (patched by a machine, restored by close()):
# TBB's flow (quote expiry), the flow kit's orders (the absence policy) and fencing (the delivery
# deadline's lead).
CLOCKED_MODULES = (tbb_flow, orders, fencing)
REAL_DATETIME = {module: module.dt for module in CLOCKED_MODULES}


def machine_settings(partner: dict[str, Any]) -> Settings:
    """The settings of a machine: `partner`'s own on top.  model_copy skips validation.  Waits are
    real database times, moved on by `_time_passes`: a lost nudge is due after one lease, the lookups
    of an unknown order spread over several (backoff 30, 60, 120, 240, 480 s)."""
    return get_settings().model_copy(update={
        "claim_lease_seconds": LEASE,
        # One step per message, as the scripted regressions expect them (the Inline* machines run
        # with the next step in line, production's default).
        "order_after_quote_inline": False,
        "quote_after_intake_inline": False,
        "step_deadline_seconds": LEASE - 10,
        "redrive_after_seconds": 30.0,
        "max_requotes": 3,
        "order_resolve_attempts": 5,
        "order_resolve_max_interval_seconds": 4 * LEASE,
        "order_absence_grace_seconds": None,  # no proof of absence: an unknown order never buys afresh
        "min_delivery_lead_seconds": LEAD,
        "quote_safety_margin_seconds": MARGIN,
        "payment_pause_seconds": 0.0,
        "actor_max_backoff_ms": 0,
        "scheduler_batch_size": 10_000,
        **partner,
    })


def purchase_rules(prices: st.SearchStrategy[Any], faults: st.SearchStrategy[Any],
                   step_names: list[str]) -> tuple[Any, Any]:
    """The rules `another_purchase` and `deliver` of a machine that draws prices, faults and steps
    so; a machine names them in its class body (hypothesis finds rules by name)."""

    @precondition(lambda self: len(self.purchases) < 3)
    @rule(price=prices, deadline_soon=DEADLINE_SOON, fault=faults)
    @guarded
    def another_purchase(self: PurchaseMachineBase, price: str | None, deadline_soon: bool, fault: Any) -> None:
        self._create(price, deadline_soon, fault)

    @rule(index=st.integers(0, 2), stale=st.sampled_from([None] * 4 + step_names), fault=faults)
    @guarded
    def deliver(self: PurchaseMachineBase, index: int, stale: str | None, fault: Any) -> None:
        """A worker gets a message for a purchase: usually the step it is due for, sometimes any
        step whatever its state (stale, duplicate, redelivered); the partner may misbehave."""
        purchase_id = self._pid(index)
        step = stale or NEXT_STEP.get(self._state(purchase_id)) or "resolve_order"
        self._deliver(step, purchase_id, self.plan_for(self._calls_of(step), fault))

    return another_purchase, deliver


class PurchaseMachineBase(RuleBasedStateMachine):
    """What the purchase machines share: the real step runner and scheduler, real Postgres, a fake
    partner, simulated time; the broker (a queue of (step, purchase) messages, stale, duplicated,
    redelivered or lost), workers that crash, the middleware's stall and the operator's resume; the
    teardown's liveness run.  A machine adds its partner's model: the fake, its faults, its rules and
    invariants, and `_settle` (faults stop: the scheduler alone must settle every purchase)."""

    # The fake's crash (a BaseException the steps do not catch: the worker died) and its name in events.
    crash: type[BaseException]
    fault_label: str
    partner_settings: ClassVar[dict[str, Any]] = {}  # the partner's own settings, on top of machine_settings

    def __init__(self) -> None:
        super().__init__()
        self.settings = machine_settings(self.partner_settings)
        self.clock = Clock()
        for module in CLOCKED_MODULES:
            module.dt = self.clock.datetime_module()  # restored by close()
        self.reader = get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
        self.purchases: list[uuid.UUID] = []  # purchase i asks for quantity i + 1: the partner tells them apart
        self.queue: list[tuple[str, uuid.UUID]] = []  # the broker, as far as these purchases go
        # Messages dramatiq retried (it may give up on them: the middleware then stalls the purchase).
        self.retried: list[tuple[uuid.UUID, str]] = []
        self.running: list[str] = []  # message ids of the steps running now (one may hang while others run)
        self.healthy = True  # False once a rule or a check raised: teardown then leaves it alone

    @staticmethod
    def hypothesis_settings(**chosen: Any) -> hsettings:
        """A machine's hypothesis settings: `chosen` (steps per example...), no deadline, no health
        check on slow or large examples.  Derandomization and the example count come from the loaded
        profile ("ci" in `make test`, "fuzz" in `make fuzz`, tests/conftest.py), their parent."""
        return hsettings(**chosen, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                HealthCheck.data_too_large])

    # ---- the partner, as the machine sees it --------------------------------------------

    def _runner_partner(self) -> Any:
        """What the steps are given as their partner."""
        raise NotImplementedError

    def _fake_partner(self) -> Any:
        """The in-memory partner: `plan(operation, fault)` and `faults_met`."""
        raise NotImplementedError

    def _create(self, price: str | None, deadline_soon: bool, fault: Any = None) -> None:
        """A new purchase comes in (its intake may meet `fault`)."""
        raise NotImplementedError

    def _calls_of(self, step: str) -> tuple[str, ...]:
        """The partner operations `step` may call (faults are drawn for those calls)."""
        raise NotImplementedError

    @staticmethod
    def plan_for(operations: tuple[str, ...], drawn: Any) -> tuple[str, Any] | None:
        """The (operation, fault) to plan for one of these calls, from a draw of the machine's faults."""
        raise NotImplementedError

    def _after_message(self, message_id: str) -> None:
        """Checks after one message was handled (intake or a step)."""

    def _after_delivery(self) -> None:
        """Checks after one delivery (its faults counted)."""

    def _settle(self) -> None:
        raise NotImplementedError

    # ---- helpers ---------------------------------------------------------------------

    def _pid(self, index: int) -> uuid.UUID:
        return self.purchases[index % len(self.purchases)]

    def _state(self, purchase_id: uuid.UUID) -> State:
        return State(self._get(purchase_id).state)

    def _get(self, purchase_id: uuid.UUID) -> Purchase:
        with session_scope() as session:
            return session.get_one(Purchase, purchase_id)

    def _load(self) -> dict[uuid.UUID, Purchase]:
        with session_scope() as session:
            rows = session.scalars(select(Purchase).where(Purchase.id.in_(self.purchases))).all()
        return {p.id: p for p in rows}

    def _send(self, following: Next, purchase_id: uuid.UUID) -> None:
        self.queue.append((following.step, purchase_id))

    def _delivery_deadline(self, soon: bool, later: float = 3 * 86400) -> str:
        """A delivery deadline soon after MIN_DELIVERY_LEAD_SECONDS (too close to order after
        SOON_MARGIN seconds of the clock, i.e. a few leases), or `later` seconds away."""
        deadline = self.clock() + dt.timedelta(seconds=LEAD + SOON_MARGIN if soon else later)
        return deadline.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _take_in(self, raw: dict[str, Any], purchase_id: uuid.UUID) -> None:
        """What the intake actor does (runner.take_in): store, then quote by message, or in line
        (and order in line after it) when QUOTE_AFTER_INTAKE_INLINE."""
        message_id = f"msg-{uuid.uuid4()}"
        self.running.append(message_id)
        try:
            assert take_in(raw, partner=self._runner_partner(), settings=self.settings, message_id=message_id,
                           send=self._send) == purchase_id
            outcome = "done"
        except self.crash:
            # The intake worker died in the in-line quote or order: RabbitMQ redelivers the
            # intake message, whose request is stored already: nothing more (the scheduler
            # re-drives the purchase once the claim it was born with lapses).
            assert take_in(raw, partner=self._runner_partner(), settings=self.settings,
                           message_id=f"msg-{uuid.uuid4()}", send=self._send) is None
            outcome = "crash"
        finally:
            self.running.pop()
        event(f"intake: {outcome}")
        self._after_message(message_id)

    def _run(self, step: str, purchase_id: uuid.UUID) -> None:
        """One delivery of one message, through the runner every purchase actor uses."""
        message_id = f"msg-{uuid.uuid4()}"
        self.running.append(message_id)
        try:
            run_step(step, purchase_id, partner=self._runner_partner(), settings=self.settings, message_id=message_id,
                     send=self._send)
        except RetryLater:
            self.queue.append((step, purchase_id))  # dramatiq retries the same message
            if (purchase_id, step) not in self.retried:
                self.retried.append((purchase_id, step))
            outcome = "retry"
        except self.crash:
            self.queue.append((step, purchase_id))  # unacked: the broker redelivers it to another worker
            outcome = "crash"
        else:
            outcome = "done"  # including a no-op: someone else moved it first, or a late answer
        finally:
            self.running.pop()
        event(f"{step}: {outcome}")
        self._after_message(message_id)

    def _deliver(self, step: str, purchase_id: uuid.UUID, fault: tuple[str, Any] | None = None) -> None:
        fake = self._fake_partner()
        if fault is not None:
            fake.plan(*fault)
        met = len(fake.faults_met)
        self._run(step, purchase_id)
        for fault_met in fake.faults_met[met:]:
            event(f"{self.fault_label} fault met: {fault_met}")
        self._after_delivery()

    def _broker(self, messages: int, position: int, how: str, fault: Any, later_faults: bool = True) -> None:
        """Workers take `messages` queued messages; when none is left the scheduler re-drives what is
        due.  The first one comes from `position` in the queue and is delivered ("deliver"), delivered
        and left queued ("duplicate") or lost ("lose"); it meets `fault`, and so do the others unless
        not `later_faults`."""
        for n in range(messages):
            if not self.queue:
                self._tick()
                if not self.queue:
                    return
            if n == 0:
                step, purchase_id = message = self.queue[position % len(self.queue)]
                if how != "duplicate":
                    self.queue.remove(message)
                if how == "lose":
                    event("message lost")
                    continue
            else:
                step, purchase_id = self.queue.pop(0)
                fault = fault if later_faults else None
            self._deliver(step, purchase_id, self.plan_for(self._calls_of(step), fault))

    def _time_passes(self, seconds: float) -> None:
        """Time passes for this example: the clock moves on, and every time the database keeps for
        these purchases moves back by as much (claims lapse, next actions and re-nudges fall due)."""
        self.clock.advance(seconds)
        with session_scope() as session:
            session.execute(TIME_PASSES_SQL, {"ids": self.purchases, "seconds": seconds})

    def _tick(self) -> None:
        ours = set(self.purchases)
        redriven: list[uuid.UUID] = []
        redrive_due(self.settings, lambda step, pid: (self.queue.append((step, pid)), redriven.append(pid))
                    if pid in ours else None)
        # The scheduler never re-drives a purchase whose claim a worker still holds (M6, issue 20).
        held = [pid for pid in redriven if live_claim(self.reader, pid)]
        assert not held, f"the scheduler re-drove {held} while a worker's claim on it was live"

    def _stall(self, purchase_id: uuid.UUID, step: str = "resolve_order") -> State | None:
        """What StallOnExhaustedRetries does when dramatiq gives up on a purchase's message."""
        stalled_from = stall_after_exhausted_retries(
            purchase_id, step=step, retries=8, error="RetryLater: simulated exhausted retries",
            message_id=f"msg-{uuid.uuid4()}",
        )
        if stalled_from is not None:
            event(f"stalled from {stalled_from}")
        return stalled_from

    def _claim_live(self, purchase_id: uuid.UUID) -> bool:
        return live_claim(self.reader, purchase_id)

    def _resume(self, purchase_id: uuid.UUID) -> None:
        """`fulfil retry`: resume the purchase, then send the step it names."""
        try:
            resumed = resume.resume(purchase_id, settings=self.settings, reason="resumed by operator")
        except resume.CannotResume:
            return
        event(f"resumed {resumed.from_state} -> {resumed.to_state}")
        self.queue.append((resumed.step, resumed.purchase_id))

    # ---- rules -------------------------------------------------------------------------

    @rule(index=st.integers(0, 2), resume_it=st.sampled_from([False, True, True]))
    @guarded
    def operator(self, index: int, resume_it: bool) -> None:
        """dramatiq gives up on a retried message: the middleware stalls the purchase, whatever
        state it has reached since (the message may be a stale one).  Or `fulfil retry` /
        `fulfil dlq replay`: resume the purchase, then send the step it names."""
        # (No precondition may depend on what the steps did: their outcomes must not decide
        # which rules hypothesis may draw, or it cannot replay an example.)
        if not resume_it:
            if self.retried:
                self._stall(*self.retried[index % len(self.retried)])
            return
        self._resume(self._pid(index))

    # ---- invariants ------------------------------------------------------------------------

    @staticmethod
    def _check_history(history: list[list[Any]], outbox_events: int, purchases: dict[str, dict[str, Any]],
                       orphan_leaves_alone: frozenset[State] | set[State],
                       on_transition: Callable[[str, int, str, State], None] | None = None,
                       ) -> dict[str, list[list[Any]]]:
        """Each history row ([id, purchase_id, kind, from, to, outbox events, ...]) has exactly one
        outbox event; each purchase's chain is consistent and allowed, and ends where the purchase
        is; a row that changes nothing names the state the purchase was in; an orphan order puts its
        purchase in NEEDS_ATTENTION unless it is in `orphan_leaves_alone`.  `on_transition(pid,
        row_id, from_state, state)` checks each transition more.  Returns the chains per purchase."""
        for row_id, _, kind, _, _, events, *_ in history:
            assert events == 1, f"history row {row_id} ({kind}) has {events} outbox events"
        assert outbox_events == len(history), "outbox events without a history row"
        chains: dict[str, list[list[Any]]] = defaultdict(list)
        for row in history:
            chains[row[1]].append(row)
        for pid, purchase in purchases.items():
            previous: State | None = None
            chain = chains[pid]
            for i, (row_id, _, kind, from_state, to_state, *_) in enumerate(chain):
                assert from_state == (previous.value if previous else None), \
                    f"{pid}: history row {row_id} ({kind}) starts from {from_state}, the purchase was {previous}"
                if kind != "transition":
                    assert to_state == from_state, f"{pid}: {kind} row {row_id} moves {from_state} -> {to_state}"
                    if kind == "orphan_order" and State(from_state) not in orphan_leaves_alone:
                        after = chain[i + 1] if i + 1 < len(chain) else None
                        assert after is not None and after[2] == "transition" and \
                            after[4] == State.NEEDS_ATTENTION.value, \
                            f"{pid}: orphan order (row {row_id}) while {from_state}, then {after}: not needs_attention"
                    continue
                assert State(to_state) in ALLOWED[previous], f"{pid}: {previous} -> {to_state} is not allowed"
                previous = State(to_state)
                if on_transition is not None:
                    on_transition(pid, row_id, from_state, previous)
            assert previous == State(purchase["state"]), \
                f"{pid}: history ends at {previous}, the purchase is {purchase['state']}"
        return chains

    # ---- teardown: liveness ---------------------------------------------------------------

    def close(self) -> None:
        """Put the real clock back; leave nothing live for a later test's scheduler (the
        database is shared)."""
        for module, real in REAL_DATETIME.items():
            module.dt = real
        self.reader.close()
        if self.purchases:
            with session_scope() as session:  # dead workers' claims would keep the middleware away
                session.execute(TIME_PASSES_SQL, {"ids": self.purchases, "seconds": LEASE + 1})
        for purchase_id in self.purchases:
            self._stall(purchase_id)

    def teardown(self) -> None:
        """Faults stop: the scheduler and the broker alone must settle every purchase."""
        if not self.purchases or not self.healthy:  # a failed example's report stands as it is
            self.close()
            return
        self.healthy = False
        try:
            self._settle()
        finally:
            self.close()

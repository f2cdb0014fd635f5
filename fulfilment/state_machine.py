"""Where a purchase changes state: the states, the allowed transitions, and the one
function every change goes through.

`transition()` is a guarded update (`UPDATE … WHERE state = :expected AND
claim_token = :ours AND quote_id = :ours`): if another worker moved the purchase
first, or took over its claim, nothing is written and `StaleTransition` is raised, so
a redelivered or duplicated message can never apply a step twice, and a late answer
can never move a purchase that moved on (fencing, invariant 8).  The history row and
the outbox event are written in the same statement as the state (invariant 4; the SQL
is in statements.py).  An
illegal transition raises `IllegalTransition` before touching the database.

`claim()` is the lease an actor takes before calling the partner: a duplicate
delivery of the same message finds the lease held and does nothing (invariant 6).
Each claim carries a fresh owner token; `transition()`, `release()` and
`reschedule()` of a claimed purchase are conditional on it.  A token only changes
hands through `claim()`, which succeeds only once the previous lease has ended, and
a step's partner calls end before its lease does (`Settings.step_deadline_seconds`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from fulfilment import logging_setup, metrics, statements
from fulfilment.statements import Row
from fulfilment.step_names import StepName
from models import DeadlineFlag, OrphanOrder, OutboxEvent, Purchase, PurchaseTransition

log = logging.getLogger(__name__)

# Where the state machine's statements run: a Session's or a Connection's transaction, or a
# psycopg connection in autocommit (the steps, db.autocommit(): each statement of statements.py
# is complete alone).
Executor = Session | Connection | psycopg.Connection[Any]


class State(StrEnum):
    RECEIVED = "received"  # stored, needs a quote
    QUOTED = "quoted"  # holds an unexpired quote, needs an order
    ORDERING = "ordering"  # intent to order committed; the partner call may be in flight
    ORDER_UNKNOWN = "order_unknown"  # the order call's outcome is unknown: resolve by asking
    AWAITING_TRANSFER = "awaiting_transfer"  # order confirmed, customer must accept the transfer
    TRANSFER_COMPLETE = "transfer_complete"
    TRANSFER_EXPIRED = "transfer_expired"
    CANCELLED = "cancelled"
    FAILED = "failed"  # permanent failure, with the partner's code and message
    PAUSED = "paused"  # account-level problem (payment not configured): waits, not burnt
    NEEDS_ATTENTION = "needs_attention"  # an order may exist but could not be confirmed
    STALLED = "stalled"  # retries exhausted; an operator may resume it
    # A partner that issues tickets (Ticketmaster): the order exists, its tickets are not fetched
    # yet (or not retrievable before a delivery delay date); then the terminal success.
    AWAITING_TICKETS = "awaiting_tickets"
    TICKETS_ISSUED = "tickets_issued"


class OrderEvidence(StrEnum):
    """What we know of an order from the purchase's current quote (`purchases.order_evidence`)."""

    MAY_EXIST = "may_exist"  # an order request may have reached the partner; its outcome is unknown
    EXISTS = "exists"  # the partner said so (QUOTE_ALREADY_CONSUMED): an order from this quote exists


TERMINAL: frozenset[State] = frozenset(
    {State.TRANSFER_COMPLETE, State.TRANSFER_EXPIRED, State.CANCELLED, State.FAILED, State.TICKETS_ISSUED}
)
# The terminal states in which the buyer got what was bought, whatever the partner's way of delivering.
SUCCESS: frozenset[State] = frozenset({State.TRANSFER_COMPLETE, State.TICKETS_ISSUED})
# Where a purchase waits once its order is confirmed (the partner's way of delivering decides which).
ORDERED: frozenset[State] = frozenset({State.AWAITING_TRANSFER, State.AWAITING_TICKETS})
# Waiting for a person: not terminal, but the scheduler does not re-drive them.
HELD_FOR_OPERATOR: frozenset[State] = frozenset({State.NEEDS_ATTENTION, State.STALLED})

_S = State
ALLOWED: Mapping[State | None, frozenset[State]] = {
    None: frozenset({_S.RECEIVED}),
    # → NEEDS_ATTENTION from the quote path: an order turned up that the purchase did not expect.
    _S.RECEIVED: frozenset({_S.QUOTED, _S.FAILED, _S.PAUSED, _S.STALLED, _S.NEEDS_ATTENTION}),
    _S.PAUSED: frozenset({_S.QUOTED, _S.FAILED, _S.PAUSED, _S.STALLED, _S.NEEDS_ATTENTION}),
    # Back to RECEIVED means "re-quote": the quote is too close to expiry, no call made.
    # → FAILED: the delivery deadline is too close to order.
    _S.QUOTED: frozenset({_S.ORDERING, _S.RECEIVED, _S.FAILED, _S.STALLED, _S.NEEDS_ATTENTION}),
    # From ORDERING only a *definite* answer to the one request sent may lead away from the
    # order path: QUOTE_EXPIRED → RECEIVED, a permanent rejection → FAILED, payment → PAUSED.
    _S.ORDERING: frozenset(
        {_S.AWAITING_TRANSFER, _S.AWAITING_TICKETS, _S.ORDER_UNKNOWN, _S.RECEIVED, _S.FAILED, _S.PAUSED,
         _S.NEEDS_ATTENTION, _S.STALLED}
    ),
    # Once an order may exist, nothing the partner refuses afterwards proves it does not:
    # the purchase is resolved (found), held for a person, or — only under the operator's
    # explicit ORDER_ABSENCE_GRACE_SECONDS policy — re-quoted (partners/tbb/flow.py).
    _S.ORDER_UNKNOWN: frozenset(
        {_S.AWAITING_TRANSFER, _S.AWAITING_TICKETS, _S.RECEIVED, _S.NEEDS_ATTENTION, _S.STALLED}
    ),
    _S.AWAITING_TRANSFER: frozenset(
        {_S.TRANSFER_COMPLETE, _S.TRANSFER_EXPIRED, _S.CANCELLED, _S.NEEDS_ATTENTION, _S.STALLED}
    ),
    _S.AWAITING_TICKETS: frozenset({_S.TICKETS_ISSUED, _S.NEEDS_ATTENTION, _S.STALLED}),
    # An operator resumes these; an order may exist, so never straight back to QUOTED/ORDERING.
    # → FAILED: an operator gave up on it (`fulfil cancel`, fulfilment/operator/), which allows it
    # only where no order can exist: STALLED from RECEIVED/QUOTED/PAUSED, NEEDS_ATTENTION once a
    # person checked with the partner.
    _S.NEEDS_ATTENTION: frozenset({_S.ORDER_UNKNOWN, _S.AWAITING_TRANSFER, _S.AWAITING_TICKETS, _S.FAILED}),
    _S.STALLED: frozenset(
        {_S.RECEIVED, _S.QUOTED, _S.ORDER_UNKNOWN, _S.AWAITING_TRANSFER, _S.AWAITING_TICKETS, _S.PAUSED,
         _S.NEEDS_ATTENTION, _S.FAILED}
    ),
    _S.TRANSFER_COMPLETE: frozenset(),
    _S.TRANSFER_EXPIRED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.FAILED: frozenset(),
    _S.TICKETS_ISSUED: frozenset(),
}

# Which step runs next in each live state; the scheduler and `fulfil retry` use it.
NEXT_STEP: Mapping[State, StepName] = {
    _S.RECEIVED: StepName.QUOTE,
    _S.PAUSED: StepName.QUOTE,
    _S.QUOTED: StepName.ORDER,
    _S.ORDERING: StepName.RESOLVE,
    _S.ORDER_UNKNOWN: StepName.RESOLVE,
    _S.AWAITING_TRANSFER: StepName.TRANSFER,
    _S.AWAITING_TICKETS: StepName.TICKETS,
}


class TransitionError(Exception):
    pass


class IllegalTransition(TransitionError):
    def __init__(self, from_state: State | None, to_state: State) -> None:
        super().__init__(f"illegal transition {from_state or '(new)'} -> {to_state}")
        self.from_state = from_state
        self.to_state = to_state


class StaleTransition(TransitionError):
    """The purchase was no longer in the expected state, or its claim is no longer ours:
    someone else moved it (or took it over) first."""

    def __init__(self, purchase_id: uuid.UUID, expected: State) -> None:
        super().__init__(f"purchase {purchase_id} is no longer {expected}")
        self.purchase_id = purchase_id
        self.expected = expected


def check_transition(from_state: State | None, to_state: State) -> None:
    if to_state not in ALLOWED[from_state]:
        raise IllegalTransition(from_state, to_state)


def is_live(state: State) -> bool:
    """Live purchases carry a next-action time and are re-driven by the scheduler."""
    return state in NEXT_STEP


def transition(
    db: Executor,
    purchase: Purchase,
    to_state: State,
    *,
    reason: str,
    next_action_in: float | None = None,
    hold_claim_for: float | None = None,
    message_id: str | None = None,
    changes: Mapping[str, Any] | None = None,
    insert_with: Row | None = None,
    event_extra: Mapping[str, Any] | None = None,
) -> Purchase:
    """Move `purchase` from its current state to `to_state`, or raise.

    next_action_in: seconds until the scheduler should nudge it (required for live
      states, forbidden otherwise: terminal purchases have no next action).
    hold_claim_for: keep a lease for that many seconds (the caller goes on working on it,
      e.g. the order call after committing ORDERING); otherwise the lease is released.
    changes: other purchase columns to set in the same UPDATE.
    insert_with: a row (table, values) written only if the transition is (e.g. the quote taken).
    event_extra: more keys of the event (e.g. the tickets issued); never logged.

    One statement (statements.py): the guarded UPDATE, the history row, the outbox event
    and `insert_with`, so that they land together, in the caller's transaction or, on an
    autocommit connection, as a transaction of their own.  Returns the purchase as it is now
    (a new, detached object; `purchase` is left as it was).
    """
    from_state = State(purchase.state)
    check_transition(from_state, to_state)
    if is_live(to_state) != (next_action_in is not None):
        raise ValueError(f"{to_state}: next_action_in must be {'set' if is_live(to_state) else 'None'}")
    columns = dict(changes or {})
    if to_state is State.STALLED:
        columns["stalled_from"] = from_state.value
    event_id = uuid.uuid4()
    event_type = f"purchase.{to_state.value}"
    payload = event_payload(event_id, purchase, from_state, to_state, reason, None, event_type, changes=columns)
    payload.update(event_extra or {})
    sql = statements.transition_sql(tuple(columns), hold_claim=hold_claim_for is not None,
                                    insert_with=insert_with.signature() if insert_with else None)
    params: dict[str, Any] = {
        **statements.fence_params(purchase), "to_state": to_state.value, "next_in": next_action_in,
        "hold": hold_claim_for, **statements.change_params(columns),
        **_recorded_params(from_state, reason, purchase.attempts, message_id, event_id, event_type, payload),
        **(insert_with.params() if insert_with else {}),
    }
    row, _ = _execute(db, purchase, sql, params)
    if row is None:
        raise StaleTransition(purchase.id, from_state)
    _log_recorded(purchase.id, from_state, to_state, reason, event_type)
    return statements.purchase_from(row)


def _recorded_params(from_state: State | None, reason: str, attempt: int, message_id: str | None,
                     event_id: uuid.UUID, event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of the history row and event a statement writes (statements._recorded)."""
    return {"from_state": from_state.value if from_state else None, "reason": reason, "attempt": attempt,
            "message_id": message_id, "event_id": event_id, "event_type": event_type,
            "payload": json.dumps(payload, separators=(",", ":"))}


def _execute(db: Executor, purchase: Purchase | None, sql: str, params: Mapping[str, Any]) -> tuple[Any, int]:
    """Run one of statements.py's statements; returns its first row (a mapping, or None) and
    its row count.  In a Session the session is flushed first, and `purchase`, if the session
    holds it, is expired (the statement changed it behind the ORM's back)."""
    if isinstance(db, psycopg.Connection):
        with db.cursor(row_factory=dict_row) as cursor:
            cursor.execute(sql, params)
            return (cursor.fetchone() if cursor.description else None), cursor.rowcount
    if isinstance(db, Session):
        db.flush()
        result = db.connection().exec_driver_sql(sql, params)  # type: ignore[arg-type]
        if purchase is not None and purchase in db:
            db.expire(purchase)
    else:
        result = db.exec_driver_sql(sql, params)  # type: ignore[arg-type]
    count = result.rowcount
    return (result.mappings().first() if result.returns_rows else None), count


def _log_recorded(purchase_id: uuid.UUID, from_state: State | None, to_state: State, reason: str,
                  event_type: str) -> None:
    log.info("purchase %s: %s -> %s (%s)", purchase_id, from_state or "new", to_state, reason)
    metrics.TRANSITIONS.labels(event_type).inc()


def create(db: Executor, values: Mapping[str, Any], *, next_action_in: float, reason: str,
           message_id: str | None = None, hold_claim_for: float | None = None) -> Purchase | None:
    """Insert a purchase in RECEIVED with its birth (None → RECEIVED) in history and outbox, in one
    statement; returns it, or None if a purchase with its `request_id` exists (nothing written).

    values: the purchase's columns (ORM attribute names), `id` and `request_id` included.
    hold_claim_for: born claimed for that many seconds (the caller quotes it at once), as
      `claim()` would have claimed it, without the claim's statement.
    """
    check_transition(None, State.RECEIVED)
    born = Purchase(**values, state=State.RECEIVED.value, attempts=0)
    event_id = uuid.uuid4()
    payload = event_payload(event_id, born, None, State.RECEIVED, reason, None, "purchase.received")
    params = {**statements.change_params(values), "next_in": next_action_in,
              **_recorded_params(None, reason, 0, message_id, event_id, "purchase.received", payload)}
    if hold_claim_for is not None:
        params.update(lease=hold_claim_for, token=uuid.uuid4())
    row, _ = _execute(db, None, statements.create_sql(tuple(values), claimed=hold_claim_for is not None), params)
    if row is None:
        return None
    created = statements.purchase_from(row)
    _log_recorded(created.id, None, State.RECEIVED, reason, "purchase.received")
    return created


def _record(
    session: Session,
    purchase: Purchase,
    from_state: State | None,
    to_state: State,
    reason: str,
    attempt: int,
    message_id: str | None,
    *,
    kind: str = "transition",
    event_type: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Append the history row and its one outbox event (same transaction as the caller's change)."""
    entry = session.execute(
        insert(PurchaseTransition)
        .values(
            purchase_id=purchase.id,
            kind=kind,
            from_state=from_state.value if from_state else None,
            to_state=to_state.value,
            reason=reason,
            attempt=attempt,
            message_id=message_id,
        )
        .returning(PurchaseTransition.id, PurchaseTransition.created_at)
    ).one()
    event_id = uuid.uuid4()
    event_type = event_type or f"purchase.{to_state.value}"
    _log_recorded(purchase.id, from_state, to_state, reason, event_type)
    payload = event_payload(event_id, purchase, from_state, to_state, reason, entry.created_at, event_type)
    payload.update(extra or {})
    session.execute(
        insert(OutboxEvent).values(
            id=event_id, transition_id=entry.id, purchase_id=purchase.id, routing_key=event_type, payload=payload
        )
    )


def note(session: Session, purchase: Purchase, *, kind: str, event_type: str, reason: str,
         extra: Mapping[str, Any] | None = None, message_id: str | None = None) -> None:
    """A history row of `kind` and its event, without a state change (e.g. tickets delayed or
    refreshed); `purchase` must be locked by the caller's transaction."""
    state = State(purchase.state)
    _record(session, purchase, state, state, reason, purchase.attempts, message_id, kind=kind, event_type=event_type,
            extra=extra)


def late_answer(
    session: Session, purchase_id: uuid.UUID, *, step: str, answer: str, message_id: str | None
) -> State | None:
    """Record a partner answer that came too late to move its purchase (its claim had passed
    to someone else, or the purchase had moved on): a history row and a `purchase.late_answer`
    event, nothing else changes.  Returns the purchase's current state (None if unknown)."""
    current = session.get(Purchase, purchase_id, with_for_update=True)
    if current is None:
        return None
    state = State(current.state)
    _record(session, current, state, state, f"late answer from {step}, not applied: {answer}", current.attempts,
            message_id, kind="late_answer", event_type="purchase.late_answer")
    metrics.LATE_ANSWERS.labels(step).inc()
    log.warning("purchase %s: late answer from %s not applied (the purchase is %s): %s",
                purchase_id, step, state, answer)
    return state


def orphan_order(
    session: Session, purchase: Purchase, *, order: Mapping[str, Any], reason: str, message_id: str | None
) -> bool:
    """Keep an order the purchase did not expect (invariant 8: an order id is never dropped).

    Writes the orphan_orders row, a history row and a `purchase.orphan_order` event, an
    ERROR log and a metric.  `purchase` must be locked by the caller.  Returns False if
    this order was recorded as an orphan before.
    """
    kept = session.execute(
        pg_insert(OrphanOrder)
        .values(purchase_id=purchase.id, partner=purchase.partner, order_id=order["order_id"],
                quote_id=order.get("quote_id"), order_status=order.get("status"), details=dict(order), reason=reason)
        .on_conflict_do_nothing()
        .returning(OrphanOrder.order_id)
    ).scalar_one_or_none()
    if kept is None:
        return False
    state = State(purchase.state)
    _record(session, purchase, state, state, reason, purchase.attempts, message_id, kind="orphan_order",
            event_type="purchase.orphan_order", extra={"orphan_order": dict(order)})
    metrics.ORPHAN_ORDERS.inc()
    log.error("purchase %s: ORPHAN ORDER %s (quote %s) kept for operators: %s",
              purchase.id, order["order_id"], order.get("quote_id"), reason)
    return True


def flag_deadline(session: Session, purchase: Purchase, window_hours: float) -> bool:
    """Raise the warning for one window, once: history row + `purchase.deadline_near` event.

    Returns False if this window was flagged before (the flag's primary key decides).
    """
    flagged = session.execute(
        pg_insert(DeadlineFlag)
        .values(purchase_id=purchase.id, window_hours=window_hours)
        .on_conflict_do_nothing()
        .returning(DeadlineFlag.purchase_id)
    ).scalar_one_or_none()
    if flagged is None:
        return False
    state = State(purchase.state)
    deadline = purchase.delivery_deadline.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    _record(
        session, purchase, state, state, f"delivery deadline {deadline} is within {window_hours:g} h", 0, None,
        kind="deadline_flag", event_type="purchase.deadline_near",
        extra={"deadline_warning": {"window_hours": window_hours, "delivery_deadline": deadline}},
    )
    return True


def utc_text(moment: dt.datetime) -> str:
    """An event timestamp: UTC, microseconds always written (Postgres writes the same: statements.UTC_TEXT)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_payload(
    event_id: uuid.UUID,
    purchase: Purchase,
    from_state: State | None,
    to_state: State,
    reason: str,
    occurred_at: dt.datetime | None,
    event_type: str,
    *,
    changes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The event body (schema: docs/schemas/purchase-event.schema.json) of `purchase` with
    `changes` applied.  occurred_at None: the statement writing the event adds it (the history
    row's created_at, statements.py)."""
    changed = changes or {}

    def now(key: str) -> Any:
        return changed[key] if key in changed else getattr(purchase, key)

    payload: dict[str, Any] = {
        "event_id": str(event_id),
        "type": event_type,
        "purchase_id": str(purchase.id),
        "request_id": purchase.request_id,
        "state": to_state.value,
        "previous_state": from_state.value if from_state else None,
        "reason": reason,
    }
    if occurred_at is not None:
        payload["occurred_at"] = utc_text(occurred_at)
    if purchase.request_metadata is not None:
        payload["metadata"] = purchase.request_metadata
    if now("order_id"):
        unit_price = now("unit_price")
        payload["order"] = {
            "order_id": now("order_id"),
            "status": now("order_status"),
            "transfer_email": now("transfer_email"),
            "seat_range": now("seat_range"),
            "unit_price": str(unit_price) if unit_price is not None else None,
            "delivery_deadline": purchase.delivery_deadline.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
    failure_code = now("failure_code")
    if to_state is State.FAILED or failure_code and to_state in HELD_FOR_OPERATOR:
        payload["failure"] = {"code": failure_code, "message": now("failure_message")}
    return payload


def claim(
    db: Executor,
    purchase_id: uuid.UUID,
    states: Iterable[State],
    *,
    lease_seconds: float,
    only_if_due: bool = False,
) -> Purchase | None:
    """Take the lease on a purchase in one of `states`, or return None (one statement).

    None means: not in those states any more, or another worker holds the lease, or
    (with only_if_due) its next action is not due yet.  Each of these makes the
    message a harmless no-op.  The scheduler leaves a purchase alone while its lease
    runs; a worker killed mid-step only delays it until the lease ends.
    """
    row, _ = _execute(db, None, statements.claim_sql(only_if_due=only_if_due), {
        "id": purchase_id, "states": [State(s).value for s in states], "lease": lease_seconds,
        "token": uuid.uuid4(),
    })
    if row is None:
        return None
    claimed = statements.purchase_from(row)
    # Every further log line of this message names the caller's request too (the
    # worker middleware resets the context when the message is done).
    logging_setup.bind(request_id=claimed.request_id)
    return claimed


def lease_held(session: Session, purchase: Purchase) -> bool:
    """Whether a claim on the purchase is live right now (by the database's clock)."""
    if purchase.claimed_until is None:
        return False
    return bool(session.execute(select(func.now() < purchase.claimed_until)).scalar())


def release(db: Executor, purchase: Purchase, *, retry_in: float, error: str | None = None) -> bool:
    """Give the lease back after a transient failure so the retried message can claim it.

    Fenced: returns False (and changes nothing) if the claim is no longer this caller's.
    """
    released = _release(db, purchase, retry_in, {} if error is None else {"last_error": error})
    if not released:
        log.info("purchase %s: lease no longer ours; not released", purchase.id)
    return released


def reschedule(db: Executor, purchase: Purchase, *, next_action_in: float, **changes: Any) -> bool:
    """Set the next action time without a state change (e.g. the transfer is still pending),
    and give the lease back.  Fenced like `release()`."""
    done = _release(db, purchase, next_action_in, changes)
    if not done:
        log.info("purchase %s: lease no longer ours; not rescheduled", purchase.id)
    return done


def save(db: Executor, purchase: Purchase, **changes: Any) -> Purchase:
    """Record progress of the step holding the claim (no state change, the lease kept): what it
    must not lose if it dies before its transition.  Fenced: StaleTransition if the claim is gone."""
    params = {**statements.fence_params(purchase), **statements.change_params(changes)}
    row, _ = _execute(db, purchase, statements.save_sql(tuple(changes)), params)
    if row is None:
        raise StaleTransition(purchase.id, State(purchase.state))
    return statements.purchase_from(row)


def ordered_state(purchase: Purchase) -> State:
    """Where this purchase waits once its order is confirmed: tickets to fetch (its partner issues
    tickets: `partner_data.delivery` is "tickets") or a transfer to watch."""
    data = purchase.partner_data or {}
    return State.AWAITING_TICKETS if data.get("delivery") == "tickets" else State.AWAITING_TRANSFER


def _release(db: Executor, purchase: Purchase, next_in: float, changes: Mapping[str, Any]) -> bool:
    params = {**statements.fence_params(purchase), "next_in": next_in, **statements.change_params(changes)}
    return bool(_execute(db, purchase, statements.release_sql(tuple(changes)), params)[1])


def history(session: Session, purchase_id: uuid.UUID) -> list[PurchaseTransition]:
    return list(
        session.scalars(
            select(PurchaseTransition)
            .where(PurchaseTransition.purchase_id == purchase_id)
            .order_by(PurchaseTransition.id)
        )
    )

"""What a person does to one purchase: resume it, give up on it, record an order found at the
partner, and look at rejected requests.

`fulfil retry`, `fulfil cancel`, `fulfil resolve` and `fulfil rejected` call these, and so does
the web console: every action goes through one function, takes the operator's name and writes
it to the purchase's history (and so to the event the requesting service receives).  Errors
are OperatorActionError subclasses (PurchaseNotFound, NothingToDo, Refused, OrderNotFound,
PartnerUnreachable) whose message is written for a person; ValueError is a bad argument.

Giving up (`cancel`) is allowed only where no order can exist or be in flight (invariant 1):
RECEIVED, QUOTED, PAUSED, and STALLED from one of those.  NEEDS_ATTENTION means an order may
exist: a person must have checked with the partner (`no_order_confirmed`).  ORDERING,
ORDER_UNKNOWN and AWAITING_TRANSFER are refused: an order request may be in flight, its
outcome is being resolved, or an order exists.

Recording a found order (`resolve`) is for NEEDS_ATTENTION, ORDER_UNKNOWN and STALLED from
the order path: the order is fetched from the partner first, and is recorded only if it was
made from one of this purchase's quotes.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.dependencies import DependencyUnavailable
from fulfilment.partners.base import NotFound, Order, Partner, PartnerError, PermanentError
from fulfilment.requests import purchase_id_for
from fulfilment.settings import PolicySettings
from fulfilment.state_machine import TERMINAL, State
from fulfilment.steps.common import failure, partner_request_id
from fulfilment.steps.order import order_columns
from fulfilment.steps.resume import Resumed
from models import OrphanOrder, PartnerQuote, Purchase, RejectedRequest

if TYPE_CHECKING:
    from fulfilment.rabbitmq.dead_letters import ReplayReport

CANCELLED_BY_OPERATOR = "CANCELLED_BY_OPERATOR"

# Where no order can exist or be in flight: a purchase may be given up without asking anyone.
CANCELLABLE: frozenset[State] = frozenset({State.RECEIVED, State.QUOTED, State.PAUSED})
# Where an order may exist that nobody could confirm: a person may record the one they found.
RESOLVABLE: frozenset[State] = frozenset({State.NEEDS_ATTENTION, State.ORDER_UNKNOWN})
ORDER_PATH: frozenset[State] = frozenset({State.ORDERING, State.ORDER_UNKNOWN})

# Partner order ids are short tokens (TBB-20260912-AB12); anything else never reaches a URL path.
ORDER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")


class OperatorActionError(Exception):
    """The action was not taken; the message says why, for a person."""


class PurchaseNotFound(OperatorActionError):
    pass


class NothingToDo(OperatorActionError):
    """The purchase is already where the action would take it (or finished)."""


class Refused(OperatorActionError):
    """The purchase's state (or the order found) does not allow the action."""


class OrderNotFound(OperatorActionError):
    """The partner has no such order."""


class PartnerUnreachable(OperatorActionError):
    """The partner could not be asked (network, 5xx, credentials): nothing was changed."""

    def __init__(self, error: PartnerError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Done:
    purchase_id: uuid.UUID
    from_state: State
    to_state: State
    reason: str  # as written to the history


def operator_name(name: str | None = None) -> str:
    """The name written to the history: the given one, else the login name ($USER)."""
    chosen = (name or os.environ.get("USER") or os.environ.get("LOGNAME") or _login() or "").strip()
    if not chosen:
        raise ValueError("no operator name: pass --operator NAME (or set USER)")
    return " ".join(chosen.split())[:100]


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's random uid)
        return None


def find_purchase_id(session: Session, ident: str) -> uuid.UUID | None:
    """A purchase id, or the request_id it was submitted with (a request_id may look like a uuid)."""
    try:
        as_uuid: uuid.UUID | None = uuid.UUID(ident)
    except ValueError:
        as_uuid = None
    candidates = [as_uuid] if as_uuid else []
    candidates.append(purchase_id_for(ident))
    for candidate in candidates:
        found = session.scalar(select(Purchase.id).where(Purchase.id == candidate))
        if found is not None:
            return found
    return None


def find_purchase(session: Session, ident: str) -> Purchase | None:
    found = find_purchase_id(session, ident)
    return session.get(Purchase, found) if found is not None else None


def _locked(session: Session, ident: str) -> Purchase:
    purchase_id = find_purchase_id(session, ident)
    purchase = session.get(Purchase, purchase_id, with_for_update=True, populate_existing=True) if purchase_id else None
    if purchase is None:
        raise PurchaseNotFound(f"no purchase with id or request_id {ident!r}")
    return purchase


# ---- resume ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retried:
    resumed: Resumed
    sent: bool  # the step's message reached RabbitMQ
    send_error: DependencyUnavailable | None  # why not: the scheduler sends it once the broker is back


def retry(ident: str, *, operator: str, settings: PolicySettings, broker_url: str, via: str = "fulfil retry") -> Retried:
    """Resume a stalled (or needs-attention) purchase and send its next step (steps/resume.py).

    The operator checked with the partner (needs_attention).  A broker outage after the resume
    is returned, not raised: the purchase is live again and the scheduler will send the step.
    """
    from fulfilment.dependencies import broker_unavailable
    from fulfilment.rabbitmq.publisher import send_step_once
    from fulfilment.steps.resume import CannotResume, resume

    with session_scope() as session:
        purchase_id = find_purchase_id(session, ident)
    if purchase_id is None:
        raise PurchaseNotFound(f"no purchase with id or request_id {ident!r}")
    try:
        resumed = resume(purchase_id, settings=settings, reason=f"resumed by operator {operator} ({via})")
    except CannotResume as error:
        raise NothingToDo(str(error)) from None
    try:
        send_step_once(resumed.step, resumed.purchase_id, broker_url=broker_url)
    except Exception as error:
        unavailable = broker_unavailable(error, broker_url)
        if unavailable is None:
            raise
        return Retried(resumed, False, unavailable)
    return Retried(resumed, True, None)


def replay_dead_letters(
    broker_url: str,
    *,
    settings: PolicySettings | None,
    operator: str | None = None,
    via: str = "fulfil dlq replay",
    message_id: str | None = None,
    actor: str | None = None,
    all: bool = False,
    dry_run: bool = False,
) -> ReplayReport:
    """Replay dead messages (fulfilment/rabbitmq/dead_letters.py), resuming each one's stalled purchase first.

    `fulfil dlq replay` and the console call this.  The resume is written to the purchase's
    history with the message id and the operator; a purchase held in NEEDS_ATTENTION is never
    released by a replay (its message is skipped and stays dead), and a finished one makes the
    replayed message a no-op.  Select exactly one of message_id, actor or all.  `settings` may be
    None only for a dry run (nothing is resumed).
    """
    from fulfilment.rabbitmq.dead_letters import DeadLetter, replay
    from fulfilment.steps.resume import CannotResume, resume

    if settings is None and not dry_run:
        raise ValueError("a replay needs the policy settings (to resume the purchases)")

    by = f" by operator {operator} ({via})" if operator else ""

    def resume_purchase(letter: DeadLetter) -> None:
        if letter.purchase_id is None:
            return  # intake messages have no purchase yet
        try:
            assert settings is not None  # checked above; before_publish is not called in a dry run
            resume(uuid.UUID(letter.purchase_id), settings=settings, checked_by_person=False,
                   reason=f"resumed by dead-letter replay of message {letter.message_id}{by}")
        except CannotResume as error:
            if "finished" not in str(error):
                raise
            # A finished purchase: the replayed message will find nothing to do.

    return replay(broker_url, message_id=message_id, actor=actor, all=all, dry_run=dry_run,
                  before_publish=resume_purchase)


# ---- give up ------------------------------------------------------------------------------


def cancel(ident: str, *, reason: str, operator: str, no_order_confirmed: bool = False) -> Done:
    """Give up on a purchase: FAILED with failure code CANCELLED_BY_OPERATOR and `reason`.

    `no_order_confirmed`: the operator checked with the partner that no order exists for
    this purchase; required (and only meaningful) for NEEDS_ATTENTION.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise ValueError("a reason is required")
    with session_scope() as session:
        purchase = _locked(session, ident)
        state = State(purchase.state)
        _check_cancellable(session, purchase, state, no_order_confirmed)
        checked = " after checking with the partner that no order exists" if state is State.NEEDS_ATTENTION else ""
        history = f"cancelled by operator {operator}{checked}: {reason}"
        state_machine.transition(session, purchase, State.FAILED, reason=history,
                                 changes=failure(CANCELLED_BY_OPERATOR, reason))
        return Done(purchase.id, state, State.FAILED, history)


def _check_cancellable(session: Session, purchase: Purchase, state: State, no_order_confirmed: bool) -> None:
    pid = purchase.id
    if state in TERMINAL:
        already = purchase.failure_code == CANCELLED_BY_OPERATOR
        raise NothingToDo(f"purchase {pid} is {state}{' (cancelled by an operator)' if already else ''}: "
                          "finished, nothing to cancel")
    if state in CANCELLABLE:
        return
    if state is State.STALLED:
        before = State(purchase.stalled_from) if purchase.stalled_from else None
        if before in CANCELLABLE:
            return
        raise Refused(f"purchase {pid} stalled while {before or 'in an unknown state'}: an order may exist or be in "
                      f"flight, so it cannot be cancelled; `fulfil retry` it to resolve the order first")
    if state is State.NEEDS_ATTENTION:
        if purchase.order_id:
            raise Refused(f"purchase {pid} has order {purchase.order_id} recorded: an order exists, so it cannot be "
                          "cancelled here; cancel the order with the partner, then `fulfil retry` it to follow the "
                          "order's status")
        if not no_order_confirmed:
            orphans = _open_orphans(session, pid)
            raise Refused(
                f"purchase {pid} needs attention ({purchase.failure_code}: {purchase.failure_message}): an order may "
                "exist. Check with the partner: if you find the order, record it with `fulfil resolve "
                f"{pid} --order-id ID`; if there is none, cancel with --no-order-confirmed"
                + (f". Orphan orders recorded for it: {', '.join(orphans)}" if orphans else "")
            )
        return
    why = {
        State.ORDERING: "an order request may be in flight right now",
        State.ORDER_UNKNOWN: "the outcome of its order request is being resolved (it ends awaiting_transfer or "
                             "needs_attention)",
        State.AWAITING_TRANSFER: f"order {purchase.order_id} exists; cancel it with the partner and the transfer "
                                 "check records it",
    }.get(state, f"it is {state}")
    raise Refused(f"purchase {pid} is {state}: {why}; it cannot be cancelled")


def _open_orphans(session: Session, purchase_id: uuid.UUID) -> list[str]:
    return list(session.scalars(select(OrphanOrder.order_id).where(OrphanOrder.purchase_id == purchase_id,
                                                                    OrphanOrder.resolved_at.is_(None))))


# ---- record an order found at the partner --------------------------------------------------


def resolve(
    ident: str, *, order_id: str, operator: str, partner: Partner, settings: PolicySettings, note: str | None = None
) -> Done:
    """Record an order a person found at the partner: fetched first, then AWAITING_TRANSFER.

    Refused unless the purchase waits for an order nobody could confirm and the order was
    made from one of its quotes.  The partner is asked outside any transaction; the state is
    checked again, under lock, before anything is written.
    """
    order_id = order_id.strip()
    if not ORDER_ID_PATTERN.match(order_id):
        raise ValueError(f"{order_id!r} is not a partner order id (letters, digits, . _ : -, at most 100)")
    with session_scope() as session:
        purchase = find_purchase(session, ident)
        if purchase is None:
            raise PurchaseNotFound(f"no purchase with id or request_id {ident!r}")
        _check_resolvable(session, purchase, order_id)
        quotes = {q.quote_id: q for q in session.scalars(select(PartnerQuote).where(PartnerQuote.purchase_id == purchase.id))}
        request_id = partner_request_id(purchase, f"operator-resolve:{order_id}")
    try:
        order = partner.get_order(order_id, request_id=request_id, deadline=time.monotonic() + settings.step_deadline_seconds)
    except NotFound as error:
        raise OrderNotFound(f"the partner has no order {order_id} ({error.code})") from None
    except PermanentError as error:
        raise OrderNotFound(f"the partner refused to show order {order_id}: {error}") from None
    except PartnerError as error:
        raise PartnerUnreachable(error) from None
    if order.quote_id not in quotes and order.quote_id != purchase.quote_id:
        known = ", ".join(sorted({*quotes, *([purchase.quote_id] if purchase.quote_id else [])})) or "none"
        raise Refused(f"order {order_id} was made from quote {order.quote_id}, which is not one of purchase "
                      f"{purchase.id}'s quotes ({known}): it is not this purchase's order")

    with session_scope() as session:
        current = session.get(Purchase, purchase.id, with_for_update=True, populate_existing=True)
        assert current is not None  # purchases are never deleted
        _check_resolvable(session, current, order_id)  # it may have moved while the partner was asked
        state = State(current.state)
        history = (f"order {order.order_id} (quote {order.quote_id}, {order.status}) found at the partner and "
                   f"recorded by operator {operator}" + (f": {' '.join(note.split())}" if note and note.strip() else ""))
        state_machine.transition(
            session, current, State.AWAITING_TRANSFER, reason=history,
            next_action_in=settings.transfer_poll_min_seconds,
            changes={**order_columns(current, order), **_quote_columns(current, order, quotes.get(order.quote_id)),
                     "stalled_from": None},
        )
        _orphans_resolved(session, order.order_id, current.id, operator)
        return Done(current.id, state, State.AWAITING_TRANSFER, history)


TM_ORDER_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")  # e.g. 35-49135/LA1 (TM's own shape)
TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]{1,4096}$")  # printable, no spaces: what an order token can be


def resolve_with_token(ident: str, *, order_id: str, order_token: SecretStr, operator: str, ticket_key: SecretStr,
                       note: str | None = None, via: str | None = "fulfil resolve") -> Done:
    """Ticketmaster: record an order a person found through support, with its order token (TM has no
    "get order" call by number; the token is what order management needs).  The token is sealed
    with the ticket key before it is stored; the purchase then awaits its tickets, which the
    tickets step fetches (order management checks the token: a wrong one holds it again).

    For a TM purchase whose order outcome is unknown (needs_attention, order_unknown, stalled on the
    order path), including one whose order number is known without its token (ORDER_TOKEN_UNKNOWN).
    """
    from fulfilment import ticket_crypto

    order_id = order_id.strip()
    if not TM_ORDER_NUMBER.match(order_id):
        raise ValueError(f"{order_id!r} is not a Ticketmaster order number (letters, digits, . _ : - /, at most 100)")
    if not TOKEN_PATTERN.match(order_token.get_secret_value().strip()):
        raise ValueError("the order token must be 1 to 4096 printable characters without spaces")
    sealed = ticket_crypto.encrypt(ticket_key, SecretStr(order_token.get_secret_value().strip()))
    with session_scope() as session:
        current = _locked(session, ident)
        pid, state = current.id, State(current.state)
        if current.partner != "ticketmaster":
            raise Refused(f"purchase {pid} is a {current.partner} purchase: record its order with --order-id alone")
        if current.order_id not in (None, order_id):
            raise Refused(f"purchase {pid} already has order {current.order_id} (it is {state}); {order_id} is not "
                          "recorded")
        if (current.partner_data or {}).get("order_token") and current.order_id == order_id:
            raise NothingToDo(f"purchase {pid} already has order {order_id} with its token (it is {state})")
        stalled_on_order_path = state is State.STALLED and current.stalled_from in (*ORDER_PATH, State.AWAITING_TICKETS)
        if state not in RESOLVABLE and not stalled_on_order_path:
            raise Refused(f"purchase {pid} is {state}: only a purchase whose order (or its token) is unknown "
                          "(needs_attention, order_unknown, or stalled while ordering) can have an order recorded")
        owner = session.scalar(select(Purchase.id).where(Purchase.order_id == order_id, Purchase.id != pid))
        if owner is not None:
            raise Refused(f"order {order_id} is already recorded for purchase {owner}")
        data = {key: value for key, value in (current.partner_data or {}).items() if key not in ("pending", "cart")}
        history = (f"Ticketmaster order {order_id} found through support and recorded with its token by operator "
                   f"{operator}" + (f" ({via})" if via else "") + (f": {' '.join(note.split())}" if note and note.strip() else ""))
        state_machine.transition(
            session, current, State.AWAITING_TICKETS, reason=history, next_action_in=0.0,
            changes={"order_id": order_id, "order_status": "recorded by operator",
                     "partner_data": {**data, "order_token": sealed}, "order_evidence": "exists",
                     "failure_code": None, "failure_message": None, "last_error": None, "stalled_from": None},
        )
        _orphans_resolved(session, order_id, pid, operator)
        return Done(pid, state, State.AWAITING_TICKETS, history)


def _orphans_resolved(session: Session, order_id: str, purchase_id: uuid.UUID, operator: str) -> None:
    """An orphan order recorded as a purchase's own is resolved with it."""
    session.execute(
        update(OrphanOrder)
        .where(OrphanOrder.order_id == order_id, OrphanOrder.resolved_at.is_(None))
        .values(resolved_at=func.now(), resolution=f"recorded as the order of purchase {purchase_id} by operator "
                f"{operator}")
    )


def _check_resolvable(session: Session, purchase: Purchase, order_id: str) -> None:
    pid, state = purchase.id, State(purchase.state)
    if purchase.order_id == order_id:
        raise NothingToDo(f"purchase {pid} already has order {order_id} (it is {state})")
    if purchase.order_id:
        raise Refused(f"purchase {pid} already has order {purchase.order_id} (it is {state}); {order_id} is not "
                      "recorded")
    stalled_on_order_path = state is State.STALLED and purchase.stalled_from in ORDER_PATH
    if state not in RESOLVABLE and not stalled_on_order_path:
        raise Refused(f"purchase {pid} is {state}"
                      + (f" (stalled while {purchase.stalled_from})" if state is State.STALLED else "")
                      + ": only a purchase whose order outcome is unknown (needs_attention, order_unknown, or stalled "
                        "while ordering) can have an order recorded")
    owner = session.scalar(select(Purchase.id).where(Purchase.order_id == order_id))
    if owner is not None:
        raise Refused(f"order {order_id} is already recorded for purchase {owner}")


def _quote_columns(purchase: Purchase, order: Order, quote: PartnerQuote | None) -> dict[str, Any]:
    """The order was made from an earlier quote of the purchase: that quote becomes its current one."""
    if quote is None or quote.quote_id == purchase.quote_id:
        return {}
    return {
        "quote_id": quote.quote_id,
        "quote_expires_at": quote.expires_at,
        "unit_price": order.unit_price if order.unit_price is not None else quote.unit_price,
        "subtotal": order.subtotal if order.subtotal is not None else quote.subtotal,
    }


# ---- rejected requests -------------------------------------------------------------------------


def rejected_requests(*, limit: int = 50, request_id: str | None = None) -> list[RejectedRequest]:
    """Newest first."""
    with session_scope() as session:
        query = select(RejectedRequest).order_by(RejectedRequest.id.desc()).limit(limit)
        if request_id is not None:
            query = query.where(RejectedRequest.request_id == request_id)
        return list(session.scalars(query))


def rejected_request(rejection_id: int) -> RejectedRequest | None:
    with session_scope() as session:
        return session.get(RejectedRequest, rejection_id)


def rejection_view(rejected: RejectedRequest, *, with_body: bool = False) -> dict[str, Any]:
    """One rejected request as plain JSON (the raw body only on request: it is the sender's input)."""
    view: dict[str, Any] = {
        "id": rejected.id,
        "rejected_at": _iso(rejected.created_at),
        "request_id": rejected.request_id,
        "reason_code": rejected.reason_code,
        "reason": rejected.reason,
        "message_id": rejected.message_id,
    }
    if with_body:
        view["raw_body"] = rejected.raw_body
    return view


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


__all__ = [
    "CANCELLED_BY_OPERATOR", "Done", "NothingToDo", "OperatorActionError", "OrderNotFound", "PartnerUnreachable",
    "PurchaseNotFound", "Refused", "Retried", "cancel", "find_purchase", "operator_name", "rejected_request",
    "rejected_requests", "rejection_view", "replay_dead_letters", "resolve", "resolve_with_token", "retry",
]

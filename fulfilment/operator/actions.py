"""Resume a purchase, give up on it: the actions every partner's purchases share, and what the
other operator modules build on (errors written for a person, finding a purchase, `Done`)."""

from __future__ import annotations

import getpass
import os
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.dependencies import DependencyUnavailable
from fulfilment.flowkit.fencing import failure
from fulfilment.partners.base import PartnerError
from fulfilment.requests import purchase_id_for
from fulfilment.settings import PolicySettings
from fulfilment.state_machine import TERMINAL, State
from fulfilment.steps.resume import Resumed
from models import OrphanOrder, Purchase

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

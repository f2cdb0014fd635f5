from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from fulfilment import state_machine
from fulfilment.db import autocommit, session_scope
from fulfilment.flowkit.errors import PartnerError, TransientError
from fulfilment.outages import DATABASE
from fulfilment.settings import Settings
from fulfilment.state_machine import Executor, StaleTransition, State
from fulfilment.step_names import StepName
from models import Purchase

log = logging.getLogger(__name__)
T = TypeVar("T")

DEADLINE_CODE = "DELIVERY_DEADLINE_TOO_CLOSE"
# How long a write that records a partner's answer (an order!) is retried on fresh connections.
ANSWER_WRITE_RETRY_SECONDS = 60.0
PARTNER_REQUEST_NAMESPACE = uuid.UUID("0b7e6a1e-3b55-4d2c-9d0b-1f7e9c4a8e21")


@dataclass(frozen=True, slots=True)
class Claim:
    """A purchase claimed by the step that hands it on (the order step run in line after the
    quote: the QUOTED transition kept the lease, so the order step needs no claim of its own)."""

    purchase: Purchase
    started: float  # step_started() of the hand-over, taken before the lease was renewed


@dataclass(frozen=True, slots=True)
class Next:
    """The step to nudge after the transaction committed (`claim`: to run in line, already claimed)."""

    step: StepName
    delay_seconds: float = 0.0
    claim: Claim | None = field(default=None, compare=False, repr=False)


def claim_for_step(db: Executor, purchase_id: uuid.UUID, states: list[State], claim: Claim | None,
                   settings: Settings) -> tuple[Purchase | None, float]:
    """The purchase this step works on, and when its lease began (`step_started()`, for
    `step_deadline`): the one handed over in line (already claimed by the step before, in the
    statement that recorded it), or claimed now (None: nothing to do)."""
    if claim is None:
        started = step_started()
        return state_machine.claim(db, purchase_id, states, lease_seconds=settings.claim_lease_seconds), started
    if claim.purchase.id != purchase_id or claim.purchase.state not in states:
        raise ValueError(f"claim handed over for {claim.purchase.id} ({claim.purchase.state}), "
                         f"not for purchase {purchase_id} in {', '.join(states)}")
    return claim.purchase, claim.started


class RetryLater(Exception):
    """A transient failure: the lease was released; the message should be retried."""

    def __init__(self, cause: TransientError | PartnerError | Exception, retry_after: float | None = None) -> None:
        super().__init__(str(cause))
        self.retry_after = retry_after


def partner_request_id(purchase: Purchase, operation: str) -> str:
    """X-Request-ID for a partner call: derived from the purchase, the step and the attempt,
    so the partner's logs and ours can be joined on it."""
    return str(uuid.uuid5(PARTNER_REQUEST_NAMESPACE, f"{purchase.id}:{operation}:{purchase.attempts}"))


def step_started() -> float:
    """Taken *before* the claim: the lease (the database's now() + lease) ends after
    `step_deadline(settings, started)` by at least the configured margin."""
    return time.monotonic()


def step_deadline(settings: Settings, started: float) -> float:
    """The instant (time.monotonic()) by which every partner call of this step has returned."""
    return started + settings.step_deadline_seconds


def retry_delay_seconds(error: RetryLater, settings: Settings) -> float:
    """How long to wait before a retried step: the partner's Retry-After if it gave one, else our
    minimum backoff; never more than our maximum backoff (invariant 7)."""
    wanted = error.retry_after if error.retry_after is not None else settings.actor_min_backoff_ms / 1000
    return max(min(wanted, settings.actor_max_backoff_ms / 1000), 0.001)


def retry_in(settings: Settings) -> float:
    """When the scheduler should step in if the dramatiq retry never arrives."""
    return settings.actor_max_backoff_ms / 1000 + settings.redrive_after_seconds


def failure(code: str, message: str) -> dict[str, str]:
    return {"failure_code": code, "failure_message": message[:2000]}


def record(purchase: Purchase, to_state: State, reason: str, message_id: str | None, **kwargs: Any) -> bool:
    """One transition in its own transaction (the usual end of a step), fenced by the claim.

    If the claim is no longer ours (the step outlived its lease and someone else took the
    purchase on, or an operator moved it), nothing moves: the answer is recorded in the
    history as a late answer, and False is returned.
    """
    try:
        with autocommit() as db:
            state_machine.transition(db, purchase, to_state, reason=reason, message_id=message_id, **kwargs)
        return True
    except StaleTransition:
        note_late(purchase, f"{purchase.state} -> {to_state}: {reason}", message_id)
        return False


def note_late(purchase: Purchase, answer: str, message_id: str | None) -> None:
    with session_scope() as session:
        state_machine.late_answer(session, purchase.id, step=_step_of(purchase), answer=answer, message_id=message_id)


def _step_of(purchase: Purchase) -> str:
    return state_machine.NEXT_STEP.get(State(purchase.state), str(purchase.state))


def release_and_retry(purchase: Purchase, error: Exception, settings: Settings) -> Exception:
    """Give the lease back and build the exception that makes dramatiq retry the message.

    If the lease is no longer ours, nothing is released (someone else holds the purchase
    now): the answer is recorded as late and the message is dropped (StaleTransition).
    """
    with autocommit() as db:
        released = state_machine.release(db, purchase, retry_in=retry_in(settings), error=str(error))
    if not released:
        note_late(purchase, f"transient failure, not retried by this worker: {error}", None)
        return StaleTransition(purchase.id, State(purchase.state))
    return RetryLater(error, getattr(error, "retry_after", None))


def park(purchase: Purchase, *, next_action_in: float, error: str | None, message_id: str | None,
         **changes: Any) -> bool:
    """Wait in Postgres (not in a broker retry): the scheduler re-drives the purchase when due.
    Fenced like `record()`."""
    if error is not None:
        changes["last_error"] = error[:2000]
    with autocommit() as db:
        done = state_machine.reschedule(db, purchase, next_action_in=next_action_in, **changes)
    if not done:
        note_late(purchase, f"would have waited {next_action_in:g} s: {error}", message_id)
    return done


def too_close_to_deadline(purchase: Purchase, settings: Settings) -> bool:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=settings.min_delivery_lead_seconds) >= purchase.delivery_deadline


def fail_if_deadline_too_close(db: Executor, purchase: Purchase, settings: Settings, message_id: str | None) -> bool:
    """Fail a claimed purchase whose delivery deadline came too close to quote or order; True if it did."""
    if not too_close_to_deadline(purchase, settings):
        return False
    state_machine.transition(
        db, purchase, State.FAILED, message_id=message_id, reason="delivery deadline too close to order",
        changes=failure(DEADLINE_CODE, deadline_message(purchase, settings)),
    )
    return True


def deadline_message(purchase: Purchase, settings: Settings) -> str:
    deadline = purchase.delivery_deadline.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return (f"delivery deadline {deadline} is less than MIN_DELIVERY_LEAD_SECONDS "
            f"({settings.min_delivery_lead_seconds:g} s) away: no order is placed")


def _connection_failed(error: BaseException) -> bool:
    """The database connection failed (reset, failover, server gone): the write may be tried again on a
    fresh connection (db.autocommit and SQLAlchemy's pool replace a broken one)."""
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        return bool(error.connection_invalidated) or isinstance(error.orig, psycopg.OperationalError)
    return isinstance(error, psycopg.OperationalError)


def keep_answer(write: Callable[[], T], *, what: str) -> T:
    """Run `write` (which records what a partner answered: an order, a polling URL) and, if the
    database connection fails under it, run it again on a fresh connection for up to
    ANSWER_WRITE_RETRY_SECONDS before giving up (then the message is retried, and the answer is in
    the log the caller wrote first).  `write` must be fenced and safe to repeat: a repeat that finds
    its own earlier write committed sees a stale claim and keeps the answer as a late one."""
    for attempt in Retrying(retry=retry_if_exception(_connection_failed), reraise=True,
                            stop=stop_after_delay(ANSWER_WRITE_RETRY_SECONDS),
                            wait=wait_exponential(multiplier=0.2, max=5.0),
                            before_sleep=lambda state: DATABASE.failed(  # one line down, a summary, one back
                                f"{what} not written yet (database connection failed: "
                                f"{type(state.outcome.exception()).__name__ if state.outcome else '?'}); trying again "
                                "on a fresh connection")):
        with attempt:
            return write()
    raise AssertionError("unreachable")  # pragma: no cover

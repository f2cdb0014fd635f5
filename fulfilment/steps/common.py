from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fulfilment import state_machine
from fulfilment.db import session_scope
from fulfilment.partners.base import PartnerError, TransientError
from fulfilment.settings import Settings
from fulfilment.state_machine import State
from models import Purchase

PARTNER_REQUEST_NAMESPACE = uuid.UUID("0b7e6a1e-3b55-4d2c-9d0b-1f7e9c4a8e21")


@dataclass(frozen=True, slots=True)
class Next:
    """The step to nudge after the transaction committed."""

    step: str
    delay_seconds: float = 0.0


class RetryLater(Exception):
    """A transient failure: the lease was released; the message should be retried."""

    def __init__(self, cause: TransientError | PartnerError | Exception, retry_after: float | None = None) -> None:
        super().__init__(str(cause))
        self.retry_after = retry_after


def partner_request_id(purchase: Purchase, operation: str) -> str:
    """X-Request-ID for a partner call: derived from the purchase, the step and the attempt,
    so the partner's logs and ours can be joined on it."""
    return str(uuid.uuid5(PARTNER_REQUEST_NAMESPACE, f"{purchase.id}:{operation}:{purchase.attempts}"))


def retry_in(settings: Settings) -> float:
    """When the scheduler should step in if the dramatiq retry never arrives."""
    return settings.actor_max_backoff_ms / 1000 + settings.redrive_after_seconds


def failure(code: str, message: str) -> dict[str, str]:
    return {"failure_code": code, "failure_message": message[:2000]}


def record(purchase: Purchase, to_state: State, reason: str, message_id: str | None, **kwargs: Any) -> Purchase:
    """One transition in its own transaction (the usual end of a step)."""
    with session_scope() as session:
        return state_machine.transition(session, purchase, to_state, reason=reason, message_id=message_id, **kwargs)


def release_and_retry(purchase: Purchase, error: Exception, settings: Settings) -> RetryLater:
    """Give the lease back and build the exception that makes dramatiq retry the message."""
    with session_scope() as session:
        state_machine.release(session, purchase, retry_in=retry_in(settings), error=str(error))
    return RetryLater(error, getattr(error, "retry_after", None))
